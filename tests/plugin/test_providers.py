"""Each provider API end to end: record through the real SDK against the local server, then
replay with the server unreachable, and the parsed results are equal.

Chat completions with tools (plain and streamed, sync and async), streamed usage, the
Responses API, embeddings as floats and base64, Anthropic messages (create, stream=True and
the messages.stream helper, sync and async; tool use), plain `requests` to Anthropic, and
every Content-Encoding the server can answer with. Not marked all_xdist_modes: under the
three modes the module takes about 80 s instead of under 10 (it passed in all three).
"""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import Project
from roundtrip import record_then_replay
from roundtrip import docs as _docs

# 30 characters, shaped like an Anthropic key (so the secret scan would refuse it unredacted)
ANTHROPIC_KEY = "sk-ant-test-KnownKey0123456789"
HEADER_KEY = "sk-ant-header-only-ABCDEFGHIJKLMNOP"  # in no environment variable
assert len(ANTHROPIC_KEY) == 30


def _everything_under(project: Project) -> str:
    files = [p for p in project.cassettes.rglob("*") if p.is_file()]
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in files)


# -- OpenAI chat completions with tools --------------------------------------------------------

TOOLS = '''
import asyncio, json

WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]

def msgs(text):
    return [{"role": "user", "content": text}]

def assemble(chunks):
    """Tool calls of a stream, the argument pieces joined."""
    calls, pieces = {}, 0
    for chunk in chunks:
        for choice in chunk["choices"]:
            for tc in choice["delta"].get("tool_calls") or []:
                slot = calls.setdefault(tc["index"], {"id": None, "name": "", "arguments": ""})
                slot["id"] = tc.get("id") or slot["id"]
                fn = tc.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
                pieces += bool(fn.get("arguments"))
    return {"calls": [calls[i] for i in sorted(calls)], "pieces": pieces,
            "finish": [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]}

def test_tools_sync(client, save, llm_cache):
    create = client.chat.completions.create
    r = create(model="gpt-4o", messages=msgs("weather in Paris?"), tools=WEATHER)
    save("sync_plain", r.model_dump())
    s = create(model="gpt-4o", messages=msgs("weather, streamed?"), tools=WEATHER, stream=True)
    chunks = [c.model_dump() for c in s]
    save("sync_stream", chunks)
    save("sync_stream_calls", assemble(chunks))

def test_tools_async(aclient, save, llm_cache):
    async def go():
        create = aclient.chat.completions.create
        r = await create(model="gpt-4o", messages=msgs("async weather?"), tools=WEATHER)
        s = await create(model="gpt-4o", messages=msgs("async weather, streamed?"), tools=WEATHER,
                         stream=True)
        return r.model_dump(), [c.model_dump() async for c in s]
    plain, chunks = asyncio.run(go())
    save("async_plain", plain)
    save("async_stream", chunks)
    save("async_stream_calls", assemble(chunks))
'''


def test_openai_tool_calls_plain_and_streamed_sync_and_async(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = record_then_replay(
        project, monkeypatch, passed=2, requests=4, upstream=4, test_p_tools=TOOLS
    )
    for mode in ("sync", "async"):
        choice = got[f"{mode}_plain"]["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        [call] = choice["message"]["tool_calls"]
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
        streamed = got[f"{mode}_stream_calls"]
        assert streamed["pieces"] > 1 and streamed["finish"] == "tool_calls"
        [scall] = streamed["calls"]
        assert scall["name"] == "get_weather" and scall["id"].startswith("call_")
        assert json.loads(scall["arguments"]) == {"city": "Paris"}
    docs = _docs(project)
    assert sorted("events" in d["response"] for d in docs) == [False, False, True, True]
    assert all(d["request"]["json"]["tools"][0]["function"]["name"] == "get_weather" for d in docs)


# -- streamed usage --------------------------------------------------------------------------------

USAGE = '''
from conftest import chat

def test_usage(client, save, llm_cache):
    stream = chat(client, "count my tokens", stream=True, stream_options={"include_usage": True})
    save("chunks", [c.model_dump() for c in stream])
'''


def test_include_usage_stream_keeps_the_final_usage_chunk(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = record_then_replay(
        project, monkeypatch, passed=1, requests=1, upstream=1, test_p_usage=USAGE
    )
    chunks = got["chunks"]
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert usage == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                     "completion_tokens_details": None, "prompt_tokens_details": None}
    assert all(c["usage"] is None for c in chunks[:-1])
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks[:-1])
    assert text == "echo: count my tokens"
    [doc] = _docs(project)
    assert doc["usage"] == {"input_tokens": 3, "output_tokens": 4}
    assert doc["response"]["events"][-1] == "data: [DONE]"


# -- the Responses API -----------------------------------------------------------------------------

RESPONSES = '''
import asyncio

def delta_text(events):
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")

def test_responses_sync(client, save, llm_cache):
    r = client.responses.create(model="gpt-4o", input="hello responses")
    save("sync_plain", {"dump": r.model_dump(), "text": r.output_text})
    events = list(client.responses.create(model="gpt-4o", input="hello stream", stream=True))
    save("sync_stream", {"types": [e.type for e in events], "text": delta_text(events),
                         "final": events[-1].response.output_text})
    with client.responses.stream(model="gpt-4o", input="hello helper") as stream:
        events = list(stream)
        final = stream.get_final_response()
    save("sync_helper", {"types": [e.type for e in events], "text": delta_text(events),
                         "final": final.model_dump(), "final_text": final.output_text})

def test_responses_async(aclient, save, llm_cache):
    async def go():
        r = await aclient.responses.create(model="gpt-4o", input="async responses")
        s = await aclient.responses.create(model="gpt-4o", input="async stream", stream=True)
        events = [e async for e in s]
        async with aclient.responses.stream(model="gpt-4o", input="async helper") as stream:
            helper = [e async for e in stream]
            final = await stream.get_final_response()
        return r, events, helper, final
    r, events, helper, final = asyncio.run(go())
    save("async_plain", {"dump": r.model_dump(), "text": r.output_text})
    save("async_stream", {"types": [e.type for e in events], "text": delta_text(events),
                          "final": events[-1].response.output_text})
    save("async_helper", {"types": [e.type for e in helper], "text": delta_text(helper),
                          "final": final.model_dump(), "final_text": final.output_text})
'''


def test_responses_api_plain_streamed_and_stream_helper_sync_and_async(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = record_then_replay(
        project, monkeypatch, passed=2, requests=6, upstream=6, test_p_responses=RESPONSES
    )
    prompts = {"sync": ("hello responses", "hello stream", "hello helper"),
               "async": ("async responses", "async stream", "async helper")}
    for mode, (plain, streamed, helper) in prompts.items():
        assert got[f"{mode}_plain"]["text"] == f"echo: {plain}"
        assert got[f"{mode}_plain"]["dump"]["status"] == "completed"
        for name, prompt in ((f"{mode}_stream", streamed), (f"{mode}_helper", helper)):
            types = got[name]["types"]
            assert types[:2] == ["response.created", "response.in_progress"]
            assert types[-1] == "response.completed"
            assert types.count("response.output_text.delta") >= 2
            assert got[name]["text"] == f"echo: {prompt}"
        assert got[f"{mode}_stream"]["final"] == f"echo: {streamed}"
        assert got[f"{mode}_helper"]["final_text"] == f"echo: {helper}"
    docs = _docs(project)
    assert {d["request"]["path"] for d in docs} == {"/v1/responses"}
    for doc in docs:
        assert doc["usage"]["input_tokens"] == 2 and doc["usage"]["output_tokens"] == 3
        if "events" in doc["response"]:
            assert doc["response"]["events"][0].startswith("event: response.created\ndata: {")


# -- embeddings ------------------------------------------------------------------------------------

EMBEDDINGS = '''
import base64, struct

MODEL = "text-embedding-3-small"
TEXTS = ["alpha", "beta"]

def test_embeddings(client, save, llm_cache):
    floats = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    save("float", [d.embedding for d in floats.data])
    # asked for explicitly, base64 comes back as the string the API sent
    b64 = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="base64")
    save("base64_raw", [d.embedding for d in b64.data])
    save("base64", [list(struct.unpack(f"<{len(base64.b64decode(d.embedding)) // 4}f",
                                       base64.b64decode(d.embedding))) for d in b64.data])
    # left to the SDK, it asks for base64 and decodes it itself (the same request as above)
    default = client.embeddings.create(model=MODEL, input=TEXTS)
    save("default", [d.embedding for d in default.data])
    save("usage", default.usage.model_dump())
'''


def test_embeddings_float_and_base64_give_the_same_vectors(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the SDK's default request equals the explicit base64 one: one cassette, served in record
    got = record_then_replay(
        project, monkeypatch, passed=1, requests=3, upstream=2, test_p_embeddings=EMBEDDINGS
    )
    assert [len(v) for v in got["float"]] == [8, 8] and got["float"][0] != got["float"][1]
    assert got["base64"] == got["float"] == got["default"]
    assert all(isinstance(s, str) for s in got["base64_raw"])
    formats = sorted(d["request"]["json"]["encoding_format"] for d in _docs(project))
    assert formats == ["base64", "float"]


# -- Anthropic messages ----------------------------------------------------------------------------

ANTHROPIC = '''
import asyncio, os
import anthropic

MODEL = "claude-3-5-sonnet-latest"

def msgs(text):
    return [{"role": "user", "content": text}]

def streamed(events):
    return {"types": [e.type for e in events],
            "text": "".join(e.delta.text for e in events if e.type == "content_block_delta")}

def test_messages_sync(anthropic_client, save, llm_cache):
    messages = anthropic_client.messages
    m = messages.create(model=MODEL, max_tokens=64, messages=msgs("hello claude"))
    save("sync_plain", m.model_dump())
    events = list(messages.create(model=MODEL, max_tokens=64, messages=msgs("claude stream"),
                                  stream=True))
    save("sync_stream", streamed(events))
    with messages.stream(model=MODEL, max_tokens=64, messages=msgs("claude helper")) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    save("sync_helper", {"pieces": pieces, "final": final.model_dump()})

def test_messages_async(save, llm_cache):
    client = anthropic.AsyncAnthropic(base_url=os.environ["FAKE_LLM_URL"], max_retries=0)
    async def go():
        messages = client.messages
        m = await messages.create(model=MODEL, max_tokens=64, messages=msgs("async claude"))
        s = await messages.create(model=MODEL, max_tokens=64, messages=msgs("async claude stream"),
                                  stream=True)
        events = [e async for e in s]
        async with messages.stream(model=MODEL, max_tokens=64,
                                   messages=msgs("async claude helper")) as stream:
            pieces = [t async for t in stream.text_stream]
            final = await stream.get_final_message()
        return m, events, pieces, final
    m, events, pieces, final = asyncio.run(go())
    save("async_plain", m.model_dump())
    save("async_stream", streamed(events))
    save("async_helper", {"pieces": pieces, "final": final.model_dump()})
'''


def test_anthropic_messages_plain_streamed_and_helper_sync_and_async(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    got = record_then_replay(
        project, monkeypatch, passed=2, requests=6, upstream=6, test_p_anthropic=ANTHROPIC
    )
    prompts = {"sync": ("hello claude", "claude stream", "claude helper"),
               "async": ("async claude", "async claude stream", "async claude helper")}
    for mode, (plain, streamed, helper) in prompts.items():
        message = got[f"{mode}_plain"]
        assert message["content"][0]["text"] == f"echo: {plain}"
        assert message["stop_reason"] == "end_turn"
        stream = got[f"{mode}_stream"]
        assert stream["types"][0] == "message_start" and stream["types"][-1] == "message_stop"
        assert stream["types"].count("content_block_delta") >= 2
        assert stream["text"] == f"echo: {streamed}"
        assert "".join(got[f"{mode}_helper"]["pieces"]) == f"echo: {helper}"
        final = got[f"{mode}_helper"]["final"]
        assert final["content"][0]["text"] == f"echo: {helper}"
        assert final["usage"]["output_tokens"] == len(f"echo: {helper}".split())

    # the key went to the server, and nowhere under cassettes/
    sent = [c.headers for c in project.server.calls]
    assert all(ANTHROPIC_KEY in (h.get("x-api-key", "") + h.get("authorization", "")) for h in sent)
    assert ANTHROPIC_KEY not in _everything_under(project)
    docs = _docs(project)
    for doc in docs:
        headers = {name.lower() for name in doc["request"].get("headers", {})}
        assert not headers & {"x-api-key", "authorization"}
        assert "anthropic-version" in headers
    streams = [d for d in docs if "events" in d["response"]]
    assert len(streams) == 4
    for doc in streams:
        assert doc["response"]["events"][0].startswith("event: message_start\ndata: {")
        assert "event: ping\ndata: " in "\n".join(doc["response"]["events"])  # every event kept
        assert doc["usage"]["input_tokens"] >= 2 and doc["usage"]["output_tokens"] >= 3
    text = "\n".join(p.read_text() for p in project.files())
    assert "event: content_block_delta" in text and "event: message_stop" in text


ANTHROPIC_TOOL_CALLS = {
    "plain": """
def test_tool_use(anthropic_client, save, llm_cache):
    m = anthropic_client.messages.create(model="claude-3-5-sonnet-latest", max_tokens=64,
        tools=TOOLS, messages=[{"role": "user", "content": "weather in Paris?"}])
    save("message", m.model_dump())
""",
    "streamed": """
def test_tool_use(anthropic_client, save, llm_cache):
    with anthropic_client.messages.stream(model="claude-3-5-sonnet-latest", max_tokens=64,
            tools=TOOLS, messages=[{"role": "user", "content": "weather in Paris?"}]) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        save("deltas", deltas)
        save("message", stream.get_final_message().model_dump())
""",
}
WEATHER_TOOL = """
TOOLS = [{"name": "get_weather", "description": "The weather in a city.",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
"""


@pytest.mark.parametrize("kind", ["plain", "streamed"])
def test_anthropic_tool_use(project: Project, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    got = record_then_replay(
        project, monkeypatch, passed=1, requests=1, upstream=1,
        test_p_anthropic_tools=WEATHER_TOOL + ANTHROPIC_TOOL_CALLS[kind],
    )
    message = got["message"]
    assert message["stop_reason"] == "tool_use"
    [block] = message["content"]
    assert (block["type"], block["name"]) == ("tool_use", "get_weather")
    assert block["input"] == {"city": "Paris"}
    if kind == "streamed":
        assert got["deltas"] == ["input_json_delta"] * 3


# -- plain requests to the Anthropic endpoint ------------------------------------------------------

REQUESTS_ANTHROPIC = f'''
import json, os
import requests

URL = os.environ["FAKE_LLM_URL"] + "/v1/messages"
HEADERS = {{"x-api-key": "{HEADER_KEY}", "anthropic-version": "2023-06-01"}}

def body(text, **kw):
    return {{"model": "claude-3-5-sonnet-latest", "max_tokens": 64,
             "messages": [{{"role": "user", "content": text}}], **kw}}

def test_requests_messages(llm_cache, save):
    r = requests.post(URL, json=body("plain requests"), headers=HEADERS, timeout=10)
    save("plain", {{"status": r.status_code, "json": r.json()}})
    with requests.post(URL, json=body("requests stream", stream=True), headers=HEADERS,
                       stream=True, timeout=10) as r:
        lines = [line.decode() for line in r.iter_lines()]
    save("stream", lines)
'''


def test_requests_to_anthropic_messages_with_x_api_key(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = record_then_replay(
        project, monkeypatch, passed=1, requests=2, upstream=2, test_p_requests=REQUESTS_ANTHROPIC
    )
    assert got["plain"]["status"] == 200
    assert got["plain"]["json"]["content"][0]["text"] == "echo: plain requests"
    lines = [line for line in got["stream"] if line]  # iter_lines gives the blank separators too
    assert len(got["stream"]) > len(lines)
    assert lines[0] == "event: message_start" and lines[-1] == 'data: {"type": "message_stop"}'
    deltas = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    text = "".join(d["delta"]["text"] for d in deltas if d["type"] == "content_block_delta")
    assert text == "echo: requests stream"
    assert all(c.headers["x-api-key"] == HEADER_KEY for c in project.server.calls)
    assert HEADER_KEY not in _everything_under(project)
    for doc in _docs(project):
        assert doc["request"]["headers"] == {"content-type": "application/json",
                                             "anthropic-version": "2023-06-01"}


# -- compressed answers ----------------------------------------------------------------------------

COMPRESSED = '''
from conftest import chat

def test_compressed(client, save, llm_cache):
    save("reply", chat(client, "squeeze me").model_dump())
'''


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_compressed_answer_is_stored_decoded_and_replays(
    project: Project, monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    monkeypatch.setattr(project.server, "force_encoding", encoding)  # undone after the test
    got = record_then_replay(
        project, monkeypatch, passed=1, requests=1, upstream=1, test_p_compressed=COMPRESSED
    )
    assert got["reply"]["choices"][0]["message"]["content"] == "echo: squeeze me"
    [path] = project.files()
    text = path.read_text()
    assert "content-encoding" not in text.lower()
    doc = yaml.safe_load(text)
    assert isinstance(doc["response"]["json"], dict)
    assert doc["response"]["json"]["object"] == "chat.completion"
    assert doc["usage"] == {"input_tokens": 2, "output_tokens": 3}
