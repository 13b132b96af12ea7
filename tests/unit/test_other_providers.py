"""Gemini, Bedrock and Ollama answers: where their usage and text are, and where their model is
named (the URL path). The samples are shared with ``test_stream_ends.py``."""

from __future__ import annotations

import json

import pytest

from llm_cache.cassette import encode_body
from llm_cache.eventstream import CONTENT_TYPE, Message, encode
from llm_cache.key import make_key, model_in_path
from llm_cache.llm import completion_text, read_response

HEADERS = {":content-type": "application/json", ":message-type": "event"}


def frame(event_type: str, payload: object) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return encode(Message({":event-type": event_type, **HEADERS}, body))


CONVERSE = [
    frame("messageStart", {"role": "assistant"}),
    frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi "}}),
    frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "there"}}),
    frame("contentBlockStop", {"contentBlockIndex": 0}),
    frame("messageStop", {"stopReason": "end_turn"}),
    frame("metadata", {"usage": {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7}}),
]


def ndjson(*lines: dict[str, object]) -> list[bytes]:
    return [json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines]


OLLAMA = ndjson(
    {"model": "llama3.2", "message": {"role": "assistant", "content": "Hi"}, "done": False},
    {"model": "llama3.2", "message": {"role": "assistant", "content": ' "done": true'}, "done": False},
    {"model": "llama3.2", "message": {"role": "assistant", "content": ""}, "done": True,
     "prompt_eval_count": 9, "eval_count": 4},
)


def gemini(text: str, done: bool) -> bytes:
    candidate: dict[str, object] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if done:
        candidate["finishReason"] = "STOP"
    chunk = {"candidates": [candidate], "modelVersion": "gemini-2.0-flash-001",
             "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2 if done else 1,
                               "thoughtsTokenCount": 4}}
    return f"data: {json.dumps(chunk)}\r\n\r\n".encode()


GEMINI = [gemini("Hi ", False), gemini("there", True)]


def test_usage_text_and_snapshot_of_each_answer() -> None:
    converse = encode_body(b"".join(CONVERSE), CONTENT_TYPE)
    assert read_response(converse).usage == {"input_tokens": 5, "output_tokens": 2}
    assert completion_text(converse) == "Hi there"
    plain = encode_body(json.dumps({
        "output": {"message": {"role": "assistant", "content": [{"text": "Hello"}]}},
        "usage": {"inputTokens": 4, "outputTokens": 1, "totalTokens": 5}}).encode(), "application/json")
    assert (read_response(plain).usage, completion_text(plain)) == ({"input_tokens": 4, "output_tokens": 1}, "Hello")

    lines = encode_body(b"".join(OLLAMA), "application/x-ndjson")
    info = read_response(lines)
    assert (info.model, info.usage) == ("llama3.2", {"input_tokens": 9, "output_tokens": 4})
    assert completion_text(lines) == 'Hi "done": true'

    stream = encode_body(b"".join(GEMINI), "text/event-stream")
    info = read_response(stream)
    # the last usageMetadata wins; thinking is billed as output
    assert (info.model, info.usage) == ("gemini-2.0-flash-001", {"input_tokens": 3, "output_tokens": 6})
    assert completion_text(stream) == "Hi there"


@pytest.mark.parametrize("path, model", [
    ("/v1beta/models/gemini-2.0-flash:generateContent", "gemini-2.0-flash"),
    ("/v1/models/gemini-2.5-pro:streamGenerateContent", "gemini-2.5-pro"),
    ("/v1beta/tunedModels/my-tune:generateContent", "my-tune"),
    ("/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:predict", "gemini-2.0-flash"),
    ("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse", "anthropic.claude-3-haiku-20240307-v1:0"),
    ("/model/meta.llama3-8b-instruct-v1%3A0/invoke-with-response-stream", "meta.llama3-8b-instruct-v1:0"),
    ("/proxy/model/amazon.nova-lite-v1%3A0/converse-stream", "amazon.nova-lite-v1:0"),
    ("/v1/models/gpt-4o", None),  # OpenAI's model retrieval: no method after a colon
    ("/v1/chat/completions", None),
])
def test_the_model_named_by_the_path(path: str, model: str | None) -> None:
    assert model_in_path(path) == model


def test_the_body_model_comes_first() -> None:
    url = "http://h/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke"
    assert make_key("POST", url, b'{"model": "in-body"}', {}).model == "in-body"
    assert make_key("POST", url, b'{"anthropic_version": "x"}', {}).model == "anthropic.claude-3-haiku-20240307-v1:0"
