"""The Redis store beyond the shared contract: layout, expiry, failures, locks, the URL.

Tests that break a server (kill it, stall it, require a password) use a
private one; the others share the session's server, each under its own prefix.
Those taking ``target`` run twice: on the server and on the session's cluster
(tests/redis_cluster.py), where every key name begins with ``{prefix}``.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from redis_cluster import cluster_target, redis_cluster  # noqa: F401
from redis_server import RedisServer, free_port, redis_server, redis_target, require_redis_server  # noqa: F401
from test_store_contract import make_entry

from llm_cache.errors import ConfigError, StoreUnavailable
from llm_cache.usage import Usage

# without redis-py these tests skip, unless LLM_CACHE_REQUIRE_REDIS=1 (then the import fails)
redis = importlib.import_module("redis") if os.environ.get("LLM_CACHE_REQUIRE_REDIS") == "1" else pytest.importorskip("redis")

from llm_cache.stores import open_store  # noqa: E402
from llm_cache.stores.redis import RedisStore, mask_url  # noqa: E402


def _now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture(params=["server", "cluster"])
def target(request: pytest.FixtureRequest) -> Any:
    """This test's prefix on the session's server, then on the session's cluster."""
    return request.getfixturevalue("redis_target" if request.param == "server" else "cluster_target")


def base(target: Any) -> str:
    """What every key name of the target's store begins with: the prefix, ``{prefix}`` on a cluster."""
    return getattr(target, "base", target.prefix)


def everything(target: Any, client: Any) -> set[bytes]:
    """Every key on the server, or on every master of the cluster."""
    if hasattr(target, "cluster"):
        return set(client.keys(target_nodes=client.PRIMARIES))
    return set(client.keys())


def where(target: Any) -> str:
    """What the target's store's locations begin with."""
    if hasattr(target, "cluster"):
        return target.url.rstrip("/")
    return f"redis://127.0.0.1:{target.server.port}/0"


@pytest.fixture(scope="module")
def private_server() -> Iterator[RedisServer]:
    """A server of this module's own, to kill and stall (DEBUG allowed from loopback)."""
    binary = require_redis_server()
    with RedisServer(binary=binary, extra_args=("--enable-debug-command", "local")) as server:
        yield server


@pytest.fixture
def server(private_server: RedisServer) -> RedisServer:
    if not private_server.running:
        private_server.start()
    return private_server


# -- layout ---------------------------------------------------------------------


def test_every_key_is_under_the_prefix(target):
    client = target.client()
    before = everything(target, client)
    store = target.store(ttl=timedelta(days=30))
    P = base(target)
    a, b = make_entry("a", recorded_at=_now()), make_entry("b", recorded_at=_now())
    store.put(a)
    store.put(b)
    store.touch({a.key: Usage(time.time(), 2)})
    client.set(P + "e:" + b.key, b"garbage: [")
    store.quarantine(b.key, b.model_version)
    lock = store.lock(a.key)
    lock.acquire(timeout=1)
    try:
        new = {k.decode() for k in everything(target, client) - before}
    finally:
        lock.release()
    assert new == {
        P + "e:" + a.key, P + "corrupt:" + b.key, P + "meta", P + "lru", P + "lfu", P + "fifo", P + "lock:" + a.key,
    }
    assert P + "lock:" + a.key not in {k.decode() for k in everything(target, client)}  # released: gone


def test_index_rows(target):
    store = target.store()
    client = target.client()
    P = base(target)
    entry = make_entry()
    store.put(entry)
    size = len(client.get(P + "e:" + entry.key))
    row = client.hget(P + "meta", entry.key).decode()
    assert row == f"{entry.model_version}\t{entry.recorded_at.timestamp():.6f}\t{size}"
    assert client.zscore(P + "fifo", entry.key) == pytest.approx(entry.recorded_at.timestamp())
    assert client.zscore(P + "lru", entry.key) == pytest.approx(entry.recorded_at.timestamp())
    assert client.zscore(P + "lfu", entry.key) == 0
    assert client.pttl(P + "e:" + entry.key) == -1  # no ttl: no expiry
    # never used: last use is the recording, no hits
    assert store.usage() == {entry.key: Usage(pytest.approx(entry.recorded_at.timestamp()), 0)}


def test_location_names_server_db_and_key(target):
    store = target.store()
    entry = make_entry()
    expected = f"{where(target)}/{base(target)}e:{entry.key}"
    assert store.put(entry) == expected == store.location(entry.key, entry.model_version)


def test_two_prefixes_do_not_see_each_other(target):
    one = target.store()
    two = RedisStore.from_url(f"{target.url}?prefix={target.prefix[:-1]}-two:")
    try:
        a, b = make_entry("a"), make_entry("b")
        one.put(a)
        two.put(b)
        assert [m.key for m in one.scan()] == [a.key]
        assert [m.key for m in two.scan()] == [b.key]
        assert one.get(b.key, b.model_version) is None
        assert one.size()[0] == two.size()[0] == 1
        assert one.clear() == 1
        assert two.get(b.key, b.model_version) == b
        assert two.size()[0] == 1
    finally:
        two.clear()
        two.close()


def test_clear_skips_held_locks_and_counts_entries_only(target):
    store = target.store()
    client = target.client()
    a, b = make_entry("a"), make_entry("b")
    store.put(a)
    store.put(b)
    client.set(base(target) + "e:" + b.key, b"broken: [")
    store.quarantine(b.key, b.model_version)
    lock = store.lock(a.key)
    lock.acquire(timeout=1)
    try:
        assert store.clear() == 1
        left = target.keys()
        assert [k.decode() for k in left] == [base(target) + "lock:" + a.key]
    finally:
        lock.release()
    assert target.keys() == []


def test_put_is_one_transaction(target, monkeypatch):
    store = target.store()
    client = target.client()
    P = base(target)
    calls = []
    real = store.client.pipeline

    def spy(*args, **kwargs):
        calls.append(kwargs.get("transaction", args[0] if args else True))
        return real(*args, **kwargs)

    monkeypatch.setattr(store.client, "pipeline", spy)
    entry = make_entry()
    store.put(entry)
    assert calls == [True]
    assert client.exists(P + "e:" + entry.key) and client.hexists(P + "meta", entry.key)
    meta = next(iter(store.scan()))
    calls.clear()
    store.delete(meta)
    assert calls[-1] is True
    assert not client.exists(P + "e:" + entry.key) and not client.hexists(P + "meta", entry.key)
    for zset in ("lru", "lfu", "fifo"):
        assert client.zscore(P + zset, entry.key) is None


def test_many_entries_in_batches(target):
    store = target.store()
    entries = [make_entry(str(i), model="gpt-4o" if i % 2 else "gpt-4o-mini") for i in range(250)]
    for entry in entries:
        store.put(entry)
    assert store.size()[0] == 250
    assert len(list(store.entries("gpt-4o"))) == 125
    assert len(list(store.entries(limit=120))) == 120
    assert store.clear() == 250


# -- expiry ---------------------------------------------------------------------


def test_entry_expires_in_redis_and_scan_drops_its_rows(target):
    store = target.store(ttl=timedelta(seconds=1), grace=timedelta(0))
    client = target.client()
    P = base(target)
    short, kept = make_entry("short", recorded_at=_now()), make_entry("kept", recorded_at=_now() + timedelta(hours=1))
    store.put(short)
    store.put(kept)
    assert 0 < client.pttl(P + "e:" + short.key) <= 1000
    start = time.monotonic()
    while client.exists(P + "e:" + short.key) and time.monotonic() - start < 3:
        time.sleep(0.05)
    gone_after = time.monotonic() - start
    assert not client.exists(P + "e:" + short.key), "not expired within 3 s"
    assert 0.5 < gone_after < 2
    assert client.hexists(P + "meta", short.key)  # the index still lists it...
    assert [m.key for m in store.scan()] == [kept.key]  # ...until a scan
    assert not client.hexists(P + "meta", short.key)
    for zset in ("lru", "lfu", "fifo"):
        assert client.zscore(P + zset, short.key) is None
    assert store.get(short.key, short.model_version) is None
    assert store.size() == (1, len(client.get(P + "e:" + kept.key)))


def test_expiry_is_set_from_recorded_at(target):
    store = target.store(ttl=timedelta(hours=2))
    client = target.client()
    entry = make_entry(recorded_at=_now() - timedelta(hours=1))
    store.put(entry)
    pttl = client.pttl(base(target) + "e:" + entry.key)
    assert abs(pttl - 3_600_000) < 10_000


def test_grace_extends_the_expiry(target):
    client = target.client()
    P = base(target)
    old = make_entry(recorded_at=_now() - timedelta(hours=2))
    with_grace = target.store(ttl=timedelta(hours=1), grace=timedelta(hours=2))
    with_grace.put(old)
    assert abs(client.pttl(P + "e:" + old.key) - 3_600_000) < 10_000
    assert with_grace.get(old.key, old.model_version) == old  # stale but kept: the session decides
    with_grace.clear()
    # without the grace it is past its expiry already: stored, and dropped by Redis at once
    without = target.store(ttl=timedelta(hours=1))
    without.put(old)
    assert without.get(old.key, old.model_version) is None
    assert list(without.scan()) == []
    assert client.hlen(P + "meta") == 0


def test_grace_from_the_url(redis_target):
    store = open_store(redis_target.store_url + "&grace=1h&timeout=0.7", Path("."), ttl=timedelta(hours=1))
    try:
        assert isinstance(store, RedisStore)
        assert store.prefix == redis_target.prefix
        assert store.grace == timedelta(hours=1) and store.ttl == timedelta(hours=1)
        assert store.timeout == 0.7
        kwargs = store.client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.7
        entry = make_entry(recorded_at=_now())
        store.put(entry)
        assert abs(redis_target.client().pttl(redis_target.prefix + "e:" + entry.key) - 7_200_000) < 10_000
    finally:
        store.clear()
        store.close()


def test_other_query_parameters_go_to_redis(redis_target):
    store = RedisStore.from_url(redis_target.store_url + "&client_name=llm-cache-test")
    try:
        assert store.client.client_getname() in (b"llm-cache-test", "llm-cache-test")
    finally:
        store.close()


@pytest.mark.parametrize(
    "url, says",
    [
        ("redis://127.0.0.1:{port}/0?bogus=1", "query parameters redis-py takes (it does not take 'bogus')"),
        ("rediss://127.0.0.1:{port}/0?ssl_cert_reqs=maybe", "Invalid SSL Certificate Requirements Flag: maybe"),
        ("redis+cluster://127.0.0.1:{port},127.0.0.1:{port}/?bogus=1", "it does not take 'bogus'"),
        ("redis://127.0.0.1:{port}/abc", "/DB, a database number"),
        # redis-py reads "Pa" as the port: its words would quote the password
        ("redis://:Pa#ss99secret@127.0.0.1:{port}/0", "percent-encode '#', '?', '/' and '@' in a password"),
        ("redis://:Pa/ss99secret@127.0.0.1:{port}/0", "percent-encode"),
    ],
)
def test_a_store_url_redis_py_would_refuse_later_is_a_config_error_now(url, says):
    """Refused before any connection, naming the setting and the fix: not a TypeError at
    the first command (an INTERNALERROR under pytest), nor a silent database 0."""
    url = url.format(port=free_port())
    with pytest.raises(ConfigError) as caught:
        RedisStore.from_url(url)
    assert says in str(caught.value)
    assert "ss99secret" not in str(caught.value) and "'Pa'" not in str(caught.value)


def test_empty_prefix_is_refused(target):
    with pytest.raises(ConfigError, match="prefix"):
        RedisStore.from_url(f"{target.url}?prefix=")
    with pytest.raises(ConfigError, match="timeout"):
        RedisStore.from_url(f"{target.url}?timeout=soon")


# -- usage ----------------------------------------------------------------------


def test_touch_gives_no_row_to_a_key_not_stored(target):
    store = target.store()
    entry = make_entry()
    store.put(entry)
    meta = next(iter(store.scan()))
    store.delete(meta)
    assert store.touch({entry.key: Usage(time.time(), 3)}) == {}
    assert store.usage() == {}


def test_touch_keeps_the_latest_use(target):
    store = target.store()
    entry = make_entry()
    store.put(entry)
    late = entry.recorded_at.timestamp() + 1000
    store.touch({entry.key: Usage(late, 1)})
    store.touch({entry.key: Usage(late - 500, 1)})
    store.put(entry)  # recorded again: keeps its hits and its later use
    assert store.usage()[entry.key] == Usage(pytest.approx(late), 2)


# -- unreachable, slow and killed servers -----------------------------------------


def test_nothing_listening_fails_fast_naming_the_url():
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0?timeout=1"
    start = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        RedisStore.from_url(url)
    elapsed = time.monotonic() - start
    assert elapsed < 1 + 1.5
    assert caught.value.url == url
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert caught.value.timeout == 1


def test_a_server_that_never_answers_times_out():
    with socket.socket() as listener:  # accepts connections (the kernel does), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match="timed out") as caught:
            RedisStore.from_url(f"redis://127.0.0.1:{port}/0?timeout=0.5")
        elapsed = time.monotonic() - start
    assert 0.4 < elapsed < 0.5 + 1.5
    assert "within 0.5 s" in str(caught.value)


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://user:s3cret@127.0.0.1:{port}/0", "redis://user:***@127.0.0.1:{port}/0"),
        ("redis://:s3cret@127.0.0.1:{port}/0", "redis://:***@127.0.0.1:{port}/0"),
        ("redis://127.0.0.1:{port}/0?password=s3cret", "redis://127.0.0.1:{port}/0?password=***"),
    ],
)
def test_password_is_masked(url, shown):
    port = free_port()
    with pytest.raises(StoreUnavailable) as caught:
        RedisStore.from_url(url.format(port=port))
    assert "s3cret" not in str(caught.value) and "s3cret" not in repr(caught.value.args)
    assert caught.value.url == shown.format(port=port)
    assert mask_url(url.format(port=port)) == shown.format(port=port)


def test_auth_failure_is_unavailable_and_location_has_no_password():
    binary = require_redis_server()
    with RedisServer(binary=binary, extra_args=("--requirepass", "s3cret")) as server:
        base = f"127.0.0.1:{server.port}/0"
        for url in (f"redis://{base}", f"redis://:wrong@{base}"):
            with pytest.raises(StoreUnavailable) as caught:
                RedisStore.from_url(url)
            assert "s3cret" not in str(caught.value)
            assert "auth" in caught.value.reason.lower() or "wrongpass" in caught.value.reason.lower()
        store = RedisStore.from_url(f"redis://:s3cret@{base}?prefix=t:")
        try:
            location = store.put(make_entry())
            assert "s3cret" not in location and "s3cret" not in repr(store)
            assert location.startswith(f"redis://{base}/t:e:")
        finally:
            store.close()


def test_killed_server_is_unavailable_fast_then_back_after_restart(server):
    store = RedisStore.from_url(server.url + "?timeout=1&prefix=kill:")
    try:
        entry = make_entry()
        store.put(entry)
        assert store.get(entry.key, entry.model_version) == entry
        server.kill()
        for call in (
            lambda: store.get(entry.key, entry.model_version),
            lambda: store.put(entry),
            lambda: list(store.scan()),
            lambda: store.size(),
            lambda: store.lock(entry.key).acquire(timeout=1),
        ):
            start = time.monotonic()
            with pytest.raises(StoreUnavailable) as caught:
                call()
            assert time.monotonic() - start < 1.5
            assert caught.value.url == server.url + "?timeout=1&prefix=kill:"
        server.restart()
        assert store.get(entry.key, entry.model_version) is None  # nothing was saved
        store.put(entry)
        assert store.get(entry.key, entry.model_version) == entry
    finally:
        store.close()
        if not server.running:
            server.start()


def test_stalled_server_times_out(server):
    store = RedisStore.from_url(server.url + "?timeout=0.5&prefix=slow:")
    entry = make_entry()
    store.put(entry)
    sleeper = redis.Redis.from_url(server.url, socket_timeout=10)
    thread = threading.Thread(target=lambda: sleeper.execute_command("DEBUG", "SLEEP", "2"))
    try:
        thread.start()
        time.sleep(0.2)  # the server is asleep now
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match="timed out") as caught:
            store.get(entry.key, entry.model_version)
        elapsed = time.monotonic() - start
        assert elapsed < 2
        assert caught.value.timeout == 0.5
    finally:
        thread.join(10)
        sleeper.close()
    assert store.get(entry.key, entry.model_version) == entry  # awake again: works
    store.clear()
    store.close()


# -- locks --------------------------------------------------------------------------


def test_lock_of_a_vanished_holder_expires(target):
    key = make_entry().key
    # the other store first: connecting to a cluster on a busy machine can take longer
    # than the lock's second of life
    other = target.store(lock_expiry=1)
    lock = other.lock(key)
    holder = target.store(lock_expiry=1)
    held = holder.lock(key)
    held.acquire(timeout=1)
    taken_at = time.monotonic()
    holder.close()  # the holder disappears without releasing
    with pytest.raises(TimeoutError):
        lock.acquire(timeout=0.2)
    lock.acquire(timeout=3)
    waited = time.monotonic() - taken_at
    assert 0.5 < waited < 2.5
    held.release()  # too late: not an error, and it does not free the new holder's lock
    with pytest.raises(TimeoutError):
        other.lock(key).acquire(timeout=0.1)
    lock.release()
    other.lock(key).acquire(timeout=0.1)


def test_lock_waits_forever_by_default(target):
    store = target.store()
    key = make_entry().key
    first = store.lock(key)
    first.acquire()
    threading.Timer(0.3, first.release).start()
    start = time.monotonic()
    second = store.lock(key)
    second.acquire()  # -1: until released
    assert 0.2 < time.monotonic() - start < 2
    second.release()


# -- without redis-py ---------------------------------------------------------------


def test_without_redis_py_the_module_imports_and_construction_says_how_to_install(monkeypatch):
    import llm_cache.stores
    import llm_cache.stores.redis  # noqa: F401 - loaded lazily: make sure there is one to put back

    monkeypatch.setattr(llm_cache.stores, "redis", sys.modules["llm_cache.stores.redis"], raising=False)
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "llm_cache.stores.redis")
    module = importlib.import_module("llm_cache.stores.redis")
    with pytest.raises(ImportError, match=r"pip install 'pytest-llm-cache\[redis\]'"):
        module.RedisStore(object())
    with pytest.raises(ImportError, match=r"pip install 'pytest-llm-cache\[redis\]'"):
        module.RedisStore.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(ImportError, match=r"pip install 'pytest-llm-cache\[redis\]'"):
        open_store("redis://127.0.0.1:1/0", Path("."))


def test_a_damaged_index_row_is_listed_as_unreadable(target):
    store = target.store()
    client = target.client()
    entry = make_entry()
    store.put(entry)
    client.hset(base(target) + "meta", entry.key, b"no tabs here")
    (meta,) = store.scan()
    assert (meta.key, meta.recorded_at) == (entry.key, None)
    assert store.get(entry.key, entry.model_version) == entry
    store.delete(meta)
    assert list(store.scan()) == [] and store.get(entry.key, entry.model_version) is None
