"""Model, fingerprint and usage read from provider responses, plain and streamed."""

from __future__ import annotations

import json

from llm_cache.cassette import encode_body
from llm_cache.llm import ResponseInfo, read_response


def sse(*events: dict | str, named: bool = False) -> bytes:
    parts = []
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        name = f"event: {event['type']}\n" if named and isinstance(event, dict) else ""
        parts.append(f"{name}data: {data}\n\n")
    return "".join(parts).encode()


def test_openai_chat_json():
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_abc",
        "choices": [{"message": {"role": "assistant", "content": "hi", "model": "not-this"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52},
    }
    info = read_response(encode_body(json.dumps(body).encode(), "application/json"))
    assert info == ResponseInfo("gpt-4o-2024-08-06", "fp_abc", {"input_tokens": 12, "output_tokens": 40})


def test_openai_stream_with_include_usage():
    chunk = {"object": "chat.completion.chunk", "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_s"}
    raw = sse(
        {**chunk, "choices": [{"delta": {"content": "Hel"}}], "usage": None},
        {**chunk, "choices": [{"delta": {"content": "lo"}}], "usage": None},
        {**chunk, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}},
        "[DONE]",
    )
    body = encode_body(raw, "text/event-stream")
    assert body.kind == "events"
    assert read_response(body) == ResponseInfo("gpt-4o-2024-08-06", "fp_s", {"input_tokens": 9, "output_tokens": 2})


def test_anthropic_stream():
    raw = sse(
        {"type": "message_start", "message": {"id": "msg_1", "model": "claude-3-5-sonnet-20241022",
                                              "usage": {"input_tokens": 25, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}},
        {"type": "message_stop"},
        named=True,
    )
    info = read_response(encode_body(raw, "text/event-stream"))
    assert info == ResponseInfo("claude-3-5-sonnet-20241022", None, {"input_tokens": 25, "output_tokens": 15})


def test_responses_stream():
    raw = sse(
        {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-4o-2024-08-06", "usage": None}},
        {"type": "response.output_text.delta", "delta": "Hi"},
        {"type": "response.completed", "response": {"id": "resp_1", "model": "gpt-4o-2024-08-06",
                                                   "usage": {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}}},
        named=True,
    )
    info = read_response(encode_body(raw, "text/event-stream"))
    assert info == ResponseInfo("gpt-4o-2024-08-06", None, {"input_tokens": 7, "output_tokens": 3})


def test_no_usage_in_text_body():
    assert read_response(encode_body(b"plain", "text/plain")) == ResponseInfo()


def test_streamed_anthropic_tool_use_is_a_tool_call_not_an_empty_answer():
    from llm_cache.cassette import encode_body
    from llm_cache.llm import refusal_reason, tool_calls

    events = [
        ("message_start", {"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 5}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"city": '}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    raw = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()
    body = encode_body(raw, "text/event-stream")
    assert tool_calls(body) == [("get_weather", '{"city": "Paris"}')]
    assert refusal_reason(body) is None
