"""What the cache does on an event loop: no second read of the store by tasks that waited
for the same request, and nothing left to import by the first answer recorded or read."""

from __future__ import annotations

import asyncio
import contextlib
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
        http, client = _openai_over(cache, answer)
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


def test_tasks_waiting_behind_a_failed_request_go_upstream_side_by_side(tmp_path: Path) -> None:
    """The API failing (a 500 after 1 s): the first request keeps no answer, and the seven
    that waited for it go upstream together, not one after another (8 x 1 s, each past
    its own timeout's wait)."""
    upstream: list[int] = []
    flying = [0]

    async def failing(request: httpx2.Request) -> httpx2.Response:
        flying[0] += 1
        upstream.append(flying[0])  # how many are upstream at once, this one included
        await asyncio.sleep(1.0)  # long enough for the seven to be on their way together on a busy machine
        flying[0] -= 1
        return httpx2.Response(500, json={"error": {"message": "down", "type": "server_error"}})

    async def main() -> list[Any]:
        cache = LLMCache(FileStore(tmp_path / "cassettes"))
        http, client = _openai_over(cache, failing)
        client = client.with_options(max_retries=0)
        ask = [{"role": "user", "content": "during the outage"}]
        answers = await asyncio.gather(
            *(client.chat.completions.create(model="gpt-4o", messages=ask) for _ in range(8)),  # type: ignore[arg-type]
            return_exceptions=True)
        await http.aclose()
        return answers

    answers = asyncio.run(main())
    assert all(isinstance(a, openai.InternalServerError) for a in answers), answers
    assert len(upstream) == 8
    assert upstream[0] == 1 and max(upstream) == 7, upstream  # the first alone, then the seven at once


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
        http, client = _openai_over(cache, answer)
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


class _SpiedAsyncLock:
    def __init__(self, lock: Any, events: list[str]) -> None:
        self._lock, self._events = lock, events

    async def acquire(self) -> bool:
        got = await self._lock.acquire()
        self._events.append("lock")
        return bool(got)

    async def arelease(self) -> None:
        await self._lock.arelease()
        self._events.append("release")

    def release(self) -> None:
        self._lock.release()
        self._events.append("release")


def _spied(store: Any, events: list[str]) -> Any:
    """The real Redis store, each call that goes to the server noted in ``events``: before a
    blocking call, after an awaited one (of its ``aio`` side)."""
    get, put, lock = store.get, store.put, store.lock
    store.get = lambda key, mv: (events.append("get"), get(key, mv))[1]
    store.put = lambda entry, text=None: (events.append("put"), put(entry, text))[1]
    store.lock = lambda key: _SpiedLock(lock(key), events)
    aio = store.aio
    if aio is not None:
        aget, aput, alock = aio.get, aio.put, aio.lock

        async def spied_get(key: str, mv: str) -> Any:
            got = await aget(key, mv)
            events.append("get")
            return got

        async def spied_put(entry: Any, text: str | None = None) -> str:
            where = await aput(entry, text)
            events.append("put")
            return str(where)

        aio.get, aio.put = spied_get, spied_put
        aio.lock = lambda key: _SpiedAsyncLock(alock(key), events)
    return store


def _blocking_only(store: Any) -> Any:
    """The store as one made with ``asyncio=no`` or from a redis-py client alone: no asyncio side."""
    store.aio = None
    return store


def _awaited(redis_target: Any) -> Any:
    """A store whose event-loop tasks await Redis (``asyncio=yes``: the default on another machine)."""
    from llm_cache.stores.redis import RedisStore

    store = RedisStore.from_url(redis_target.store_url + "&asyncio=yes")
    redis_target._opened.append(store)
    assert store.aio is not None
    return store


def test_a_redis_url_says_whether_an_event_loop_awaits_redis(redis_target: Any) -> None:
    """``asyncio=auto`` (the default): a server on this machine answers in microseconds, its
    round trips are made on the loop; ``yes`` awaits them, ``no`` never does."""
    from llm_cache.stores.redis import RedisStore

    assert redis_target.url.startswith("redis://127.0.0.1:")
    for query, awaited in (("", False), ("&asyncio=auto", False), ("&asyncio=yes", True), ("&asyncio=no", False)):
        store = RedisStore.from_url(redis_target.store_url + query)
        try:
            assert (store.aio is not None) is awaited, query
        finally:
            store.close()


def _turns_between(events: list[str], first: str, then: str) -> int:
    """How often the other task ran between the first ``first`` and the ``then`` after it."""
    start = events.index(first)
    return events[start:events.index(then, start)].count("tick")


def _answer_plain_or_streamed(request: httpx2.Request) -> httpx2.Response:
    if json.loads(request.content).get("stream"):
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                 "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
        body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})
    return httpx2.Response(200, json=ANSWER)


async def _ask(client: openai.AsyncOpenAI, question: str, stream: bool) -> Any:
    ask = [{"role": "user", "content": question}]
    if stream:
        got = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=ask, stream=True)  # type: ignore[arg-type]
        assert "".join([c.choices[0].delta.content or "" async for c in got.parse()]) == "hi"
    else:
        got = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=ask)  # type: ignore[arg-type]
        assert got.parse().choices[0].message.content == "hi"
    return got.headers["x-llm-cache-status"]


class _Ticker:
    """A task that counts its turns, one every 5 ms while the loop runs: ``count``."""

    def __init__(self) -> None:
        self.count = 0
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.count += 1
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._stop.set()
        await self._task


def _openai_over(cache: LLMCache, handler: Any = _answer_plain_or_streamed) -> tuple[httpx2.AsyncClient, openai.AsyncOpenAI]:
    """An AsyncOpenAI client on ``cache.async_transport()`` over ``handler`` (and its HTTP client, to close)."""
    http = httpx2.AsyncClient(transport=cache.async_transport(httpx2.MockTransport(handler)))
    return http, openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1", http_client=http)


def _versioned(asked: list[int]) -> Any:
    """A handler answering ``v1``, ``v2``, ... one more each time it is asked."""

    async def answer(request: httpx2.Request) -> httpx2.Response:
        asked.append(1)
        reply = {**ANSWER, "choices": [{**ANSWER["choices"][0], "message": {"role": "assistant", "content": f"v{len(asked)}"}}]}
        return httpx2.Response(200, json=reply)

    return answer


@contextlib.contextmanager
def _no_blocking_calls(store: Any, *names: str) -> Any:
    """For the block, the store's blocking methods ``names`` raise: an event loop's tasks must
    go through its asyncio side."""

    def on_the_loop(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a blocking Redis call on the event loop")

    saved = {name: getattr(store, name) for name in names}
    for name in names:
        setattr(store, name, on_the_loop)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(store, name, method)


def test_over_redis_the_loop_runs_while_the_server_is_slow_to_answer(redis_target: Any) -> None:
    """The store's round trips are awaited (redis.asyncio): with the server paused for
    0.25 s (CLIENT PAUSE) during a miss, and again during a hit, the loop's other tasks
    keep running, and the store's blocking client is never used on the loop."""
    store = _awaited(redis_target)

    admin = redis_target.client()

    async def main(stream: bool) -> None:
        ticker = _Ticker()
        question = f"asked while Redis is paused, streamed={stream}"
        for expected in ("miss", "hit"):
            http, client = _openai_over(LLMCache(store))  # a new memory tier each time: the hit is read from Redis
            before = ticker.count
            admin.execute_command("CLIENT", "PAUSE", 250, "ALL")
            started = asyncio.get_running_loop().time()
            assert await _ask(client, question, stream) == expected
            took = asyncio.get_running_loop().time() - started
            assert took >= 0.2, took  # the pause was felt: the first round trip waited for it
            ticks = ticker.count - before
            assert ticks >= 10, (expected, ticks)  # about 50; 0 to 2 with the loop held
            await http.aclose()
        await ticker.stop()
        await store.aio.aclose()

    with _no_blocking_calls(store, "get", "put", "lock"):
        for stream in (False, True):
            asyncio.run(main(stream))
    assert len(list(store.scan())) == 2


def test_a_remote_store_gives_the_loop_back_between_its_round_trips(redis_target: Any) -> None:
    """Over Redis without an asyncio client (a store made from a redis-py client alone) each
    call is a round trip that holds the loop: a miss's lookup, its lock, its second look, its
    write and the lock's release are stretches of their own, and the loop's other tasks run
    between them (plain and streamed answers)."""
    events: list[str] = []
    store = _spied(_blocking_only(redis_target.store()), events)

    async def answer(request: httpx2.Request) -> httpx2.Response:
        if json.loads(request.content).get("stream"):
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                     "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
            body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
            return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, json=ANSWER)

    async def main(stream: bool) -> None:
        cache = LLMCache(store)
        http, client = _openai_over(cache, answer)
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
    """Over Redis without an asyncio client a background refresh gives the loop back between
    its write and its lock's release; a task cancelled there (the loop shutting down) has
    refreshed the entry: it is counted as revalidated, and its lock is released."""
    events: list[str] = []
    store = _spied(_blocking_only(redis_target.store()), events)
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    asked: list[int] = []

    async def main() -> None:
        cache = LLMCache(store, ttl="1h", stale_while_revalidate="10m", clock=lambda: now[0])
        http, client = _openai_over(cache, _versioned(asked))
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
        return _openai_over(cache, answer)[1]

    ask = [{"role": "user", "content": "recorded by the other server"}]

    async def main() -> None:
        await client_of(LLMCache(theirs)).chat.completions.create(model="gpt-4o", messages=ask)  # type: ignore[arg-type]
        (meta,) = list(theirs.scan())
        recorded = theirs.get(meta.key, meta.model_version)
        theirs.delete(meta)  # as it was while the other server's call was on its way
        lock = theirs.lock(meta.key)
        lock.acquire(timeout=0)

        async def the_other_server_finishes() -> None:
            await asyncio.sleep(0.3)
            theirs.put(recorded)
            lock.release()

        ticker = _Ticker()
        finishing = asyncio.create_task(the_other_server_finishes())
        cache = LLMCache(ours, lock_timeout=5)  # the old code waited on the loop: 5 s, not 120
        reply = await client_of(cache).chat.completions.with_raw_response.create(model="gpt-4o", messages=ask)  # type: ignore[arg-type]
        ticks_while_waiting = ticker.count
        await ticker.stop()
        await finishing
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
    # not needed any more: handed back for the task to give back at once (abegin awaits it)
    assert flight.served and flight.unneeded is not None and released == []
    from llm_cache.engine.flight import given_back

    asyncio.run(given_back(flight.unneeded))
    assert released == [1]
    cache.close()


def entry_request(entry: Any) -> Any:
    """The request an entry was recorded for, as the engine sees one."""
    from llm_cache.exchange import Request

    return Request(entry.method, f"http://127.0.0.1:9{entry.path}", entry.request_body.to_bytes(),
                   {"content-type": "application/json"})


def test_a_task_cancelled_while_it_gives_its_lock_back_leaves_the_lock_free(redis_target: Any) -> None:
    """The key's lock is given back with an await; a task cancelled during that await (the
    loop shutting down) gives it back at once, blocking, instead of leaving it held until
    it expires (60 s) for every other server."""
    events: list[str] = []
    store = _spied(_awaited(redis_target), events)
    made = store.aio.lock

    class SlowRelease:
        def __init__(self, key: str) -> None:
            self.lock = made(key)

        async def acquire(self) -> bool:
            return bool(await self.lock.acquire())

        async def arelease(self) -> None:
            await asyncio.sleep(10)  # the cancellation lands here
            await self.lock.arelease()

        def release(self) -> None:
            self.lock.release()

    store.aio.lock = SlowRelease

    async def main() -> None:
        cache = LLMCache(store)
        http, client = _openai_over(cache)
        asking = asyncio.create_task(_ask(client, "cancelled at the very end", False))
        for _ in range(10_000):
            if "put" in events:
                break
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        asking.cancel()
        await asyncio.gather(asking, return_exceptions=True)
        (meta,) = list(store.scan())
        lock = store.lock(meta.key)
        lock.acquire(timeout=0)  # free: TimeoutError while the cancelled task's lock is held
        lock.release()
        await http.aclose()
        await store.aio.aclose()

    asyncio.run(main())


def test_a_process_that_runs_many_event_loops_keeps_no_connection_of_a_loop_that_ended(redis_target: Any) -> None:
    """Each event loop gets its own asyncio connections to Redis, closed as its runner ends
    it (``asyncio.run``): a test suite that runs a loop per test does not pile them up."""
    store = _awaited(redis_target)
    admin = redis_target.client()

    def connections() -> int:
        return len(admin.client_list())

    async def once(n: int) -> None:
        cache = LLMCache(store)
        http, client = _openai_over(cache)
        assert await _ask(client, f"question {n % 2}", False) in ("miss", "hit")
        await http.aclose()

    asyncio.run(once(0))
    before = connections()
    for n in range(1, 6):
        asyncio.run(once(n))
    assert connections() <= before, (before, connections())  # one more per loop when they are kept


def test_a_lock_found_unneeded_is_given_back_with_an_await(redis_target: Any, monkeypatch: Any) -> None:
    """Another process recorded the answer between a task's first look and its lock: the
    second look serves it, and the lock goes back through redis.asyncio, not through a
    blocking round trip on the loop."""
    store = _awaited(redis_target)
    blocking = _spy_blocking_releases(store, monkeypatch)

    async def main() -> None:
        http, client = _openai_over(LLMCache(store))
        assert await _ask(client, "recorded elsewhere meanwhile", False) == "miss"
        await http.aclose()
        real_get, looks = store.aio.get, []

        async def first_look_misses(key: str, mv: str) -> Any:
            looks.append(key)
            return None if len(looks) == 1 else await real_get(key, mv)

        store.aio.get = first_look_misses
        http, client = _openai_over(LLMCache(store))
        assert await _ask(client, "recorded elsewhere meanwhile", False) == "hit"
        assert len(looks) == 2
        assert blocking == [], blocking  # no blocking release on the loop
        (meta,) = list(store.scan())
        lock = store.lock(meta.key)
        lock.acquire(timeout=0)  # given back
        lock.release()
        await http.aclose()
        await store.aio.aclose()

    asyncio.run(main())


def test_a_task_cancelled_while_its_lock_is_being_taken_gives_it_back(redis_target: Any) -> None:
    """Cancelled after the lock's SET reached Redis but before its reply came: the lock the
    task may hold is given back at once, not left to its 60 s expiry."""
    store = _awaited(redis_target)
    admin = redis_target.client()

    async def main() -> None:
        cache = LLMCache(store)
        http, client = _openai_over(cache)
        made = store.aio.lock

        class SetThenCancelled:
            def __init__(self, key: str) -> None:
                self.inner = made(key)

            async def acquire(self) -> bool:
                from types import SimpleNamespace

                redis_client = await self.inner._side.client()
                lock_set = redis_client.set

                async def set_then_wait(*args: Any, **kwargs: Any) -> Any:
                    done = await lock_set(*args, **kwargs)  # the SET ran on the server
                    await asyncio.sleep(10)  # its reply is slow: the cancellation lands here
                    return done

                lock = redis_client.lock(self.inner.name, timeout=60, sleep=0.02, blocking=False, thread_local=False)
                lock.redis = SimpleNamespace(set=set_then_wait, connection_pool=redis_client.connection_pool)
                self.inner._lock = lock
                return await self.inner.acquire()

            async def arelease(self) -> None:
                await self.inner.arelease()

            def release(self) -> None:
                self.inner.release()

        store.aio.lock = SetThenCancelled
        asking = asyncio.create_task(_ask(client, "cancelled while locking", False))
        for _ in range(2000):
            if admin.keys(f"{redis_target.prefix}lock:*"):
                break
            await asyncio.sleep(0.005)
        assert admin.keys(f"{redis_target.prefix}lock:*"), "the lock's SET never ran"
        asking.cancel()
        await asyncio.gather(asking, return_exceptions=True)
        assert admin.keys(f"{redis_target.prefix}lock:*") == []  # given back: held 60 s before
        await http.aclose()
        await store.aio.aclose()

    asyncio.run(main())



def test_a_background_refresh_over_redis_awaits_its_lock(redis_target: Any) -> None:
    """A stale answer served from an awaited Redis store (``asyncio=yes``) is refreshed in a
    task whose lock is asked for through the asyncio client: the serving task never makes a
    blocking round trip for it (it did: the refresh's lock was taken on the loop)."""
    store = _awaited(redis_target)
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    asked: list[int] = []
    locked: list[bool] = []
    admin = redis_target.client()
    versioned = _versioned(asked)

    async def answer(request: httpx2.Request) -> httpx2.Response:
        locked.append(bool(admin.keys(redis_target.prefix + "*lock*")))  # the key's lock held meanwhile
        return await versioned(request)

    async def main() -> None:
        cache = LLMCache(store, ttl="1h", stale_while_revalidate="10m", clock=lambda: now[0])
        http, client = _openai_over(cache, answer)
        ask = [{"role": "user", "content": "refreshed behind, awaited"}]
        assert (await client.chat.completions.create(model="gpt-4o", messages=ask)).choices[0].message.content == "v1"  # type: ignore[arg-type]
        now[0] += timedelta(minutes=65)
        stale = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=ask)  # type: ignore[arg-type]
        assert stale.headers["x-llm-cache-status"] == "stale"
        assert stale.parse().choices[0].message.content == "v1"
        for _ in range(500):
            if cache.stats()["revalidated"]:
                break
            await asyncio.sleep(0.01)
        assert cache.stats()["revalidated"] == 1 and len(asked) == 2
        assert locked == [True, True]  # the recording's and the refresh's: the refresh took the lock
        now[0] += timedelta(minutes=1)
        fresh = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=ask)  # type: ignore[arg-type]
        assert fresh.headers["x-llm-cache-status"] == "hit"
        assert fresh.parse().choices[0].message.content == "v2"
        await http.aclose()
        await store.aio.aclose()

    with _no_blocking_calls(store, "get", "put", "lock"):
        asyncio.run(main())
    assert redis_target.client().keys("*lock*") == []  # the refresh gave its lock back


def test_a_background_refresh_cancelled_before_it_ran_leaves_the_key_free(tmp_path: Path) -> None:
    """A refresh task cancelled before its first step (its loop closing) takes no lock and
    leaves no reservation: the next stale answer of the key is refreshed. (The lock used to
    be taken before the task started, and kept by one that never ran.)"""
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    asked: list[int] = []
    cache = LLMCache(f"file://{tmp_path}", ttl="1h", stale_while_revalidate="10m", clock=lambda: now[0])
    transport = cache.async_transport(httpx2.MockTransport(_versioned(asked)))
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "cancelled early"}]}).encode()

    def request() -> httpx2.Request:
        return httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions", content=body,
                              headers={"content-type": "application/json"})

    async def main() -> None:
        first = await transport.handle_async_request(request())
        await first.aread()
        now[0] += timedelta(minutes=65)
        stale = await transport.handle_async_request(request())  # returns as the refresh task is made
        assert stale.headers["x-llm-cache-status"] == "stale"
        behind = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert len(behind) == 1
        behind[0].cancel()  # before it ran
        await asyncio.gather(*behind, return_exceptions=True)
        assert len(asked) == 1 and cache.stats()["revalidated"] == 0
        again = await transport.handle_async_request(request())
        assert again.headers["x-llm-cache-status"] == "stale"
        behind = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert len(behind) == 1  # a refresh: the key was left free
        await asyncio.gather(*behind)
        assert len(asked) == 2 and cache.stats()["revalidated"] == 1

    asyncio.run(main())
    cache.close()


def test_an_unusable_entry_in_redis_is_moved_aside_with_an_await(redis_target: Any) -> None:
    """Over an awaited Redis store, an entry that cannot be read is moved aside (``corrupt:``)
    through the asyncio client, not by a blocking round trip on the loop, and recorded again."""
    import pytest as _pytest

    from llm_cache.errors import LLMCacheWarning

    store = _awaited(redis_target)
    asked: list[int] = []
    admin = redis_target.client()

    async def main() -> None:
        cache = LLMCache(store)
        http, client = _openai_over(cache, _versioned(asked))
        ask = [{"role": "user", "content": "damaged in Redis"}]
        assert (await client.chat.completions.create(model="gpt-4o", messages=ask)).choices[0].message.content == "v1"  # type: ignore[arg-type]
        [entry_key] = admin.keys(redis_target.prefix + "e:*")  # the entry: its prefix may itself end in "e"
        admin.set(entry_key, b"llm_cache: 1\nkey: [unclosed\n")
        await http.aclose()
        http, client = _openai_over(LLMCache(store), _versioned(asked))  # no memory tier holding it
        with _pytest.warns(LLMCacheWarning, match="unusable.*moved to .*corrupt:"):
            again = await client.chat.completions.create(model="gpt-4o", messages=ask)  # type: ignore[arg-type]
        assert again.choices[0].message.content == "v2" and len(asked) == 2  # recorded again
        await http.aclose()
        await store.aio.aclose()

    with _no_blocking_calls(store, "get", "put", "lock", "quarantine"):
        asyncio.run(main())
    moved = [k for k in admin.keys(redis_target.prefix + "*") if b"corrupt:" in k]
    assert len(moved) == 1 and admin.get(moved[0]) == b"llm_cache: 1\nkey: [unclosed\n"


def test_a_key_reserved_for_a_refresh_behind_is_not_taken_for_a_lock_this_process_holds(redis_target: Any) -> None:
    """A stale answer's refresh reserves its key before its task asks for the lock. Meanwhile
    another task must record the key (its request allows no stale answer) while another
    process holds the lock: it waits for that process and serves what it wrote, instead of
    taking the reservation for a lock of its own process and going upstream at once."""
    import dataclasses

    ours, theirs = _awaited(redis_target), redis_target.store()  # awaited: the refresh's lock is a round trip away
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    asked: list[int] = []

    async def main() -> None:
        cache = LLMCache(ours, ttl="1h", stale_while_revalidate="10m", lock_timeout=5, clock=lambda: now[0])
        http, client = _openai_over(cache, _versioned(asked))
        ask = [{"role": "user", "content": "reserved, not held"}]
        await client.chat.completions.create(model="gpt-4o", messages=ask)  # type: ignore[arg-type]
        now[0] += timedelta(minutes=65)
        (meta,) = list(theirs.scan())
        lock = theirs.lock(meta.key)
        lock.acquire(timeout=0)  # the other process is refreshing it

        async def the_other_process_finishes() -> None:
            await asyncio.sleep(0.3)
            recorded = theirs.get(meta.key, meta.model_version)
            theirs.put(dataclasses.replace(recorded, recorded_at=now[0]))
            lock.release()

        finishing = asyncio.create_task(the_other_process_finishes())
        stale, strict = await asyncio.gather(
            client.chat.completions.with_raw_response.create(model="gpt-4o", messages=ask),  # type: ignore[arg-type]
            client.chat.completions.with_raw_response.create(  # type: ignore[arg-type]
                model="gpt-4o", messages=ask, extra_headers={"x-llm-cache": "ttl=1m"}),
        )
        await finishing
        assert stale.headers["x-llm-cache-status"] == "stale"
        assert strict.headers["x-llm-cache-status"] == "hit"  # what the other process wrote
        assert asked == [1]  # no call of this process's own: it went upstream at once before
        for _ in range(100):  # the refresh behind found the lock held elsewhere and gave up
            if not (cache.session._refreshing or cache.session._inflight):  # nothing left reserved or held
                break
            await asyncio.sleep(0.01)
        assert not cache.session._refreshing and not cache.session._inflight
        await http.aclose()
        await ours.aio.aclose()

    asyncio.run(main())


def _spy_blocking_releases(store: Any, monkeypatch: Any) -> list[str]:
    """The names of the store's locks given back by a blocking call (``RedisLock.release``)."""
    from llm_cache.stores import redis_lock

    blocking: list[str] = []
    real_release = redis_lock.RedisLock.release

    def spied(self: Any) -> None:
        if self._store is store:
            blocking.append(self.name)
        real_release(self)

    monkeypatch.setattr(redis_lock.RedisLock, "release", spied)
    return blocking


def test_a_stream_dropped_midway_gives_its_lock_back_with_an_await(redis_target: Any, monkeypatch: Any) -> None:
    """A streamed answer the caller closes before its provider's last event keeps nothing and
    gives its key's lock back through redis.asyncio (it was a blocking round trip on the loop)."""
    store = _awaited(redis_target)
    blocking = _spy_blocking_releases(store, monkeypatch)
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
             "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}

    async def endless() -> Any:
        for _ in range(1000):  # never reaches its end: the caller stops first
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            await asyncio.sleep(0)

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=endless())

    async def main() -> None:
        cache = LLMCache(store)
        http = httpx2.AsyncClient(transport=cache.async_transport(httpx2.MockTransport(answer)))
        body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "dropped midway"}]}
        async with http.stream("POST", "http://127.0.0.1:9/v1/chat/completions", json=body) as response:
            assert response.headers["x-llm-cache-status"] == "miss"
            async for _ in response.aiter_bytes():
                assert redis_target.client().keys(redis_target.prefix + "*lock*")  # held while it streams
                break  # dropped: the block closes the response
        assert blocking == [], blocking
        assert redis_target.client().keys(redis_target.prefix + "*lock*") == []  # given back
        assert list(store.scan()) == []  # nothing kept
        await http.aclose()
        await store.aio.aclose()

    asyncio.run(main())


def test_an_upstream_call_that_fails_gives_its_lock_back_with_an_await(redis_target: Any, monkeypatch: Any) -> None:
    """A request whose upstream call fails (the API unreachable) gives its key's lock back
    through redis.asyncio before the error reaches the caller."""
    store = _awaited(redis_target)
    blocking = _spy_blocking_releases(store, monkeypatch)

    def unreachable(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    async def main() -> None:
        http, client = _openai_over(LLMCache(store), unreachable)
        client = client.with_options(max_retries=0)
        try:
            await _ask(client, "the API is down", False)
        except openai.APIConnectionError:
            pass
        else:
            raise AssertionError("the failed call was not raised")
        assert blocking == [], blocking
        assert redis_target.client().keys(redis_target.prefix + "*lock*") == []
        await http.aclose()
        await store.aio.aclose()

    asyncio.run(main())


def test_an_async_cached_function_that_raises_gives_its_lock_back_with_an_await(redis_target: Any, monkeypatch: Any) -> None:
    store = _awaited(redis_target)
    blocking = _spy_blocking_releases(store, monkeypatch)
    cache = LLMCache(store)
    calls: list[str] = []

    @cache.cached
    async def summarise(text: str) -> str:
        calls.append(text)
        raise RuntimeError("the model is down")

    async def main() -> None:
        for _ in range(2):  # the lock was given back: the second call is not kept waiting
            try:
                await summarise("a long text")
            except RuntimeError:
                pass
            else:
                raise AssertionError("the function's error was not raised")
        assert blocking == [], blocking
        assert redis_target.client().keys(redis_target.prefix + "*lock*") == []
        await store.aio.aclose()

    asyncio.run(main())
    assert calls == ["a long text", "a long text"]


def test_a_background_refresh_cancelled_midway_gives_its_lock_back_with_an_await(redis_target: Any, monkeypatch: Any) -> None:
    """A refresh behind a stale answer, cancelled while it waits for the API (its loop
    shutting down: asyncio.run cancels what is left and lets it unwind), gives its lock back
    through redis.asyncio: the loop still runs while the task unwinds."""
    store = _awaited(redis_target)
    blocking = _spy_blocking_releases(store, monkeypatch)
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    asked: list[int] = []
    versioned = _versioned(asked)
    admin = redis_target.client()

    async def answer(request: httpx2.Request) -> httpx2.Response:
        if asked:  # the refresh: slow, cancelled before it answers
            await asyncio.sleep(30)
        return await versioned(request)

    async def main() -> None:
        cache = LLMCache(store, ttl="1h", stale_while_revalidate="10m", clock=lambda: now[0])
        http, client = _openai_over(cache, answer)
        ask = [{"role": "user", "content": "refreshed behind, cancelled"}]
        await client.chat.completions.create(model="gpt-4o", messages=ask)  # type: ignore[arg-type]
        now[0] += timedelta(minutes=65)
        await client.chat.completions.create(model="gpt-4o", messages=ask)  # type: ignore[arg-type]  # stale
        for _ in range(500):
            if admin.keys(redis_target.prefix + "*lock*"):
                break
            await asyncio.sleep(0.01)
        assert admin.keys(redis_target.prefix + "*lock*"), "the refresh never took its lock"
        await http.aclose()
        # main returns with the refresh still waiting: asyncio.run cancels it

    asyncio.run(main())
    assert blocking == [], blocking
    assert admin.keys(redis_target.prefix + "*lock*") == []  # given back, not left to expire
