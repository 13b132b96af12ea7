"""Tests of assistants, one per provider API, replaying recorded responses offline.

Record what is missing with:  pytest examples --llm-cache=record
(needs OPENAI_API_KEY, and ANTHROPIC_API_KEY for the Claude tests)
"""

from __future__ import annotations

import pytest

import assistants


def test_tool_call(client, llm_cache):
    name, arguments = assistants.weather_call(client, "What's the weather in Paris?")
    assert name == "get_weather"
    assert arguments["city"] == "Paris"


def test_tool_call_streamed(client, llm_cache):
    name, arguments, pieces = assistants.weather_call_streamed(
        client, "What's the weather in Paris right now?"
    )
    assert name == "get_weather" and arguments["city"] == "Paris"
    assert pieces > 1  # the arguments came in several chunks, every one replayed


def test_streamed_usage(client, llm_cache):
    text, usage = assistants.answer_with_usage(client, "How long does shipping take?")
    assert "shipping" in text
    assert usage["prompt"] > 0 and usage["completion"] > 0  # the final usage-only chunk


def test_responses_api(client, llm_cache):
    assert "opening hours" in assistants.respond(client, "What are your opening hours?")


def test_responses_api_streamed(client, llm_cache):
    deltas, final = assistants.respond_streamed(client, "Do you have a store in Lyon?")
    assert len(deltas) > 1
    assert "".join(deltas) == final and "Lyon" in final


def test_embeddings_as_floats_and_as_base64(client, llm_cache):
    texts = ["delivery", "warranty"]
    floats = assistants.embed_floats(client, texts)
    decoded = assistants.embed_base64(client, texts)
    assert len(floats) == len(decoded) == 2 and len(floats[0]) > 0
    for a, b in zip(decoded, floats):  # the same float32 values, however they were sent
        assert a == pytest.approx(b, abs=1e-6)


def test_claude(anthropic_client, llm_cache):
    assert "warranty" in assistants.ask_claude(anthropic_client, "How long is the warranty?")


def test_claude_streamed(anthropic_client, llm_cache):
    pieces, final = assistants.ask_claude_streamed(anthropic_client, "Can I change my address?")
    assert len(pieces) > 1 and "".join(pieces) == final
    assert "address" in final


def test_plain_requests(llm_cache):
    pytest.importorskip("requests")
    assert "invoice" in assistants.answer_with_requests("Where can I download my invoice?")
