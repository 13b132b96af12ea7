"""A streamed answer its caller lets go without reading or closing it (an exception between
the SDK call and the loop over it) gives its key back: the next caller of the same request
neither hangs nor waits out the lock timeout. And a task never waits for another task's
answer longer than its lock wait allows."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from fakeapi import FakeLLMServer

from llm_cache import LLMCache

MESSAGES = [{"role": "user", "content": "one two three four five six"}]


def _sync_client(cache: LLMCache, server: FakeLLMServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key="sk-drop-test-0000000", max_retries=0,
                         http_client=httpx2.Client(transport=cache.transport()))


def _async_client(cache: LLMCache, server: FakeLLMServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="sk-drop-test-0000000", max_retries=0,
                              http_client=httpx2.AsyncClient(transport=cache.async_transport()))


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def _ask_again(client: openai.AsyncOpenAI) -> tuple[float, str]:
    """The same streamed request from another task: how long it took, and its text (10 s at most)."""
    async def again() -> str:
        stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        return _text([chunk async for chunk in stream])

    started = time.perf_counter()
    text = await asyncio.wait_for(asyncio.create_task(again()), 10)
    return time.perf_counter() - started, text


def test_an_async_stream_dropped_unread_lets_the_next_task_record_at_once(
        fake_api: FakeLLMServer, tmp_path: Path) -> None:
    cache = LLMCache("file://c", root=tmp_path, lock_timeout=30)

    async def main() -> tuple[float, str]:
        client = _async_client(cache, fake_api)

        async def dropped() -> None:
            stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
            assert stream is not None  # and then an exception, say: never read, never closed

        await dropped()
        gc.collect()

        return await _ask_again(client)

    waited, text = asyncio.run(main())
    assert waited < 5, f"the next task waited {waited:.1f} s for an answer nobody would finish"
    assert text == "echo: one two three four five six"
    assert fake_api.count() == 2
    assert cache.stats()["recorded"] == 1  # the dropped one kept nothing: it was never read
    (cassette,) = (tmp_path / "c").rglob("*.yaml")
    assert "one two three four five six" in cassette.read_text()
    cache.close()


def test_a_sync_stream_dropped_unread_lets_another_thread_record_at_once(
        fake_api: FakeLLMServer, tmp_path: Path) -> None:
    cache = LLMCache("file://c", root=tmp_path, lock_timeout=30)
    client = _sync_client(cache, fake_api)
    fake_api.event_delay = 0.01
    try:
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        assert stream is not None  # and then the caller goes away, the stream never read nor closed
        del stream
        gc.collect()
        started = time.perf_counter()
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(lambda: _text(list(client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True))))
            text = future.result(timeout=10)
        waited = time.perf_counter() - started
    finally:
        fake_api.event_delay = 0.0
    assert waited < 5, f"the other thread waited {waited:.1f} s for the key's lock"
    assert text == "echo: one two three four five six"
    assert cache.stats()["recorded"] == 1
    cache.close()


def test_a_stream_read_to_its_last_event_and_dropped_is_kept_without_closing_the_cache(
        fake_api: FakeLLMServer, tmp_path: Path) -> None:
    cache = LLMCache("file://c", root=tmp_path)
    http = httpx2.Client(transport=cache.transport())
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    response = http.send(http.build_request("POST", fake_api.url + "/v1/chat/completions", json=body), stream=True)
    stream = response.stream
    for chunk in stream:  # the bytes as they come, the way a client that stops at [DONE] reads them
        if b"[DONE]" in chunk:
            break
    del response, stream, chunk
    gc.collect()
    assert cache.stats()["recorded"] == 1
    assert len(list((tmp_path / "c").rglob("*.yaml"))) == 1
    again = http.post(fake_api.url + "/v1/chat/completions", json=body)
    assert again.headers["x-llm-cache-status"] == "hit" and b"[DONE]" in again.content
    assert fake_api.count() == 1
    cache.close()


def test_a_task_waits_for_another_tasks_answer_no_longer_than_the_lock_wait(
        fake_api: FakeLLMServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = LLMCache("file://c", root=tmp_path, lock_timeout=1)
    held = threading.Event()

    async def main() -> tuple[float, str]:
        client = _async_client(cache, fake_api)
        # a stream opened and kept, never read: its task holds the request's gate all along
        kept = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        held.set()

        waited, text = await _ask_again(client)
        await kept.close()
        return waited, text

    with caplog.at_level(logging.WARNING, logger="llm_cache"):
        waited, text = asyncio.run(main())
    assert held.is_set()
    assert 0.9 < waited < 5, waited
    assert text == "echo: one two three four five six"
    assert "waited 1 s for another task's answer to" in caplog.text
    assert "going upstream without it" in caplog.text
    assert fake_api.count() == 2
    cache.close()


def test_a_collection_that_starts_inside_the_caches_own_lock_does_not_deadlock(
        fake_api: FakeLLMServer, tmp_path: Path) -> None:
    # the garbage collector runs wherever an allocation starts it, inside the cache's locks
    # too: the finalizer of a dropped stream must not take them itself
    cache = LLMCache("file://c", root=tmp_path, lock_timeout=30)
    client = _sync_client(cache, fake_api)
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    assert stream is not None
    del stream
    done = threading.Event()

    def collect() -> None:
        with cache.session._lock:  # the lock a release takes
            gc.collect()
        done.set()

    worker = threading.Thread(target=collect, daemon=True)
    worker.start()
    worker.join(10)
    assert done.is_set(), "the collection deadlocked on the cache's own lock"
    with ThreadPoolExecutor(1) as pool:  # the key was given back at the next request's start
        started = time.perf_counter()
        text = pool.submit(lambda: _text(list(client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True)))).result(timeout=10)
    assert time.perf_counter() - started < 5 and text == "echo: one two three four five six"
    cache.close()
