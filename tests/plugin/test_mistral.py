"""Mistral through mistralai: chat.complete and chat.stream, sync and async, recorded then
replayed with the server unreachable. Mistral speaks OpenAI's chat format (SSE chunks ending
with ``data: [DONE]``) on /v1/chat/completions; the model is the body's, the Bearer key never
written."""

from __future__ import annotations

import mistralai.client  # noqa: F401 - imported once here, not in every inner run
import pytest
from conftest import Project
from roundtrip import docs, everything_under, record_then_replay

KEY = "mistral-test-key-0123456789abcdef"

MISTRAL = f'''
import asyncio, os
from mistralai.client import Mistral

def client():
    return Mistral(api_key="{KEY}", server_url=os.environ["FAKE_LLM_URL"])

def user(text):
    return [{{"role": "user", "content": text}}]

def test_mistral_sync(save, llm_cache):
    chat = client().chat
    save("sync_plain", chat.complete(model="mistral-small-latest", messages=user("hello mistral")).model_dump())
    stream = chat.stream(model="mistral-small-latest", messages=user("mistral stream"))
    save("sync_stream", [e.data.model_dump() for e in stream])  # the SDK stops reading at [DONE]

def test_mistral_async(save, llm_cache):
    async def go():
        chat = client().chat
        plain = await chat.complete_async(model="mistral-large-latest", messages=user("async mistral"))
        # closed by its context manager: the SDK stops reading at [DONE] and leaves it open otherwise
        async with await chat.stream_async(model="mistral-large-latest",
                                           messages=user("async mistral stream")) as stream:
            return plain, [e.data async for e in stream]
    plain, chunks = asyncio.run(go())
    save("async_plain", plain.model_dump())
    save("async_stream", [c.model_dump() for c in chunks])
'''



def test_mistral_complete_and_stream(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    got = record_then_replay(project, monkeypatch, passed=2, requests=4, upstream=4, test_p_mistral=MISTRAL)
    assert got["sync_plain"]["choices"][0]["message"]["content"] == "echo: hello mistral"
    for name, prompt in (("sync_stream", "mistral stream"), ("async_stream", "async mistral stream")):
        chunks = got[name]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert text == f"echo: {prompt}" and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c.headers["authorization"] == f"Bearer {KEY}" for c in project.server.calls)
    assert KEY.encode() not in everything_under(project)
    assert {p.parent.name for p in project.files()} == {"mistral-small-latest", "mistral-large-latest"}
    streams = [d for d in docs(project) if "events" in d["response"]]
    assert len(streams) == 2 and all(d["response"]["events"][-1] == "data: [DONE]" for d in streams)
