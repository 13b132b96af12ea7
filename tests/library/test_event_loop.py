"""What the cache does on an event loop: no second read of the store by tasks that waited
for the same request, and nothing left to import by the first answer recorded or read."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx2
import openai

from llm_cache import LLMCache
from llm_cache.stores import FileStore

ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class CountingStore(FileStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.events: list[str] = []

    def get(self, key: str, model_version: str) -> Any:
        self.events.append("get")
        return super().get(key, model_version)

    def put(self, entry: Any, text: str | None = None) -> str:
        self.events.append("put")
        return super().put(entry, text)


def test_tasks_that_waited_for_the_same_request_take_it_from_memory(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "cassettes")
    upstream: list[int] = []

    async def answer(request: httpx2.Request) -> httpx2.Response:
        upstream.append(1)
        await asyncio.sleep(0.05)
        return httpx2.Response(200, json=ANSWER)

    async def main() -> list[str]:
        cache = LLMCache(store)
        http = httpx2.AsyncClient(transport=cache.async_transport(httpx2.MockTransport(answer)))
        client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1", http_client=http)
        ask = [{"role": "user", "content": "the same question"}]
        calls = [client.chat.completions.create(model="gpt-4o", messages=ask) for _ in range(8)]  # type: ignore[arg-type]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        statuses = [a.choices[0].message.content for a in answers if not isinstance(a, BaseException)]
        assert statuses == ["hi"] * 8, answers
        await http.aclose()
        cache.close()
        return store.events

    events = asyncio.run(main())
    assert upstream == [1]  # one call upstream for the eight
    assert events.count("put") == 1
    after = events[events.index("put") + 1:]
    assert "get" not in after, events  # the seven that waited read no cassette back


class LockCountingStore(CountingStore):
    def lock(self, key: str) -> Any:
        self.events.append("lock")
        return super().lock(key)


def test_without_a_memory_tier_the_tasks_that_waited_read_the_store_not_the_lock(tmp_path: Path) -> None:
    """memory_entries=0 keeps nothing in memory: a task that waited for the same request
    reads the cassette the first one wrote, and never takes the key's lock (which another
    process could hold for long, with the loop stopped)."""
    store = LockCountingStore(tmp_path / "cassettes")

    async def answer(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(0.05)
        return httpx2.Response(200, json=ANSWER)

    async def main() -> None:
        cache = LLMCache(store, memory_entries=0)
        http = httpx2.AsyncClient(transport=cache.async_transport(httpx2.MockTransport(answer)))
        client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1", http_client=http)
        ask = [{"role": "user", "content": "asked by four at once"}]
        replies = await asyncio.gather(*[client.chat.completions.create(model="gpt-4o", messages=ask)  # type: ignore[arg-type]
                                         for _ in range(4)])
        assert [r.choices[0].message.content for r in replies] == ["hi"] * 4
        assert cache.stats()["recorded"] == 1
        await http.aclose()
        cache.close()

    asyncio.run(main())
    assert store.events.count("put") == 1
    assert store.events.count("lock") == 1, store.events  # the recorder's only


def _loaded(store: str, tmp_path: Path) -> dict[str, bool]:
    code = (
        "import json, sys, httpx2\n"
        "from llm_cache import LLMCache\n"
        f"cache = LLMCache({store!r}, root={str(tmp_path)!r})\n"
        "before = {m: m in sys.modules for m in ('yaml', 'llm_cache.engine.record', 'llm_cache.yaml_emit')}\n"
        "cache.async_transport(httpx2.MockTransport(lambda r: httpx2.Response(200)))\n"
        "after = {m: m in sys.modules for m in ('yaml', 'llm_cache.engine.record', 'llm_cache.yaml_emit')}\n"
        "print(json.dumps({'before': before, 'after': after}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_the_async_transport_imports_what_the_first_answer_needs(tmp_path: Path) -> None:
    on_disk = _loaded("file://cassettes", tmp_path)
    assert on_disk["before"] == {"yaml": False, "llm_cache.engine.record": False, "llm_cache.yaml_emit": False}
    assert on_disk["after"] == {"yaml": True, "llm_cache.engine.record": True, "llm_cache.yaml_emit": True}
    in_memory = _loaded("memory://", tmp_path)  # nothing there is read as YAML
    assert in_memory["after"] == {"yaml": False, "llm_cache.engine.record": True, "llm_cache.yaml_emit": True}


class _SpiedLock:
    def __init__(self, lock: Any, events: list[str]) -> None:
        self._lock, self._events = lock, events

    def acquire(self, timeout: float = -1) -> object:
        self._events.append("lock")
        return self._lock.acquire(timeout)

    def release(self) -> None:
        self._events.append("release")
        self._lock.release()


def _spied(store: Any, events: list[str]) -> Any:
    """The real Redis store, each call that goes to the server noted in ``events`` first."""
    get, put, lock = store.get, store.put, store.lock
    store.get = lambda key, mv: (events.append("get"), get(key, mv))[1]
    store.put = lambda entry, text=None: (events.append("put"), put(entry, text))[1]
    store.lock = lambda key: _SpiedLock(lock(key), events)
    return store


def _turns_between(events: list[str], first: str, then: str) -> int:
    """How often the other task ran between the first ``first`` and the ``then`` after it."""
    start = events.index(first)
    return events[start:events.index(then, start)].count("tick")


def test_a_remote_store_gives_the_loop_back_between_its_round_trips(redis_target: Any) -> None:
    """Over Redis each call is a round trip that holds the loop: a miss's lookup, its lock,
    its second look, its write and the lock's release are stretches of their own, and the
    loop's other tasks run between them (plain and streamed answers)."""
    events: list[str] = []
    store = _spied(redis_target.store(), events)

    async def answer(request: httpx2.Request) -> httpx2.Response:
        if json.loads(request.content).get("stream"):
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                     "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
            body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
            return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, json=ANSWER)

    async def main(stream: bool) -> None:
        cache = LLMCache(store)
        http = httpx2.AsyncClient(transport=cache.async_transport(httpx2.MockTransport(answer)))
        client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1", http_client=http)
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                events.append("tick")
                await asyncio.sleep(0)

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        ask = [{"role": "user", "content": f"a new question, streamed={stream}"}]
        if stream:
            got = await client.chat.completions.create(model="gpt-4o", messages=ask, stream=True)  # type: ignore[arg-type]
            assert "".join([c.choices[0].delta.content or "" async for c in got]) == "hi"
        else:
            reply = await client.chat.completions.create(model="gpt-4o", messages=ask)  # type: ignore[arg-type]
            assert reply.choices[0].message.content == "hi"
        done.set()
        await ticking
        await http.aclose()
        assert cache.stats()["recorded"] == 1

    for stream in (False, True):
        events.clear()
        asyncio.run(main(stream))
        calls = [e for e in events if e != "tick"]
        assert calls[:4] == ["get", "lock", "get", "put"] and calls[-1] == "release", calls
        assert _turns_between(events, "get", "lock") >= 1, events  # the lookup | the lock
        assert _turns_between(events, "lock", "get") >= 1, events  # the lock | the second look
        assert _turns_between(events, "put", "release") >= 1, events  # the write | the release


def test_a_background_refresh_cancelled_after_its_write_is_counted_and_released(redis_target: Any) -> None:
    """Over Redis a background refresh gives the loop back between its write and its lock's
    release; a task cancelled there (the loop shutting down) has refreshed the entry: it is
    counted as revalidated, and its lock is released."""
    events: list[str] = []
    store = _spied(redis_target.store(), events)
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    asked: list[int] = []

    async def answer(request: httpx2.Request) -> httpx2.Response:
        asked.append(1)
        reply = {**ANSWER, "choices": [{**ANSWER["choices"][0], "message": {"role": "assistant", "content": f"v{len(asked)}"}}]}
        return httpx2.Response(200, json=reply)

    async def main() -> None:
        cache = LLMCache(store, ttl="1h", stale_while_revalidate="10m", clock=lambda: now[0])
        http = httpx2.AsyncClient(transport=cache.async_transport(httpx2.MockTransport(answer)))
        client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1", http_client=http)
        ask = [{"role": "user", "content": "refreshed behind"}]
        assert (await client.chat.completions.create(model="gpt-4o", messages=ask)).choices[0].message.content == "v1"  # type: ignore[arg-type]
        now[0] += timedelta(minutes=65)
        stale = await client.chat.completions.create(model="gpt-4o", messages=ask)  # type: ignore[arg-type]
        assert stale.choices[0].message.content == "v1"  # served at once, refreshed behind
        for _ in range(10_000):  # until the refresh has written its answer
            if events.count("put") == 2:
                break
            await asyncio.sleep(0)
        assert events.count("put") == 2 and events[-1] == "put", events
        behind = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert len(behind) == 1
        behind[0].cancel()  # between the write and the release
        await asyncio.gather(*behind, return_exceptions=True)
        assert cache.stats()["revalidated"] == 1
        assert events[-1] == "release", events
        await http.aclose()

    asyncio.run(main())


def test_a_lock_another_process_holds_is_waited_for_with_the_loop_running(redis_target: Any) -> None:
    """Another application server records the same request: this one's task asks for the
    key's lock again and again without stopping its loop (other tasks run meanwhile), then
    serves what the other one wrote, with no call of its own."""
    ours, theirs = redis_target.store(), redis_target.store()
    asked: list[int] = []

    async def answer(request: httpx2.Request) -> httpx2.Response:
        asked.append(1)
        return httpx2.Response(200, json=ANSWER)

    def client_of(cache: LLMCache) -> openai.AsyncOpenAI:
        http = httpx2.AsyncClient(transport=cache.async_transport(httpx2.MockTransport(answer)))
        return openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1", http_client=http)

    ask = [{"role": "user", "content": "recorded by the other server"}]

    async def main() -> None:
        await client_of(LLMCache(theirs)).chat.completions.create(model="gpt-4o", messages=ask)  # type: ignore[arg-type]
        (meta,) = list(theirs.scan())
        recorded = theirs.get(meta.key, meta.model_version)
        theirs.delete(meta)  # as it was while the other server's call was on its way
        lock = theirs.lock(meta.key)
        lock.acquire(timeout=0)
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        async def the_other_server_finishes() -> None:
            await asyncio.sleep(0.3)
            theirs.put(recorded)
            lock.release()

        ticking = asyncio.create_task(ticker())
        finishing = asyncio.create_task(the_other_server_finishes())
        cache = LLMCache(ours, lock_timeout=5)  # the old code waited on the loop: 5 s, not 120
        reply = await client_of(cache).chat.completions.with_raw_response.create(model="gpt-4o", messages=ask)  # type: ignore[arg-type]
        ticks_while_waiting = ticks
        stop.set()
        await asyncio.gather(ticking, finishing)
        assert reply.parse().choices[0].message.content == "hi"
        assert reply.headers["x-llm-cache-status"] == "hit"
        assert ticks_while_waiting >= 5, ticks_while_waiting  # about 60 in 0.3 s; 0 with the loop stopped
        assert cache.stats()["recorded"] == 0

    asyncio.run(main())
    assert asked == [1]  # the other server's call only


def test_a_lock_a_task_took_is_released_when_the_second_look_needs_none(tmp_path: Path) -> None:
    """A task takes the key's lock for a refresh; by the time the engine decides, the entry is
    fresh (another process refreshed it, or the clock moved): the lock it took is released,
    not left held until the process ends."""
    from llm_cache.modes import Action, Found

    store = FileStore(tmp_path / "cassettes")
    cache = LLMCache(store)
    client = openai.OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1", http_client=httpx2.Client(
        transport=cache.transport(httpx2.MockTransport(lambda r: httpx2.Response(200, json=ANSWER)))))
    ask = [{"role": "user", "content": "recorded, then refreshed elsewhere"}]
    client.chat.completions.create(model="gpt-4o", messages=ask)  # type: ignore[arg-type]
    (meta,) = list(store.scan())
    entry = store.get(meta.key, meta.model_version)
    assert entry is not None
    scope = cache._scope
    request = entry_request(entry)
    rk = scope.key(request)
    assert rk.key == entry.key
    released: list[int] = []
    flight = scope._decided(rk, Found.MISSING, None, request, claimed=(lambda: released.append(1), Found.MISSING, None))
    assert flight.action is Action.RECORD and released == []  # needed: the flight holds it
    flight.abandon()
    assert released == [1]
    released.clear()
    flight = scope._decided(rk, Found.FRESH, entry, request, claimed=(lambda: released.append(1), Found.FRESH, entry))
    assert flight.served and released == [1]  # not needed any more: released at once
    cache.close()


def entry_request(entry: Any) -> Any:
    """The request an entry was recorded for, as the engine sees one."""
    from llm_cache.exchange import Request

    return Request(entry.method, f"http://127.0.0.1:9{entry.path}", entry.request_body.to_bytes(),
                   {"content-type": "application/json"})
