"""The Redis store on a real Redis Cluster, beyond the shared contract.

The URL and the slot design; single flight (threads and processes, through
``LLMCache`` transports and ``@cached``), eviction, warming and the plugin on
the session's three-master cluster (tests/redis_cluster.py). A cluster's
failures (a master stalled or killed, a failover) and TLS are in
test_redis_cluster_failures.py.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fakeapi import FakeLLMServer
from redis_cluster import (
    ClusterTarget,
    cluster_port,
)
from test_store_contract import make_entry

from llm_cache import LLMCache
from llm_cache.cassette import dump_entry
from llm_cache.engine.session import CacheSession
from llm_cache.errors import ConfigError, StoreUnavailable
from llm_cache.stores import open_store
from llm_cache.stores.redis import RedisStore
from llm_cache.stores.redis_url import parse_store_url
from llm_cache.usage import Usage

# without redis-py these tests skip, unless LLM_CACHE_REQUIRE_REDIS=1 (then the import fails)
redis = importlib.import_module("redis") if os.environ.get("LLM_CACHE_REQUIRE_REDIS") == "1" else pytest.importorskip("redis")


def body(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}


def answer(response: Any) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


def entry_names(target: ClusterTarget) -> list[bytes]:
    """The names of the entries under the target's base."""
    names = target.keys()
    return [name for name in names if name.startswith(target.base.encode() + b"e:")]


def asker(cache: LLMCache, server: FakeLLMServer) -> Callable[[str], str]:
    """Ask ``text`` through the cache's transport; returns the answer's text."""
    client = httpx2.Client(transport=cache.transport(), timeout=30)
    return lambda text: answer(client.post(server.openai_base_url + "/chat/completions", json=body(text)))


# -- the URL ----------------------------------------------------------------------


def test_a_cluster_url_names_its_startup_nodes():
    parsed = parse_store_url(
        "redis+cluster://user:s3cret@10.0.0.1:7000,db.example,[::1]:7002/?prefix=p:&timeout=1.5&ssl_cert_reqs=none"
    )
    assert parsed.cluster and parsed.nodes == (("10.0.0.1", 7000), ("db.example", 6379), ("::1", 7002))
    assert (parsed.prefix, parsed.timeout) == ("p:", 1.5)
    assert parsed.target == "redis://user:s3cret@10.0.0.1:7000?ssl_cert_reqs=none"  # the rest goes to redis-py
    assert parsed.base == "redis+cluster://10.0.0.1:7000,db.example,[::1]:7002"  # locations: no password
    assert "s3cret" not in parsed.masked
    tls = parse_store_url("rediss+cluster://10.0.0.1:7000/0")
    assert tls.cluster and tls.target == "rediss://10.0.0.1:7000"
    single = parse_store_url("rediss://10.0.0.1:6380/2?prefix=q:")
    assert not single.cluster and single.target == "rediss://10.0.0.1:6380/2" and single.prefix == "q:"
    # an event loop's tasks await a server on another machine, not one on this machine (what
    # the URL asks for: a cluster store keeps its blocking client all the same)
    assert parsed.asyncio and tls.asyncio and single.asyncio
    local = ("redis://127.0.0.1:6379/0", "redis://localhost/0", "redis://[::1]:6379/0", "unix:///tmp/redis.sock",
             "redis+cluster://127.0.0.1:7000,127.0.0.1:7001/")
    assert not any(parse_store_url(url).asyncio for url in local)
    assert parse_store_url("redis+cluster://127.0.0.1:7000,10.0.0.2:7000/").asyncio  # one node elsewhere
    assert parse_store_url("redis://127.0.0.1:6379/0?asyncio=yes").asyncio  # a tunnel to a remote server
    blocking = parse_store_url("redis://10.0.0.1:6379/0?asyncio=no&client_name=app")
    assert not blocking.asyncio and blocking.target == "redis://10.0.0.1:6379/0?client_name=app"  # not redis-py's


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis+cluster://127.0.0.1:7000/3", "a cluster has one database"),
        ("redis+cluster://127.0.0.1:port/", "host:port for each cluster node"),
        ("redis+cluster://127.0.0.1:7000,,127.0.0.1:7001/", "host:port for each cluster node"),
        ("redis+cluster://127.0.0.1:7000/?prefix=a{b}:", "without '{' or '}'"),
        ("redis+cluster://127.0.0.1:7000/?prefix=", "non-empty"),
        ("rediss+cluster://127.0.0.1:7000/?timeout=-1", "positive"),
        ("redis+cluster://127.0.0.1:7000/?asyncio=maybe", "asyncio= auto, yes or no"),
        ("redis://127.0.0.1:6379/0?asyncio=", "asyncio= auto, yes or no"),
    ],
)
def test_a_bad_cluster_url_is_a_config_error_naming_the_setting(url, expected):
    with pytest.raises(ConfigError, match="--store") as caught:
        open_store(url, Path("."), setting="--store")
    assert expected in str(caught.value)


def test_no_cluster_listening_is_unavailable_fast_and_masked():
    ports = [cluster_port(), cluster_port()]
    url = f"redis+cluster://:s3cret@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/?timeout=1"
    start = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        RedisStore.from_url(url)
    assert time.monotonic() - start < 3
    assert "s3cret" not in str(caught.value) and caught.value.url == url.replace("s3cret", "***")
    assert f"127.0.0.1:{ports[0]}" in str(caught.value)


# -- the slot design ---------------------------------------------------------------


def test_every_key_of_a_store_is_in_its_prefixs_slot(cluster_target: ClusterTarget):
    client = cluster_target.client()
    store = cluster_target.store()
    a, b = make_entry("a"), make_entry("b")
    store.put(a)
    store.put(b)
    store.touch({a.key: Usage(time.time(), 1)})
    client.set(cluster_target.base + "e:" + b.key, b"garbage: [")
    assert store.quarantine(b.key, b.model_version) == f"{store._base}/{cluster_target.base}corrupt:{b.key}"
    lock = store.lock(a.key)
    lock.acquire(timeout=1)
    try:
        names = cluster_target.keys()
    finally:
        lock.release()
    assert len(names) == 7  # entry, quarantined, meta, lru, lfu, fifo, lock
    slot = client.keyslot(cluster_target.prefix)
    assert {client.keyslot(name) for name in names} == {slot}
    assert all(name.startswith(cluster_target.base.encode()) for name in names)


def test_a_single_server_store_keeps_its_layout(redis_target: Any):
    """What an earlier version wrote (no hash tag) is read as it is: no migration."""
    client = redis_target.client()
    P = redis_target.prefix
    entry = make_entry()
    text = dump_entry(entry).encode()
    recorded = f"{entry.recorded_at.timestamp():.6f}"
    client.set(P + "e:" + entry.key, text)
    client.hset(P + "meta", entry.key, f"{entry.model_version}\t{recorded}\t{len(text)}")
    for zset, score in (("fifo", float(recorded)), ("lru", float(recorded) + 5), ("lfu", 3)):
        client.zadd(P + zset, {entry.key: score})
    store = redis_target.store()
    assert store.get(entry.key, entry.model_version) == entry
    (meta,) = store.scan()
    assert (meta.key, meta.recorded_at, meta.size) == (entry.key, entry.recorded_at, len(text))
    assert store.usage()[entry.key] == Usage(pytest.approx(float(recorded) + 5), 3)
    store.delete(meta)
    assert redis_target.keys() == []


# -- single flight, eviction, warming ----------------------------------------------


def test_caches_in_threads_make_one_upstream_call(fake_api: FakeLLMServer, cluster_url: str):
    caches = [LLMCache(cluster_url) for _ in range(8)]  # eight sessions: only the store's lock joins them
    asks = [asker(cache, fake_api) for cache in caches]
    start = threading.Barrier(len(asks))

    def ask(index: int) -> str:
        start.wait(10)
        return asks[index]("the same question")

    with ThreadPoolExecutor(len(asks)) as pool:
        answers = set(pool.map(ask, range(len(asks))))
    assert answers == {"echo: the same question"}
    assert fake_api.count() == 1
    assert sum(cache.stats()["recorded"] for cache in caches) == 1


def test_event_loops_on_the_cluster_make_one_upstream_call(fake_api: FakeLLMServer, cluster_target: ClusterTarget):
    """Tasks of two event loops in two threads, each loop with its own session, record one
    answer on the cluster and serve it. A cluster keeps the blocking client even when asked
    to await (``asyncio=yes``): redis.asyncio's cluster transactions run each queued
    command in a thread and a loop of their own, which holds the caller's loop anyway."""
    import asyncio

    url = cluster_target.store_url + "&asyncio=yes"

    def loop_of_tasks() -> set[str]:
        store = RedisStore.from_url(url)
        assert store.aio is None
        cache = LLMCache(store)

        async def main() -> set[str]:
            async with httpx2.AsyncClient(transport=cache.async_transport(), timeout=30) as client:
                asks = [client.post(fake_api.openai_base_url + "/chat/completions", json=body("the same question"))
                        for _ in range(8)]
                return {answer(reply) for reply in await asyncio.gather(*asks)}

        try:
            return asyncio.run(main())
        finally:
            cache.close()

    with ThreadPoolExecutor(2) as pool:
        answers = set().union(*pool.map(lambda _: loop_of_tasks(), range(2)))
    assert answers == {"echo: the same question"}
    assert fake_api.count() == 1
    assert len(entry_names(cluster_target)) == 1


def test_cached_functions_in_threads_compute_once(cluster_url: str):
    calls: list[str] = []

    def make(cache: LLMCache) -> Callable[[str], Any]:
        @cache.cached(model_version="summary-v1")
        def summarize(text: str) -> dict[str, str]:
            calls.append(text)
            time.sleep(0.05)  # a slow computation: the others wait on its lock
            return {"summary": text.upper()}

        return summarize

    functions = [make(LLMCache(cluster_url)) for _ in range(6)]
    start = threading.Barrier(len(functions))

    def run(function: Callable[[str], Any]) -> Any:
        start.wait(10)
        return function("one document")

    with ThreadPoolExecutor(len(functions)) as pool:
        results = list(pool.map(run, functions))
    assert results == [{"summary": "ONE DOCUMENT"}] * len(functions)
    assert calls == ["one document"]


def test_processes_make_one_upstream_call(fake_api: FakeLLMServer, cluster_url: str, tmp_path: Path):
    script = textwrap.dedent(f"""
        import sys, httpx2
        from llm_cache import LLMCache
        cache = LLMCache({cluster_url!r}, root={str(tmp_path)!r})
        client = httpx2.Client(transport=cache.transport(), timeout=60)
        sys.stdin.readline()  # start together
        reply = client.post({fake_api.openai_base_url + "/chat/completions"!r}, json={body("procs")!r})
        print(reply.json()["choices"][0]["message"]["content"])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    try:
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = {p.communicate(timeout=60)[0].strip() for p in procs}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert outputs == {"echo: procs"}
    assert fake_api.count() == 1


def test_a_cap_evicts_on_the_cluster_as_on_one_server(fake_api: FakeLLMServer, cluster_target: ClusterTarget):
    url = cluster_target.store_url
    first = LLMCache(url, max_entries=2, eviction="fifo")
    ask = asker(first, fake_api)
    for text in "abcd":
        ask(text)
    assert len(entry_names(cluster_target)) == 4
    first.close()  # an application's cache evicts what it used too: the two oldest recordings go
    client = cluster_target.client()
    assert len(entry_names(cluster_target)) == 2
    assert client.zcard(cluster_target.base + "fifo") == client.hlen(cluster_target.base + "meta") == 2
    later = LLMCache(url, max_entries=2, eviction="fifo")
    assert [asker(later, fake_api)(text) for text in "cd"] == ["echo: c", "echo: d"]
    assert fake_api.count() == 4  # c and d were the ones kept
    assert asker(later, fake_api)("a") == "echo: a" and fake_api.count() == 5
    assert later.evict() == 1
    assert len(entry_names(cluster_target)) == 2


def test_warming_on_the_cluster(fake_api: FakeLLMServer, cluster_url: str, tmp_path: Path):
    requests = tmp_path / "common.jsonl"
    requests.write_text("\n".join(json.dumps({"path": "/chat/completions", "json": body(f"q{i}")}) for i in range(3)))
    cache = LLMCache(cluster_url)
    report = cache.warm(requests, base_url=fake_api.openai_base_url)
    assert (report.total, report.recorded, report.fresh, report.failed) == (3, 3, 0, 0)
    again = LLMCache(cluster_url).warm(requests, base_url=fake_api.openai_base_url)
    assert (again.recorded, again.fresh) == (0, 3)
    assert fake_api.count() == 3
    # a session warmed from the cluster (what --llm-cache-warm does) holds the three in memory
    settings = dataclasses.replace(cache.session.settings, warm=())
    session = CacheSession(settings, store=open_store(cluster_url, tmp_path))
    session.warm()
    assert session.stats.warmed == 3
    session.close()


# -- the plugin -------------------------------------------------------------------------

PLUGIN_TESTS = "from conftest import chat\n" + "\n".join(
    f"def test_{i}(client, llm_cache, save):\n    save('c{i}', chat(client, 'cluster question {i % 3}').choices[0].message.content)\n"
    for i in range(6)
)


def test_the_plugin_records_replays_and_warms_on_the_cluster(project: Any, cluster_target: ClusterTarget) -> None:
    project.pytester.makepyfile(test_c=PLUGIN_TESTS)
    store = f"--llm-cache-store={cluster_target.store_url}"
    result = project.run("--llm-cache=record", store)
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines([f"mode: record   store: {cluster_target.store_url} (3 entries, * KB)",
                                 "hits: 3   misses: 0   recorded: 3*"])
    assert project.files() == []  # nothing on disk
    assert project.server.count() == 3
    names = cluster_target.keys()
    assert len(entry_names(cluster_target)) == 3
    assert all(name.startswith(cluster_target.base.encode()) for name in names)

    project.clear_results()
    project.run("--llm-cache=replay", store).assert_outcomes(passed=6)
    assert project.server.count() == 3  # replayed: nothing went upstream
    assert {project.result(f"c{i}") for i in range(6)} == {f"echo: cluster question {i}" for i in range(3)}

    result = project.run("--llm-cache=replay", store, "--llm-cache-warm=all")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["warmed: 3 entries in * s"])
    assert project.server.count() == 3


def test_the_cli_reads_the_cluster(project: Any, cluster_target: ClusterTarget) -> None:
    import json
    import subprocess
    import sys

    project.pytester.makepyfile(test_c=PLUGIN_TESTS)
    project.run("--llm-cache=record", f"--llm-cache-store={cluster_target.store_url}").assert_outcomes(passed=6)
    listed = subprocess.run([sys.executable, "-m", "llm_cache.cli", "ls", "--json", "--store", cluster_target.store_url],
                            capture_output=True, text=True, check=False)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 3
    verified = subprocess.run([sys.executable, "-m", "llm_cache.cli", "verify", "--store", cluster_target.store_url],
                              capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "3 cassettes checked, all sound" in verified.stdout
