"""Ollama through the ollama client: chat, plain and streamed (NDJSON lines, kept as lines and
replayed line by line), and embed, sync and async, recorded then replayed with the server
unreachable."""

from __future__ import annotations

import json

import ollama  # noqa: F401 - imported once here, not in every inner run
import pytest
from conftest import Project
from roundtrip import docs, record_then_replay

OLLAMA = '''
import asyncio, os
import ollama

def user(text):
    return [{"role": "user", "content": text}]

def test_ollama_sync(save, llm_cache):
    client = ollama.Client(host=os.environ["FAKE_LLM_URL"])
    save("sync_plain", client.chat(model="llama3.2", messages=user("hello llama")).model_dump())
    parts = [p.model_dump() for p in client.chat(model="llama3.2", messages=user("llama stream"), stream=True)]
    save("sync_stream", parts)
    save("sync_embed", client.embed(model="nomic-embed-text", input=["alpha", "beta"]).model_dump())

def test_ollama_async(save, llm_cache):
    client = ollama.AsyncClient(host=os.environ["FAKE_LLM_URL"])
    async def go():
        plain = await client.chat(model="qwen3", messages=user("async llama"))
        parts = [p async for p in await client.chat(model="qwen3", messages=user("async llama stream"),
                                                    stream=True)]
        embed = await client.embed(model="nomic-embed-text", input="gamma")
        return plain, parts, embed
    plain, parts, embed = asyncio.run(go())
    save("async_plain", plain.model_dump())
    save("async_stream", [p.model_dump() for p in parts])
    save("async_embed", embed.model_dump())

def test_ollama_stream_read_one_line_at_a_time(save, llm_cache):
    """A replayed stream arrives a line per chunk, as it did from the server."""
    import httpx
    body = {"model": "llama3.2", "messages": user("line by line")}
    with httpx.stream("POST", os.environ["FAKE_LLM_URL"] + "/api/chat", json=body) as r:
        save("raw_chunks", [chunk.decode() for chunk in r.iter_raw()])
'''



def test_ollama_chat_stream_and_embed(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    got = record_then_replay(project, monkeypatch, passed=3, requests=7, upstream=7, test_p_ollama=OLLAMA)
    assert got["sync_plain"]["message"]["content"] == "echo: hello llama"
    assert got["async_plain"]["model"] == "qwen3"
    for name, prompt in (("sync_stream", "llama stream"), ("async_stream", "async llama stream")):
        parts = got[name]
        assert len(parts) > 2 and [p["done"] for p in parts].count(True) == 1 and parts[-1]["done"]
        assert "".join(p["message"]["content"] for p in parts) == f"echo: {prompt}"
        assert parts[-1]["eval_count"] == len(prompt.split()) + 1
    assert len(got["sync_embed"]["embeddings"]) == 2 and len(got["async_embed"]["embeddings"]) == 1
    chunks = got["raw_chunks"]
    assert len(chunks) > 2 and all(c.endswith("\n") and c.count("\n") == 1 for c in chunks)

    written = docs(project)
    assert {p.parent.name for p in project.files()} == {"llama3.2", "qwen3", "nomic-embed-text"}
    streams = [d for d in written if "lines" in d["response"]]
    assert len(streams) == 3
    for doc in streams:
        lines = doc["response"]["lines"]  # one JSON object per line, as the server sent them
        assert doc["response"]["headers"]["content-type"] == "application/x-ndjson"
        assert [json.loads(line)["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
        assert len(doc["response"]["offsets_ms"]) == len(lines)
        assert doc["usage"]["output_tokens"] == json.loads(lines[-1])["eval_count"]  # from the last line
    plain = [d for d in written if d["request"]["json"].get("stream") is False]
    assert len(plain) == 2 and all(d["usage"]["input_tokens"] >= 2 for d in plain)
