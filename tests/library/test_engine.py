"""The engine through every adapter: live streams, event-by-event replay, replay timing,
modes of intercept(), locks released on failure and bounded waits."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import requests
from fakeapi import FakeLLMServer

from llm_cache import LLMCache
from llm_cache.exchange import Request

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "one two three four five six"}], "stream": True}


@pytest.fixture
def srv(fake_api: FakeLLMServer) -> FakeLLMServer:
    return fake_api


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port bound and never listened on: connections are refused, and no other test can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


class Path_:
    """One way a request reaches the cache: its own transport, or the patched transports."""

    def __init__(self, name: str, cache: LLMCache) -> None:
        self.name, self.cache = name, cache

    def client(self, timeout: float | None = 30.0) -> httpx2.Client:
        if self.name == "transport":
            return httpx2.Client(transport=self.cache.transport(), timeout=timeout)
        return httpx2.Client(timeout=timeout)

    def block(self, mode: str | None = None) -> AbstractContextManager[Any]:
        return self.cache.intercept(mode=mode) if self.name == "intercept" else nullcontext()


PATHS = ["transport", "intercept"]


def _stream(client: httpx2.Client, url: str) -> tuple[list[bytes], list[float]]:
    """The raw chunks of a streamed chat completion and when each arrived (s since the call)."""
    started = time.perf_counter()
    chunks, times = [], []
    with client.stream("POST", url + "/v1/chat/completions", json=CHAT) as response:
        for chunk in response.iter_raw():
            chunks.append(chunk)
            times.append(time.perf_counter() - started)
    return chunks, times


@pytest.mark.parametrize("way", PATHS)
def test_while_recording_each_chunk_reaches_the_caller_as_it_arrives(
    srv: FakeLLMServer, tmp_path: Path, way: str
) -> None:
    srv.event_delay = 0.15
    path = Path_(way, LLMCache("file://c", root=tmp_path))
    with path.block():
        chunks, times = _stream(path.client(), srv.url)
    assert len(chunks) >= 5
    # the first event came long before the last: nothing was buffered on the way
    assert times[0] < times[-1] - 0.4, times  # events 0.15 s apart
    assert path.cache.stats()["recorded"] == 1


@pytest.mark.parametrize("way", PATHS)
def test_replay_hands_each_recorded_event_to_the_client_as_its_own_chunk(
    srv: FakeLLMServer, tmp_path: Path, way: str
) -> None:
    path = Path_(way, LLMCache("file://c", root=tmp_path))
    with path.block():
        recorded, _ = _stream(path.client(), srv.url)
    replayer = Path_(way, LLMCache("file://c", root=tmp_path, mode="replay"))
    with replayer.block():
        replayed, _ = _stream(replayer.client(), srv.url)
    events = b"".join(recorded).split(b"\n\n")[:-1]
    assert len(replayed) == len(events) > 3
    assert [c.rstrip(b"\n") for c in replayed] == events
    assert replayer.cache.stats()["hits"] == 1 and srv.count() == 1


@pytest.mark.parametrize("way", PATHS)
def test_replay_timing_recorded_keeps_the_time_to_first_token(srv: FakeLLMServer, tmp_path: Path, way: str) -> None:
    srv.event_delay = 0.1
    path = Path_(way, LLMCache("file://c", root=tmp_path))
    with path.block():
        _, live = _stream(path.client(), srv.url)
    (cassette,) = (tmp_path / "c").rglob("*.yaml")
    assert "offsets_ms: [" in cassette.read_text()
    paced = Path_(way, LLMCache("file://c", root=tmp_path, mode="replay", replay_timing="recorded"))
    with paced.block():
        _, times = _stream(paced.client(), srv.url)
    assert times[0] < 0.3 and times[-1] >= 0.8 * (live[-1] - live[0]), (times, live)
    at_once = Path_(way, LLMCache("file://c", root=tmp_path, mode="replay"))
    with at_once.block():
        _, fast = _stream(at_once.client(), srv.url)
    assert fast[-1] < 0.3 < 0.8 * (live[-1] - live[0]), fast


def test_intercept_honours_its_mode(srv: FakeLLMServer, tmp_path: Path) -> None:
    client = openai.OpenAI(base_url=srv.openai_base_url, api_key="sk-x", max_retries=0)
    replay_cache = LLMCache("file://c", root=tmp_path, mode="replay")
    with replay_cache.intercept(mode="record"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "rec"}])
    assert srv.count() == 1 and len(list((tmp_path / "c").rglob("*.yaml"))) == 1
    assert replay_cache.stats()["recorded"] == 1

    record_cache = LLMCache("file://d", root=tmp_path)
    with record_cache.intercept(mode="off"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "off"}])
    assert srv.count() == 2
    assert not (tmp_path / "d").exists() and record_cache.stats()["recorded"] == 0


def test_nested_intercept_blocks_answer_from_the_innermost(srv: FakeLLMServer, tmp_path: Path) -> None:
    outer, inner = LLMCache("file://outer", root=tmp_path), LLMCache("file://inner", root=tmp_path)
    client = openai.OpenAI(base_url=srv.openai_base_url, api_key="sk-x", max_retries=0)
    with outer.intercept():
        with inner.intercept():
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "in"}])
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "out"}])
    assert (inner.stats()["recorded"], outer.stats()["recorded"]) == (1, 1)


def test_an_off_block_inside_another_scope_lets_its_requests_through(srv: FakeLLMServer, tmp_path: Path) -> None:
    outer, inner = LLMCache("file://outer", root=tmp_path), LLMCache("file://inner", root=tmp_path)
    client = openai.OpenAI(base_url=srv.openai_base_url, api_key="sk-x", max_retries=0)
    with outer.intercept():
        with inner.intercept(mode="off"):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "live"}])
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "kept"}])
    # the off block's call went to the API untouched: neither cache recorded it
    assert (inner.stats()["recorded"], outer.stats()["recorded"]) == (0, 1)
    assert srv.count() == 2
    assert not (tmp_path / "inner").exists() or not list((tmp_path / "inner").rglob("*.yaml"))


def test_scopes_closed_out_of_order_leave_the_one_still_open_active(srv: FakeLLMServer, tmp_path: Path) -> None:
    first, second = LLMCache("file://first", root=tmp_path), LLMCache("file://second", root=tmp_path)
    client = openai.OpenAI(base_url=srv.openai_base_url, api_key="sk-x", max_retries=0)
    a, b = first.intercept(), second.intercept()
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)  # the outer block ends first (two threads' blocks, say)
    try:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "after a"}])
    finally:
        b.__exit__(None, None, None)
    assert (first.stats()["recorded"], second.stats()["recorded"]) == (0, 1)


def _key_is_free(cache: LLMCache, method: str, url: str, body: bytes) -> bool:
    """True when another thread can take the recording lock of this request at once."""
    rk = cache._scope.key(Request(method, url, body, {"content-type": "application/json"}))
    result: list[bool] = []

    def take() -> None:
        lock = cache.session.store.lock(rk.key)
        try:
            lock.acquire(timeout=0)
        except Exception:  # noqa: BLE001
            result.append(False)
        else:
            lock.release()
            result.append(True)

    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    return result == [True] and not cache.session._inflight


@pytest.mark.parametrize("client_kind", ["requests", "aiohttp", "httpx-patched", "httpx-transport"])
def test_a_failed_upstream_call_releases_its_lock_on_every_path(
    tmp_path: Path, client_kind: str, refusing_port: int
) -> None:
    cache = LLMCache("file://c", root=tmp_path)
    url = f"http://127.0.0.1:{refusing_port}/v1/chat/completions"
    body = b'{"model":"gpt-4o","messages":[]}'
    with cache.intercept():
        if client_kind == "requests":
            with pytest.raises(requests.ConnectionError):
                requests.post(url, data=body, headers={"content-type": "application/json"})
        elif client_kind == "aiohttp":
            aiohttp = pytest.importorskip("aiohttp")

            async def post() -> None:
                async with aiohttp.ClientSession() as session:
                    await session.post(url, data=body, headers={"content-type": "application/json"})

            with pytest.raises(aiohttp.ClientConnectionError):
                asyncio.run(post())
        else:
            transport = cache.transport() if client_kind == "httpx-transport" else None
            with httpx2.Client(transport=transport) as client, pytest.raises(httpx2.ConnectError):
                client.post(url, content=body, headers={"content-type": "application/json"})
        # still inside the block: the lock went when the call failed, not at the block's end
        assert _key_is_free(cache, "POST", url, body)


def test_a_cached_function_that_raises_releases_its_lock(tmp_path: Path) -> None:
    cache = LLMCache("file://c", root=tmp_path)

    @cache.cached
    def flaky(n: int) -> int:
        raise RuntimeError("upstream down")

    with pytest.raises(RuntimeError):
        flaky(1)
    qualname = f"{flaky.__module__}.{flaky.__qualname__}"
    body = json.dumps({"arguments": {"n": 1}, "function": qualname}, sort_keys=True).encode()
    assert _key_is_free(cache, "POST", f"function://local/{qualname}", body)


def test_a_waiter_waits_no_longer_than_its_request_timeout(srv: FakeLLMServer, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    cache = LLMCache("file://c", root=tmp_path)
    url = srv.url + "/v1/chat/completions"
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"held"}]}'
    rk = cache._scope.key(Request("POST", url, body, {}))
    holder = cache.session.store.lock(rk.key)
    taken = threading.Event()
    done = threading.Event()

    def hold() -> None:
        holder.acquire()
        taken.set()
        done.wait(30)
        holder.release()

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait(5)
    try:
        with caplog.at_level(logging.WARNING, logger="llm_cache"):
            started = time.perf_counter()
            with httpx2.Client(transport=cache.transport(), timeout=0.5) as client:
                response = client.post(url, content=body, headers={"content-type": "application/json"})
            waited = time.perf_counter() - started
    finally:
        done.set()
        thread.join()
    assert response.status_code == 200
    assert 0.4 <= waited < 30, waited  # bounded by the request's timeout, never the 120 s default
    assert "within 1 s" in caplog.text or "within 0.5 s" in caplog.text


def test_the_lock_timeout_setting_bounds_a_wait_without_a_request_timeout(tmp_path: Path) -> None:
    cache = LLMCache("file://c", root=tmp_path, lock_timeout="0.3s")
    request = Request("POST", "function://local/f", b'{"x":1}', {})
    first = cache._scope.begin(request)
    assert first.forwards
    waited: list[float] = []

    def second() -> None:
        started = time.perf_counter()
        flight = cache._scope.begin(request)
        waited.append(time.perf_counter() - started)
        flight.abandon()

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(10)
    first.abandon()
    assert waited and 0.25 <= waited[0] < 30, waited


def test_a_new_thread_never_inherits_a_finished_threads_lock(tmp_path: Path) -> None:
    """Python reuses thread ids: a thread that gets a finished recorder's id must still wait."""
    cache = LLMCache("file://c", root=tmp_path, lock_timeout=0.3)
    request = Request("POST", "function://local/g", b'{"y":2}', {})
    flights: list[Any] = []
    first = threading.Thread(target=lambda: flights.append(cache._scope.begin(request)))
    first.start()
    first.join()
    assert flights[0].forwards  # holds the lock, its thread is gone
    waited: list[float] = []
    idents: list[int] = []

    def later() -> None:
        idents.append(threading.get_ident())
        started = time.perf_counter()
        cache._scope.begin(request).abandon()
        waited.append(time.perf_counter() - started)

    for _ in range(3):  # new threads, often with the finished thread's id
        thread = threading.Thread(target=later)
        thread.start()
        thread.join(10)
    flights[0].abandon()
    assert all(w >= 0.25 for w in waited), (waited, idents)


def test_a_streamed_async_answer_through_async_transport_replays_its_text(srv: FakeLLMServer, tmp_path: Path) -> None:
    async def text(cache: LLMCache) -> str:
        client = openai.AsyncOpenAI(base_url=srv.openai_base_url, api_key="sk-x", max_retries=0,
                                    http_client=httpx2.AsyncClient(transport=cache.async_transport()))
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "tell me a story"}], stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    recorded = asyncio.run(text(LLMCache("file://c", root=tmp_path)))
    replayed = asyncio.run(text(LLMCache("file://c", root=tmp_path, mode="replay")))
    assert recorded and replayed == recorded
    assert srv.count() == 1


def test_a_thread_the_block_starts_is_answered_from_its_scope(srv: FakeLLMServer, tmp_path: Path) -> None:
    cache = LLMCache("file://c", root=tmp_path)
    client = openai.OpenAI(base_url=srv.openai_base_url, api_key="sk-x", max_retries=0)
    results: list[str] = []

    def call() -> None:
        reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "thr"}])
        results.append(reply.choices[0].message.content or "")

    with cache.intercept():
        for _ in range(2):
            thread = threading.Thread(target=call)
            thread.start()
            thread.join()
    assert len(results) == 2 and results[0] == results[1]
    assert srv.count() == 1 and cache.stats()["hits"] == 1


def test_without_an_active_scope_a_patched_transport_goes_straight_through(srv: FakeLLMServer,
                                                                          tmp_path: Path) -> None:
    cache = LLMCache("file://c", root=tmp_path)
    original = httpx2.HTTPTransport.handle_request
    with cache.intercept():
        assert httpx2.HTTPTransport.handle_request is not original
        from llm_cache.adapters import patches
        from llm_cache.engine import active

        patches.hold()  # another holder keeps the patches after the block
    try:
        assert active.current() is None and httpx2.HTTPTransport.handle_request is not original
        with httpx2.Client() as client:
            client.post(srv.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": []})
        assert srv.count() == 1
        assert (cache.stats()["hits"], cache.stats()["recorded"], cache.stats()["misses"]) == (0, 0, 0)
        assert not (tmp_path / "c").exists()
    finally:
        patches.let_go()
    assert httpx2.HTTPTransport.handle_request is original


def test_a_stream_read_to_its_last_event_but_never_closed_is_kept_when_the_block_ends(
    srv: FakeLLMServer, tmp_path: Path
) -> None:
    cache = LLMCache("file://c", root=tmp_path)
    http = httpx2.Client()
    open_responses = []
    with cache.intercept():
        for content, stop_at_done in (("kept", True), ("cut short", False)):
            body = {**CHAT, "messages": [{"role": "user", "content": content}]}
            response = http.send(http.build_request("POST", srv.url + "/v1/chat/completions", json=body), stream=True)
            reader = response.iter_raw()
            open_responses.append((response, reader))  # never closed, as an SDK that stops reading may leave it
            for chunk in reader:
                if not stop_at_done or b"[DONE]" in chunk:
                    break
    assert cache.stats()["recorded"] == 1
    (cassette,) = (tmp_path / "c").rglob("*.yaml")
    assert "kept" in cassette.read_text()
