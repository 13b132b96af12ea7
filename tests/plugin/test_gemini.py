"""Gemini through google-genai: generate_content, its SSE stream and embed_content, sync and
async, recorded then replayed with the server unreachable; the model comes from the URL path
and the API key, sent as x-goog-api-key or ?key=, is never written."""

from __future__ import annotations

import json

import google.genai  # noqa: F401 - imported once here, not in every inner run
import pytest
from conftest import Project
from roundtrip import docs, everything_under, record_then_replay

# shaped like a Google API key, so the secret scan would also refuse it if it slipped through
KEY = "AIzaSyD-test0123456789abcdefghijklmnopq"
assert len(KEY) == 39

GEMINI = f'''
import asyncio, os
import httpx
from google import genai
from google.genai import types

def dump(response):  # the answer, without the HTTP headers the SDK keeps beside it
    return response.model_dump(mode="json", exclude={{"sdk_http_response"}})

def client():
    return genai.Client(api_key="{KEY}", http_options=types.HttpOptions(
        base_url=os.environ["FAKE_LLM_URL"], api_version="v1beta"))

def test_gemini_sync(save, llm_cache):
    gemini = client()  # held: a client that is collected closes its connections
    models = gemini.models
    r = models.generate_content(model="gemini-2.0-flash", contents="hello gemini")
    save("sync_plain", {{"text": r.text, "dump": dump(r)}})
    chunks = list(models.generate_content_stream(model="gemini-2.0-flash", contents="gemini stream"))
    save("sync_stream", [dump(c) for c in chunks])
    e = models.embed_content(model="text-embedding-004", contents=["alpha", "beta"])
    save("sync_embed", [x.values for x in e.embeddings])

def test_gemini_async(save, llm_cache):
    gemini = client()
    async def go():
        models = gemini.aio.models
        r = await models.generate_content(model="gemini-2.5-pro", contents="async gemini")
        chunks = [c async for c in await models.generate_content_stream(
            model="gemini-2.5-pro", contents="async gemini stream")]
        e = await models.embed_content(model="text-embedding-004", contents=["gamma"])
        return r, chunks, e
    r, chunks, e = asyncio.run(go())
    save("async_plain", {{"text": r.text, "dump": dump(r)}})
    save("async_stream", [dump(c) for c in chunks])
    save("async_embed", [x.values for x in e.embeddings])

def test_gemini_rest_with_key_in_query(save, llm_cache):
    url = os.environ["FAKE_LLM_URL"] + "/v1beta/models/gemini-2.0-flash:generateContent"
    r = httpx.post(url, params={{"key": "{KEY}"}},
                   json={{"contents": [{{"parts": [{{"text": "hello rest"}}], "role": "user"}}]}})
    save("rest", r.json())
'''



def test_gemini_generate_stream_and_embed(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    got = record_then_replay(project, monkeypatch, passed=3, requests=7, upstream=7, test_p_gemini=GEMINI)
    assert got["sync_plain"]["text"] == "echo: hello gemini"
    assert got["async_plain"]["dump"]["model_version"] == "gemini-2.5-pro-001"
    for name, prompt in (("sync_stream", "gemini stream"), ("async_stream", "async gemini stream")):
        chunks = got[name]
        assert len(chunks) > 1
        assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == f"echo: {prompt}"
        assert chunks[-1]["candidates"][0]["finish_reason"] == "STOP"
    assert [len(v) for v in got["sync_embed"]] == [8, 8] and len(got["async_embed"]) == 1
    assert got["rest"]["candidates"][0]["content"]["parts"][0]["text"] == "echo: hello rest"

    # the key went to the server, in a header and in the query, and nowhere under cassettes/
    sent = project.server.calls
    assert all(c.headers.get("x-goog-api-key") == KEY or f"key={KEY}" in c.query for c in sent)
    assert any(f"key={KEY}" in c.query for c in sent)
    everything = everything_under(project).decode("utf-8", "replace")
    assert KEY not in everything

    # the model is read from the path: it names the directory and enters the key
    models = {p.parent.name for p in project.files()}
    assert models == {"gemini-2.0-flash", "gemini-2.5-pro", "text-embedding-004"}
    written = docs(project)
    stream = [d for d in written if "alt" in dict(d["request"].get("query", []))]
    assert len(stream) == 2 and all(d["request"]["path"].endswith(":streamGenerateContent") for d in stream)
    for doc in stream:
        events = doc["response"]["events"]
        assert doc["response"]["newline"] == "\r\n"  # Gemini's separators, given back as sent
        assert json.loads(events[-1].removeprefix("data: "))["candidates"][0]["finishReason"] == "STOP"
        # timings come with streams read through httpx; google-genai's async client uses
        # aiohttp when it is installed, whose answers vcrpy hands over whole
        assert len(doc["response"].get("offsets_ms", events)) == len(events)
    assert any("offsets_ms" in doc["response"] for doc in stream)
    for doc in written:
        if doc["model"].startswith("gemini"):  # usage from usageMetadata, the snapshot from modelVersion
            assert doc["usage"]["input_tokens"] >= 2 and doc["usage"]["output_tokens"] >= 3
            assert doc["response_model"] == doc["model"] + "-001"
        assert "x-goog-api-key" not in doc["request"]["headers"]
        assert "key" not in dict(doc["request"].get("query", []))


def test_a_pinned_version_applies_to_the_model_in_the_path() -> None:
    from llm_cache.key import KeyRules, make_key

    body = b'{"contents": [{"parts": [{"text": "hi"}], "role": "user"}]}'
    url = "http://h/v1beta/models/gemini-2.0-flash:generateContent"
    plain = make_key("POST", url, body, {})
    pinned = make_key("POST", url, body, {}, KeyRules(model_versions={"gemini-2.0-flash": "001"}))
    assert (plain.model, plain.model_version, pinned.model_version) == (
        "gemini-2.0-flash", "gemini-2.0-flash", "gemini-2.0-flash@001")
    assert plain.key != pinned.key
