"""Tests for the fake OpenAI/Anthropic server, driven by the real SDKs."""

from __future__ import annotations

import asyncio
import base64
import gzip
import http.client
import json
import struct
import time
from typing import Iterator

import anthropic
import openai
import pytest
import requests

from fakeapi import FakeLLMServer


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture
def client(server: FakeLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-test", base_url=server.openai_base_url, max_retries=0) as c:
        yield c


@pytest.fixture
def claude(server: FakeLLMServer) -> Iterator[anthropic.Anthropic]:
    url = server.anthropic_base_url
    with anthropic.Anthropic(api_key="sk-test", base_url=url, max_retries=0) as c:
        yield c


USER = [{"role": "user", "content": "hello there"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_chat_plain(server: FakeLLMServer, client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o", messages=USER)
    assert r.choices[0].message.content == "echo: hello there"
    assert r.choices[0].finish_reason == "stop"
    assert r.model == "gpt-4o-2024-08-06"
    assert r.system_fingerprint == "fp_aaa111"
    assert r.id.startswith("chatcmpl-")
    assert r.usage is not None and r.usage.total_tokens == 2 + 3
    call = server.calls[-1]
    assert call.headers["authorization"] == "Bearer sk-test"
    assert call.json["messages"] == USER


def test_chat_deterministic_and_knobs(server: FakeLLMServer, client: openai.OpenAI) -> None:
    a = client.chat.completions.create(model="gpt-4o", messages=USER)
    b = client.chat.completions.create(model="gpt-4o", messages=USER)
    assert a.model_dump() == b.model_dump()
    server.snapshot, server.fingerprint, server.generation = "2025-01-01", "fp_bbb222", 2
    c = client.chat.completions.create(model="gpt-4o", messages=USER)
    assert c.model == "gpt-4o-2025-01-01" and c.system_fingerprint == "fp_bbb222"
    assert c.choices[0].message.content == "echo: hello there (gen 2)"
    r = client.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=1)
    assert r.choices[0].finish_reason == "length"


def test_chat_stream_sync(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content or "" for c in chunks]
    assert len([d for d in deltas if d]) >= 3
    assert "".join(deltas) == "echo: hello there"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is None


def test_chat_stream_include_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_chat_stream_async(server: FakeLLMServer) -> None:
    async def run() -> str:
        client = openai.AsyncOpenAI(
            api_key="sk-test", base_url=server.openai_base_url, max_retries=0
        )
        async with client:
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=USER, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream])

    assert asyncio.run(run()) == "echo: hello there"


def test_chat_tools(client: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": "what's the weather in Paris?"}]
    r = client.chat.completions.create(model="gpt-4o", messages=msgs, tools=[WEATHER_TOOL])
    assert r.choices[0].finish_reason == "tool_calls"
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    stream = client.chat.completions.create(
        model="gpt-4o", messages=msgs, tools=[WEATHER_TOOL], stream=True
    )
    chunks = list(stream)
    parts = [
        tc.function.arguments
        for c in chunks
        for tc in (c.choices[0].delta.tool_calls or [])
        if tc.function and tc.function.arguments
    ]
    assert len(parts) > 1 and json.loads("".join(parts)) == {"city": "Paris"}
    assert chunks[0].choices[0].delta.tool_calls[0].function.name == "get_weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_chat_errors_and_echo_headers(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="error-500", messages=USER)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="error-429", messages=USER)
    r = client.chat.completions.create(model="echo-headers", messages=USER)
    assert "Bearer sk-test" in (r.choices[0].message.content or "")


def test_anthropic_error(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as info:
        claude.messages.create(model="error-429", max_tokens=10, messages=USER)
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_embeddings_float_and_base64(server: FakeLLMServer, client: openai.OpenAI) -> None:
    floats = client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], encoding_format="float"
    )
    assert [len(d.embedding) for d in floats.data] == [8, 8]
    assert floats.data[0].embedding != floats.data[1].embedding
    # the SDK asks for base64 by default and decodes it: must agree with the float answer
    default = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert server.calls[-1].json["encoding_format"] == "base64"
    assert default.data[0].embedding == floats.data[0].embedding
    raw = client.embeddings.create(
        model="text-embedding-3-small", input="a", encoding_format="base64"
    )
    packed = base64.b64decode(raw.data[0].embedding)  # type: ignore[arg-type]
    assert list(struct.unpack("<8f", packed)) == floats.data[0].embedding
    assert raw.usage.prompt_tokens == 1


def test_responses_plain(client: openai.OpenAI) -> None:
    r = client.responses.create(model="gpt-4o", input="hello there")
    assert r.output_text == "echo: hello there"
    assert r.model == "gpt-4o-2024-08-06" and r.status == "completed"
    assert r.usage is not None and r.usage.input_tokens == 2
    r2 = client.responses.create(
        model="gpt-4o", input=[{"role": "user", "content": "hi"}], instructions="be short"
    )
    assert r2.output_text == "echo: hi"


def test_responses_stream(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="gpt-4o", input="hello there", stream=True))
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 3 and "".join(deltas) == "echo: hello there"

    with client.responses.stream(model="gpt-4o", input="hello there") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == "echo: hello there"


def test_anthropic_plain(server: FakeLLMServer, claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(
        model="claude-3-5-sonnet-latest", max_tokens=100, messages=USER
    )
    assert m.content[0].text == "echo: hello there"
    assert m.model == "claude-3-5-sonnet-latest"
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens == 2 and m.usage.output_tokens == 3
    sent = server.calls[-1].headers  # anthropic 2.x sends the key as a Bearer token
    assert sent.get("x-api-key") == "sk-test" or sent.get("authorization") == "Bearer sk-test"
    m1 = claude.messages.create(model="claude-3-5-sonnet-latest", max_tokens=1, messages=USER)
    assert m1.stop_reason == "max_tokens"


def test_anthropic_stream(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="claude-3-5-sonnet-latest", max_tokens=100, messages=USER
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: hello there"
    assert final.content[0].text == "echo: hello there"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 3


def test_anthropic_tool_use(claude: anthropic.Anthropic) -> None:
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}]
    msgs = [{"role": "user", "content": "what's the weather in Paris?"}]
    m = claude.messages.create(model="claude-x", max_tokens=100, messages=msgs, tools=tools)
    assert m.stop_reason == "tool_use"
    [block] = m.content
    assert (block.type, block.name, block.input) == ("tool_use", "get_weather", {"city": "Paris"})
    with claude.messages.stream(model="claude-x", max_tokens=100, messages=msgs, tools=tools) as s:
        kinds = [e.delta.type for e in s if e.type == "content_block_delta"]
        final = s.get_final_message()
    assert kinds == ["input_json_delta"] * 3
    assert final.content[0].input == {"city": "Paris"} and final.stop_reason == "tool_use"


def test_requests_post_and_gzip(server: FakeLLMServer) -> None:
    r = requests.post(
        server.openai_base_url + "/chat/completions",
        json={"model": "gpt-4o", "messages": USER},
        headers={"Authorization": "Bearer sk-test"},
        timeout=10,
    )
    assert r.status_code == 200
    assert r.headers["Content-Encoding"] == "gzip"
    assert r.json()["choices"][0]["message"]["content"] == "echo: hello there"
    assert "x-request-id" in r.headers and "openai-processing-ms" in r.headers
    models = requests.get(server.openai_base_url + "/models", timeout=10).json()
    assert any(m["id"] == "gpt-4o" for m in models["data"])
    missing = requests.post(server.url + "/v1/nope", json={}, timeout=10)
    assert missing.status_code == 404 and "error" in missing.json()
    # a chunked request body (requests streams generators that way) is read too
    parts = [b'{"model": "gpt-4o", ', b'"messages": [{"role": "user", "content": "hi"}]}']
    url = server.openai_base_url + "/chat/completions"
    chunked = requests.post(url, data=iter(parts), timeout=10)
    assert chunked.json()["choices"][0]["message"]["content"] == "echo: hi"
    assert server.calls[-1].headers["transfer-encoding"] == "chunked"
    server.force_encoding = "deflate"  # whatever the client accepts
    forced = requests.post(url, json={"model": "gpt-4o", "messages": USER},
                           headers={"Accept-Encoding": "identity"}, timeout=10)
    assert forced.headers["Content-Encoding"] == "deflate"
    assert forced.json()["object"] == "chat.completion"


def test_raw_http_chunked_stream_and_counter(server: FakeLLMServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=10)
    body = json.dumps({"model": "gpt-4o", "messages": USER, "stream": True})
    headers = {"Content-Type": "application/json", "Accept-Encoding": "gzip"}
    conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
    resp = conn.getresponse()
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert resp.getheader("Content-Length") is None
    assert resp.getheader("Content-Type", "").startswith("text/event-stream")
    text = resp.read().decode()
    assert text.endswith("data: [DONE]\n\n")
    # same connection again (keep-alive), non-streamed: gzip with Content-Length
    plain = json.dumps({"model": "gpt-4o", "messages": USER})
    conn.request("POST", "/v1/chat/completions", body=plain, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    assert resp.getheader("Content-Length") == str(len(raw))
    assert json.loads(gzip.decompress(raw))["object"] == "chat.completion"
    conn.close()
    assert server.count("/v1/chat/completions") == 2
    assert server.count() == 2 and server.count("/v1/embeddings") == 0


def test_stop_is_quick_with_open_connections() -> None:
    srv = FakeLLMServer(gzip_json=False).start()
    with openai.OpenAI(api_key="sk-test", base_url=srv.openai_base_url, max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o", messages=USER)  # kept-alive socket
        started = time.perf_counter()
        srv.stop()
        assert time.perf_counter() - started < 2
