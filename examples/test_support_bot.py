"""Tests of support_bot that replay recorded API responses: offline, free, deterministic.

Record what is missing with:  pytest examples --llm-cache=record   (needs OPENAI_API_KEY)
"""

from __future__ import annotations

import asyncio

import pytest

import support_bot


def test_answer(client, llm_cache):
    text = support_bot.answer(client, "How do I reset my password?")
    assert "reset my password" in text
    stats = llm_cache.stats  # a hit in replay, a recording the first time, a re-recording when refreshed
    assert stats.hits + stats.recorded + stats.refreshed == 1


def test_streamed_answer_keeps_every_chunk(client, llm_cache):
    pieces = support_bot.answer_streamed(client, "Where is my order?")
    assert len(pieces) > 2
    assert "".join(pieces).endswith("Where is my order?")


def test_async_answer(aclient, llm_cache):
    assert "refund" in asyncio.run(support_bot.answer_async(aclient, "Can I get a refund?"))


def test_identical_call_in_another_test_shares_the_cassette(client, llm_cache):
    support_bot.answer(client, "How do I reset my password?")
    assert len(llm_cache.cassettes) == 1


def test_embeddings(client, llm_cache):
    vectors = support_bot.embed(client, ["shipping", "returns"])
    assert len(vectors) == 2 and len(vectors[0]) > 0


@pytest.mark.llm_cache(model_version="2024-08-06")
def test_pinned_model_version(client):
    # cassettes for this test live under examples/cassettes/gpt-4o@2024-08-06/
    assert support_bot.answer(client, "Do you ship abroad?")
