"""LLMCache: the transports, @cached, warm, stats and logging, single flight, against the local server."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest

from fakeapi import FakeLLMServer
from llm_cache import CacheMiss, ConfigError, LLMCache, LLMCacheWarning


def chat(client: openai.OpenAI, text: str, **kw: Any) -> Any:
    return client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}], **kw)


def make_client(server: FakeLLMServer, cache: LLMCache) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key="sk-lib-test-00000000", max_retries=0,
                         http_client=httpx2.Client(transport=cache.transport()))


@pytest.fixture
def srv(fake_api: FakeLLMServer) -> FakeLLMServer:
    return fake_api


@pytest.mark.parametrize("store", ["memory://", "file://cassettes"])
def test_transport_records_then_serves(srv: FakeLLMServer, tmp_path: Path, store: str) -> None:
    cache = LLMCache(store, root=tmp_path)
    client = make_client(srv, cache)
    first = chat(client, "hello").model_dump()
    assert chat(client, "hello").model_dump() == first
    assert srv.count() == 1
    assert cache.stats()["hits"] == 1 and cache.stats()["recorded"] == 1
    if store.startswith("file"):
        assert len(list((tmp_path / "cassettes").rglob("*.yaml"))) == 1


def test_transport_tees_a_stream_and_replays_it_equal(srv: FakeLLMServer) -> None:
    cache = LLMCache()
    client = make_client(srv, cache)
    first = [c.model_dump() for c in chat(client, "a streamed answer", stream=True)]
    again = [c.model_dump() for c in chat(client, "a streamed answer", stream=True)]
    assert first == again and len(first) > 3
    assert srv.count() == 1


def test_a_stream_dropped_midway_is_not_recorded(srv: FakeLLMServer) -> None:
    cache = LLMCache()
    client = httpx2.Client(transport=cache.transport())
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "one two three four five"}]}
    with client.stream("POST", srv.openai_base_url + "/chat/completions", json=body) as response:
        next(response.iter_raw())  # read one piece, then leave
    assert cache.stats()["recorded"] == 0
    with client.stream("POST", srv.openai_base_url + "/chat/completions", json=body) as response:
        response.read()
    assert cache.stats()["recorded"] == 1 and srv.count() == 2


def test_transport_wraps_the_given_transport(srv: FakeLLMServer) -> None:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json={"model": "gpt-4o", "choices": [{"message": {"content": "mocked"}}]})

    cache = LLMCache()
    client = httpx.Client(transport=cache.transport(httpx.MockTransport(handler)))
    for _ in range(3):
        r = client.post("http://api.test/v1/chat/completions", json={"model": "gpt-4o", "messages": []})
        assert r.json()["choices"][0]["message"]["content"] == "mocked"
    assert seen == ["/v1/chat/completions"]


def test_sixteen_threads_make_one_upstream_call(srv: FakeLLMServer, tmp_path: Path) -> None:
    for store in ("memory://", "file://cassettes"):
        srv.calls.clear()
        cache = LLMCache(store, root=tmp_path)
        client = make_client(srv, cache)
        with ThreadPoolExecutor(16) as pool:
            answers = set(pool.map(lambda _: chat(client, "same").choices[0].message.content, range(16)))
        assert answers == {"echo: same"}
        assert srv.count() == 1, store


def test_sixteen_tasks_make_one_upstream_call(srv: FakeLLMServer) -> None:
    cache = LLMCache()
    client = openai.AsyncOpenAI(base_url=srv.openai_base_url, api_key="sk-x", max_retries=0,
                                http_client=httpx2.AsyncClient(transport=cache.async_transport()))

    async def main() -> set[str]:
        replies = await asyncio.gather(*[
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "same"}], stream=stream)
            for stream in [False] * 8 + [False] * 8
        ])
        return {r.choices[0].message.content for r in replies}

    assert asyncio.run(main()) == {"echo: same"}
    assert srv.count() == 1
    assert cache.stats()["hits"] == 15


@pytest.mark.parametrize("where", ["files", "redis"])
def test_sixteen_processes_make_one_upstream_call(srv: FakeLLMServer, tmp_path: Path, where: str, request: pytest.FixtureRequest) -> None:
    store = "file://cassettes" if where == "files" else request.getfixturevalue("redis_target").store_url
    script = textwrap.dedent(f"""
        import sys, httpx2, openai
        from llm_cache import LLMCache
        cache = LLMCache({store!r}, root={str(tmp_path)!r})
        client = openai.OpenAI(base_url={srv.openai_base_url!r}, api_key="sk-x", max_retries=0,
                               http_client=httpx2.Client(transport=cache.transport()))
        sys.stdin.readline()  # start together
        print(client.chat.completions.create(model="gpt-4o", messages=[{{"role": "user", "content": "procs"}}]).choices[0].message.content)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(16)]
    try:
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = {p.communicate(timeout=120)[0].strip() for p in procs}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert outputs == {"echo: procs"}
    assert srv.count() == 1


def test_replay_mode_raises_cache_miss_and_never_calls(srv: FakeLLMServer) -> None:
    cache = LLMCache(mode="replay")
    with pytest.raises(CacheMiss):
        chat(make_client(srv, cache), "not cached")
    assert srv.count() == 0


def test_cached_sync_and_async_functions() -> None:
    cache = LLMCache()
    calls: list[str] = []

    @cache.cached(model_version="gpt-4o-2024-08-06")
    def summarize(document: str, words: int = 3) -> dict[str, str]:
        calls.append(document)
        return {"summary": " ".join(document.split()[:words])}

    assert summarize("a b c d") == {"summary": "a b c"}
    assert summarize("a b c d", 3) == summarize(document="a b c d") == {"summary": "a b c"}
    assert summarize("a b c d", words=2) == {"summary": "a b"}
    assert calls == ["a b c d", "a b c d"]

    @cache.cached
    async def shout(text: str) -> str:
        calls.append(text)
        await asyncio.sleep(0.01)
        return text.upper()

    async def main() -> set[str]:
        return set(await asyncio.gather(*[shout("hey") for _ in range(16)]))

    assert asyncio.run(main()) == {"HEY"}
    assert calls.count("hey") == 1


def test_cached_methods_are_keyed_by_their_instance_and_arguments() -> None:
    """A method's instance is no JSON: it is keyed by its class and attributes (a
    classmethod's class by its name), so instances of other state or class never share."""
    cache = LLMCache()
    calls: list[str] = []

    class Summarizer:
        @cache.cached
        def summarize(self, text: str) -> str:
            calls.append(f"{type(self).__name__}.summarize({text})")
            return text[:3]

        @classmethod
        @cache.cached
        def title(cls, text: str) -> str:
            calls.append(f"title({text})")
            return text.title()

    class Other:
        @cache.cached
        def summarize(self, text: str) -> str:
            calls.append(f"Other.summarize({text})")
            return text[-3:]

    assert Summarizer().summarize("abcdef") == Summarizer().summarize("abcdef") == "abc"
    assert Summarizer().summarize("xyz123") == "xyz"
    assert Summarizer.title("hello") == Summarizer().title("hello") == "Hello"
    assert Other().summarize("abcdef") == "def"
    assert calls == ["Summarizer.summarize(abcdef)", "Summarizer.summarize(xyz123)", "title(hello)",
                     "Other.summarize(abcdef)"]

    def plain(self: str) -> str:  # a function's first argument named self is still an argument
        calls.append(self)
        return self

    keyed = cache.cached(plain)
    assert keyed("a") == "a" and keyed("b") == "b" and calls[-2:] == ["a", "b"]

    class Model:
        def __init__(self, name: str, client: object = None) -> None:
            self.name = name
            if client is not None:
                self.client = client

        @cache.cached
        def say(self, text: str) -> str:
            calls.append(f"{self.name}: {text}")
            return f"{self.name} says: {text}"

        @cache.cached(key_self=False)
        def version(self) -> str:
            calls.append("version")
            return "1.0"

    class Sub(Model):
        pass

    assert Model("gpt-4o").say("hi") == "gpt-4o says: hi"
    assert Model("claude").say("hi") == "claude says: hi"  # another state: never the first's answer
    assert Model("gpt-4o").say("hi") == "gpt-4o says: hi" and calls[-1] == "claude: hi"  # a hit
    assert Sub("gpt-4o").say("hi") == "gpt-4o says: hi" and calls[-1] == "gpt-4o: hi"  # its own class
    with pytest.raises(TypeError, match=r"keyed by its instance's attributes.*key_self=False"):
        Model("gpt-4o", client=object()).say("hi")
    assert Model("a", client=object()).version() == Model("b").version() == "1.0"
    assert calls.count("version") == 1


def test_cached_model_version_is_part_of_the_key() -> None:
    cache = LLMCache()
    calls: list[int] = []

    def make(version: str) -> Any:
        @cache.cached(model_version=version)
        def f(x: int) -> int:
            calls.append(x)
            return x
        return f

    make("v1")(1), make("v1")(1), make("v2")(1)
    assert calls == [1, 1]


def test_cached_returns_the_same_value_on_a_miss_as_on_the_hits_after() -> None:
    cache = LLMCache()

    @cache.cached
    def pair(n: int) -> Any:
        return (n, {1: "one"})

    @cache.cached
    async def apair(n: int) -> Any:
        return (n, {1: "one"})

    first, again = pair(2), pair(2)
    assert pair.cache_status == "hit"  # type: ignore[attr-defined]
    assert first == again == [2, {"1": "one"}]  # as JSON gives it back, the first time too
    assert asyncio.run(apair(3)) == asyncio.run(apair(3)) == [3, {"1": "one"}]


def test_cached_rejects_what_json_cannot_hold() -> None:
    cache = LLMCache()

    @cache.cached
    def bad(x: int) -> object:
        return object()

    with pytest.raises(TypeError, match="the result must be JSON-serialisable"):
        bad(1)
    with pytest.raises(TypeError, match="arguments must be JSON-serialisable"):
        cache.cached(lambda x: x)(object())


def test_warm_from_yaml_and_jsonl(srv: FakeLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARM_TEST_KEY", "sk-warm-0000000000")
    items = [
        {"path": "/chat/completions", "json": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"q{i}"}]},
         "headers": {"Authorization": "Bearer ${WARM_TEST_KEY}"}}
        for i in range(3)
    ]
    jsonl = tmp_path / "common.jsonl"
    jsonl.write_text("\n".join(json.dumps(i) for i in items))
    cache = LLMCache("file://cassettes", root=tmp_path)
    report = cache.warm(jsonl, base_url=srv.openai_base_url)
    assert (report.total, report.recorded, report.fresh, report.failed) == (3, 3, 0, 0)
    assert all(c.headers["authorization"] == "Bearer sk-warm-0000000000" for c in srv.calls)
    again = cache.warm(jsonl, base_url=srv.openai_base_url)
    assert (again.recorded, again.fresh) == (0, 3)
    assert srv.count() == 3
    replay = LLMCache("memory://", mode="replay").warm(jsonl, base_url=srv.openai_base_url)
    assert replay.missing == 3 and srv.count() == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("just: a mapping\n")
    with pytest.raises(ConfigError, match="a list of requests"):
        cache.warm(bad)
    # a request given by path, and no base_url: said before any request is sent
    with pytest.raises(ConfigError, match=r"common.jsonl request 1 path must be a full url, or base_url= to put before"):
        cache.warm(jsonl)
    assert srv.count() == 3
    # an unset variable in a header: said before any request is sent, never sent as ${...}
    with pytest.raises(ConfigError, match=r"request 1 header x-api-key must be a variable set in the "
                                          r"environment \(LLM_CACHE_UNSET_KEY is not set\)"):
        LLMCache("memory://").warm(jsonl, base_url=srv.openai_base_url,
                                   headers={"x-api-key": "${LLM_CACHE_UNSET_KEY}"})
    assert srv.count() == 3
    # a token with a $ in it is a token, not a variable: not refused, and never shown
    from llm_cache.warming import check_variables

    check_variables([{"url": "http://127.0.0.1:1/v1/x"}], {"Authorization": "Basic ab$cd"}, "f", environ={})


def test_periodic_info_line(srv: FakeLLMServer, caplog: pytest.LogCaptureFixture) -> None:
    cache = LLMCache(log_every=4)
    client = make_client(srv, cache)
    with caplog.at_level(logging.INFO, logger="llm_cache"):
        for _ in range(8):
            chat(client, "logged")
    lines = [r.getMessage() for r in caplog.records if r.name == "llm_cache"]
    assert lines == [
        "llm_cache: 4 lookups, hit rate 75.0% (hits 3, misses 0, recorded 1, refreshed 0)",
        "llm_cache: 8 lookups, hit rate 87.5% (hits 7, misses 0, recorded 1, refreshed 0)",
    ]


def test_cap_enforced_by_evict_and_close(srv: FakeLLMServer, tmp_path: Path) -> None:
    cache = LLMCache("file://cassettes", root=tmp_path, max_entries=2)
    client = make_client(srv, cache)
    for text in "abcd":
        chat(client, text)
    chat(client, "a")  # used again: the most recently used with d
    assert len(list((tmp_path / "cassettes").rglob("*.yaml"))) == 4
    # an application's session is its lifetime: what it used is evicted like any entry, least
    # recently used first (a test run keeps what it used: tests/plugin/test_eviction.py)
    assert cache.evict() == 2
    assert len(list((tmp_path / "cassettes").rglob("*.yaml"))) == 2
    asked = srv.count()
    for text in "ad":
        chat(client, text)
    assert srv.count() == asked, "the two most recently used were kept"
    # the usage went to the store at the pass: a new process (another worker) orders by it
    chat(client, "e")
    later = LLMCache("file://cassettes", root=tmp_path, max_entries=2)
    chat(make_client(srv, later), "e")
    later.close()
    assert cache.evict() == 1  # a, used before d, goes (from memory too)
    for text in "de":
        chat(client, text)
    assert srv.count() == asked + 1
    chat(client, "a")
    assert srv.count() == asked + 2


def test_a_long_lived_cache_holds_no_usage_between_passes(srv: FakeLLMServer, tmp_path: Path) -> None:
    cache = LLMCache("file://cassettes", root=tmp_path, max_entries=100)
    client = make_client(srv, cache)
    for text in "abc":
        chat(client, text)
    assert len(cache.session.stats.used) == 3
    cache.evict()
    assert cache.session.stats.used == {}  # handed to the store, not kept for the process's life
    assert len(cache.session.store.usage()) == 3


def test_intercept_context_manager(srv: FakeLLMServer, tmp_path: Path) -> None:
    cache = LLMCache("file://cassettes", root=tmp_path)
    plain = openai.OpenAI(base_url=srv.openai_base_url, api_key="sk-x", max_retries=0)
    with cache.intercept(mode="record"):
        chat(plain, "patched")
    with cache.intercept(mode="replay") as scope:
        chat(plain, "patched")
        assert scope.stats.hits == 1
    assert srv.count() == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl": "soon"}, "ttl must be a duration"),
        ({"mode": "sometimes"}, "mode must be one of"),
        ({"eviction": "random"}, "eviction must be one of"),
        ({"max_size": "huge"}, "max_size must be a size"),
        ({"fallback": "pray"}, "fallback must be 'error' or 'passthrough'"),
        ({"store": "ftp://x"}, "store must be a store URL"),
        ({"model_versions": "gpt-4o"}, "model_versions must be lines 'alias = version'"),
        ({"store": "file:///tmp/c?ttl=1s"}, r"store must be file://PATH with no parameters \(got ttl\)"),
        ({"ignore_fields": "not a path"}, "ignore_fields must be dotted field paths"),
        ({"record_errors": "maybe"}, "record_errors must be true or false, got 'maybe'"),
        ({"memory_entries": "lots"}, "memory_entries must be a whole number, 0 for no memory tier, got 'lots'"),
        ({"memory_entries": -5}, "memory_entries must be a whole number, 0 for no memory tier, got -5"),
        ({"log_every": "often"}, "log_every must be a whole number above 0, like 1000, got 'often'"),
        ({"ttl": 0}, "ttl must be a duration above 0"),
        ({"ttl": True}, "ttl must be a duration like 90s"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LLMCache(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key_self": "no"}, r"cached\(key_self=...\) must be True or False, got 'no'"),
        ({"model_version": 4}, r"cached\(model_version=...\) must be a version label"),
        ({"model_version": " "}, r"cached\(model_version=...\) must be a version label"),
    ],
)
def test_bad_cached_arguments_are_said_at_once(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LLMCache("memory://").cached(**kwargs)


def test_settings_given_as_python_values_mean_what_they_say(srv: FakeLLMServer) -> None:
    # "false" read from an environment variable is false: a 500 answer is not kept
    cache = LLMCache("memory://", record_errors="false", ttl=3600, log_every=0)
    assert cache.session.settings.ttl.total_seconds() == 3600  # a number of seconds, as lock_timeout takes
    client = make_client(srv, cache)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="error-500", messages=[{"role": "user", "content": "fail"}])
    assert cache.stats()["entries"] == 0 and cache.stats()["not_stored"] == 1


def test_a_store_url_is_named_as_given_without_its_stale_parameters() -> None:
    assert LLMCache("memory://?stale_if_error=1d").stats()["store"] == "memory://"
    assert LLMCache("memory://?max_entries=5&stale_if_error=1d").stats()["store"] == "memory://?max_entries=5"


def test_stats_leave_out_what_only_a_test_run_has(srv: FakeLLMServer) -> None:
    cache = LLMCache("memory://")
    client = make_client(srv, cache)
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "stats"}])
    stats = cache.stats()
    assert (stats["hits"], stats["recorded"], stats["entries"], stats["hit_rate"]) == (1, 1, 1, 0.5)
    # an application has no tests, no unused or stale cassettes of a run, no inventory of one
    for name in ("tests", "per_test", "unused", "unused_entries", "unused_policy", "unused_why_not", "inventory",
                 "stale_policy", "stale_cassettes", "unseen"):
        assert name not in stats, name


def test_a_string_of_ignored_fields_is_a_field_not_its_letters(srv: FakeLLMServer) -> None:
    cache = LLMCache("memory://", ignore_fields="temperature", model_versions="gpt-4o = 2024-08-06")
    client = make_client(srv, cache)
    for temperature in (0.1, 0.9):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "t"}],
                                       temperature=temperature)
    assert (cache.stats()["hits"], srv.count()) == (1, 1)
    (entry,) = cache.session.store.scan()
    assert entry.model_version == "gpt-4o@2024-08-06"


def test_redis_store_through_the_transport(srv: FakeLLMServer, redis_target: Any) -> None:
    cache = LLMCache(redis_target.store_url)
    chat(make_client(srv, cache), "shared")
    other = LLMCache(redis_target.store_url)  # another application server, same Redis
    chat(make_client(srv, other), "shared")
    assert srv.count() == 1 and other.stats()["hits"] == 1


def test_unreachable_store_raises_or_passes_through(srv: FakeLLMServer, caplog: pytest.LogCaptureFixture) -> None:
    from redis_server import free_port

    from llm_cache import StoreUnavailable

    url = f"redis://127.0.0.1:{free_port()}/0?timeout=0.5"
    with pytest.raises(StoreUnavailable, match=r"cache store redis://127\.0\.0\.1:\d+/0\?timeout=0\.5 is unavailable") as down:
        LLMCache(url)
    # what an application can do about it, not only a test run's flag
    assert "Start it (or check its address), or choose another store: --llm-cache-store in a test run " \
        "(file://cassettes, memory://), LLMCache(store=...) in an application." in str(down.value)
    with caplog.at_level(logging.WARNING, logger="llm_cache"):
        cache = LLMCache(url, fallback="passthrough")
        assert chat(make_client(srv, cache), "through").choices[0].message.content == "echo: through"
        chat(make_client(srv, cache), "through")
    assert srv.count() == 2  # nothing cached, every call reached the API
    assert any("unavailable; passing calls through until it is reached" in r.getMessage() for r in caplog.records)


def test_a_store_away_at_start_is_used_once_it_comes_up(srv: FakeLLMServer) -> None:
    """An application and its Redis started together: the cache passes calls through while
    the store is away, tries it again every few seconds, and caches once it answers."""
    from redis_server import RedisServer, free_port

    from llm_cache.stores.later import Later

    port = free_port()
    cache = LLMCache(f"redis://127.0.0.1:{port}/0?timeout=0.5&prefix=later:&asyncio=yes", fallback="passthrough")
    store = cache.session.store
    assert isinstance(store, Later) and not store.reached and cache.session.aio is None
    store._retry_every, store._next = 0.2, time.monotonic() + 0.2  # the wait between tries, shortened for the test
    client = make_client(srv, cache)
    started = time.monotonic()
    for _ in range(3):
        assert chat(client, "early").choices[0].message.content == "echo: early"
    assert time.monotonic() - started < 1.5, "a call while the store is away does not wait for it each time"
    assert srv.count() == 3
    with RedisServer(port=port):
        deadline = time.monotonic() + 20
        while not store.reached and time.monotonic() < deadline:  # tried on a thread of its own
            chat(client, "early")  # passed through meanwhile, never waiting for the store
            time.sleep(0.05)
        assert store.reached
        assert cache.session.aio is not None  # an event loop's tasks now await the store, as its URL asks
        asked = srv.count()
        chat(client, "early")  # the store is reached: recorded
        assert srv.count() == asked + 1
        asked += 1
        chat(client, "early")
        assert srv.count() == asked and cache.stats()["hits"] == 1
        assert store.size()[0] == 1


def test_redis_going_down_mid_run_passes_through(srv: FakeLLMServer, redis_target: Any, caplog: pytest.LogCaptureFixture) -> None:
    from redis_server import RedisServer

    with RedisServer() as private:
        url = private.url + "?timeout=0.5&prefix=mid:"
        strict, lenient = LLMCache(url), LLMCache(url, fallback="passthrough")
        chat(make_client(srv, lenient), "before")
        private.kill()
        with caplog.at_level(logging.WARNING, logger="llm_cache"):
            assert chat(make_client(srv, lenient), "after").choices[0].message.content == "echo: after"
        assert any("passing the call through" in r.getMessage() for r in caplog.records)
        from llm_cache import StoreUnavailable

        with pytest.raises(StoreUnavailable):
            chat(make_client(srv, strict), "after")


@pytest.mark.parametrize("fallback", ["passthrough", "error"])
def test_redis_gone_while_the_api_answers(srv: FakeLLMServer, redis_target: Any, fallback: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """The answer paid for reaches the caller under passthrough (not stored, said); under
    error the write's StoreUnavailable is raised, as a lookup's is."""
    from redis_server import RedisServer

    from llm_cache import StoreUnavailable

    with RedisServer() as private:
        cache = LLMCache(private.url + "?timeout=0.5&prefix=gone:", fallback=fallback)

        class DiesMidway(httpx2.BaseTransport):
            inner = httpx2.HTTPTransport()

            def handle_request(self, request: httpx2.Request) -> httpx2.Response:
                response = self.inner.handle_request(request)
                private.kill()  # the API answered; the store is gone before the answer is kept
                return response

        client = openai.OpenAI(base_url=srv.openai_base_url, api_key="sk-lib-test-00000000", max_retries=0,
                               http_client=httpx2.Client(transport=cache.transport(DiesMidway())))
        with caplog.at_level(logging.WARNING, logger="llm_cache"):
            if fallback == "error":
                with pytest.raises(StoreUnavailable):
                    chat(client, "paid for")
                return
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": "paid for"}])
        assert raw.parse().choices[0].message.content == "echo: paid for"
        assert raw.headers["x-llm-cache-status"] == "miss"
        assert srv.count() == 1
        assert cache.stats()["not_stored_reasons"] == {"store unavailable": 1}
        assert any("the answer is passed on, not stored" in r.getMessage() for r in caplog.records)


def test_an_application_keeps_a_parsed_copy_of_every_cassette(
    srv: FakeLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An application, which restarts and reads (or warms) the same cassettes again, copies
    every one, small ones included, in CI too."""
    monkeypatch.setenv("CI", "true")
    cache = LLMCache("file://cassettes", root=tmp_path)
    chat(make_client(srv, cache), "a small answer")
    cache.close()
    [cassette] = (tmp_path / "cassettes").rglob("*.yaml")
    assert cassette.stat().st_size < 16 * 1024
    copies = list((tmp_path / "cassettes" / ".llm-cache" / "parsed").rglob("*.json"))
    assert [c.stem for c in copies] == [cassette.stem]


def test_the_default_transports_serve_an_httpx_client_as_well_as_an_httpx2_one(srv: FakeLLMServer) -> None:
    """cache.transport() wraps httpx2's transport by default; a plain httpx client sending
    through it gets httpx's instead (httpx2's refuses httpx's requests), sync and async."""
    cache = LLMCache("memory://")
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "plain httpx"}]}
    url = f"{srv.openai_base_url}/chat/completions"
    with httpx.Client(transport=cache.transport()) as client:
        statuses = [client.post(url, json=body).headers["x-llm-cache-status"] for _ in range(2)]
    assert statuses == ["miss", "hit"]

    async def twice() -> list[str]:
        async with httpx.AsyncClient(transport=cache.async_transport()) as client:
            other = {**body, "messages": [{"role": "user", "content": "async httpx"}]}
            return [(await client.post(url, json=other)).headers["x-llm-cache-status"] for _ in range(2)]

    assert asyncio.run(twice()) == ["miss", "hit"]
    assert srv.count() == 2
    # a transport given explicitly is not swapped: the error says what to give instead
    fix = r"give it an httpx transport, cache.transport\(httpx.HTTPTransport\(\)\)"
    with httpx.Client(transport=cache.transport(httpx2.HTTPTransport())) as client, pytest.raises(TypeError, match=fix):
        client.post(url, json=body)


@pytest.mark.parametrize("client_kind", ["sync", "async"])
def test_a_warning_points_at_the_applications_line(srv: FakeLLMServer, tmp_path: Path, client_kind: str) -> None:
    """A damaged cassette moved aside is told at the line of the application's call, not
    at the cache's (Python shows a warning once per location: at ours, one per process)."""
    cache = LLMCache("file://cassettes", root=tmp_path)
    chat(make_client(srv, cache), "damaged later")
    [path] = (tmp_path / "cassettes").rglob("*.yaml")
    path.write_text("not: [a cassette")
    again = LLMCache("file://cassettes", root=tmp_path)
    with pytest.warns(LLMCacheWarning, match="is unusable") as caught:
        if client_kind == "sync":
            chat(make_client(srv, again), "damaged later")
        else:
            async def call() -> None:
                client = openai.AsyncOpenAI(base_url=srv.openai_base_url, api_key="sk-lib-test-00000000",
                                            max_retries=0, http_client=httpx2.AsyncClient(transport=again.async_transport()))
                await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "damaged later"}])

            asyncio.run(call())
    [warning] = [w for w in caught if "is unusable" in str(w.message)]
    assert warning.filename == __file__, warning.filename
    assert srv.count() == 2  # recorded again


def test_a_warmed_embedding_as_the_readme_lists_it_is_what_the_sdk_asks(srv: FakeLLMServer, tmp_path: Path) -> None:
    """The README's warm file lists the embedding with encoding_format: base64, as the openai
    SDK sends it: the SDK's call after warming is a hit."""
    import re as regex

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = regex.search(r"- path: /embeddings\n.*?\n  json: (\{[^\n]*\})", readme, regex.S)
    assert block is not None
    listed = tmp_path / "common.yaml"
    listed.write_text(f"- path: /embeddings\n  json: {block.group(1)}\n")
    cache = LLMCache("memory://")
    assert cache.warm(listed, base_url=srv.openai_base_url).recorded == 1
    client = make_client(srv, cache)
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="opening hours")
    assert raw.headers["x-llm-cache-status"] == "hit" and srv.count() == 1


def test_warm_takes_a_timeout_for_an_api_that_hangs(tmp_path: Path) -> None:
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections are taken by the kernel and never answered
    try:
        listed = tmp_path / "common.jsonl"
        listed.write_text(json.dumps({"path": "/chat/completions", "json": {"model": "gpt-4o", "messages": []}}))
        cache = LLMCache("memory://")
        started = time.monotonic()
        report = cache.warm(listed, base_url=f"http://127.0.0.1:{silent.getsockname()[1]}/v1", timeout="0.3s")
        assert report.failed == 1 and report.recorded == 0
        assert time.monotonic() - started < 10, "each request gave up at its timeout, not at 60 s"
        with pytest.raises(ConfigError, match=r"warm\(timeout=...\) must be"):
            cache.warm(listed, base_url="http://127.0.0.1:9/v1", timeout="soon")
    finally:
        silent.close()
