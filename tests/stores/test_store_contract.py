"""What every store promises (stores/protocol.py), checked on each: file, memory, Redis and Redis Cluster.

The Redis case runs on the session's redis-server (tests/redis_server.py), the
cluster case on the session's three-master cluster (tests/redis_cluster.py),
each with a prefix of its own; they are skipped where there is no redis-server,
unless LLM_CACHE_REQUIRE_REDIS=1.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from redis_server import redis_server, redis_target  # noqa: F401

from llm_cache.cassette import Entry, dump_entry, encode_body
from llm_cache.errors import CassetteError
from llm_cache.key import KeyRules, make_key
from llm_cache.stores.files import FileStore
from llm_cache.stores.memory import MemoryStore
from llm_cache.stores.protocol import EntryMeta
from llm_cache.usage import Usage

RECORDED = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)


def make_entry(
    text: str = "hello", model: str = "gpt-4o", answer: str = "hi", recorded_at: datetime = RECORDED
) -> Entry:
    """An entry as the session records one: real key, bodies encoded the way they are stored."""
    raw = json.dumps({"model": model, "messages": [{"role": "user", "content": text}]}).encode()
    rk = make_key("POST", "https://api.example.test/v1/chat/completions", raw, {}, KeyRules())
    response = json.dumps({"model": model + "-2024-08-06", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": answer}}]}).encode()
    return Entry(
        key=rk.key, recorded_at=recorded_at, model=model, model_version=rk.model_version,
        method="POST", path=rk.path, query=[], request_headers={"content-type": "application/json"},
        request_body=encode_body(raw, "application/json"), status=200,
        response_headers={"content-type": "application/json"},
        response_body=encode_body(response, "application/json"),
        response_model=model + "-2024-08-06", usage={"input_tokens": 3, "output_tokens": 4},
    )


@dataclass
class Case:
    """A store under test, and ways to reach around it into its backend."""

    name: str
    store: Any
    # write raw text where the store keeps ``key`` (None: the backend cannot hold a corrupt entry)
    corrupt: Callable[[str, str, str], None] | None
    # put something of the backend's outside this store; returns a check that it is still there
    outside: Callable[[], Callable[[], bool]]
    # another store on the same backend (a sibling directory, another prefix)
    sibling: Callable[[], Any]


def _file_case(tmp_path: Path) -> Case:
    store = FileStore(tmp_path / "store")

    def corrupt(key: str, model_version: str, text: str) -> None:
        path = Path(store.location(key, model_version))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def outside() -> Callable[[], bool]:
        stray = tmp_path / "outside.yaml"
        stray.write_text(dump_entry(make_entry("outside")))
        return stray.exists

    return Case("file", store, corrupt, outside, lambda: FileStore(tmp_path / "sibling"))


def _memory_case() -> Case:
    def outside() -> Callable[[], bool]:
        return lambda: True

    return Case("memory", MemoryStore(), None, outside, MemoryStore)


def _redis_case(request: pytest.FixtureRequest) -> Case:
    target = request.getfixturevalue("redis_target")
    store = target.store()
    client = target.client()

    def corrupt(key: str, model_version: str, text: str) -> None:
        client.set(target.prefix + "e:" + key, text.encode())

    def outside() -> Callable[[], bool]:
        name = "llm-cache-contract-outside:" + target.prefix
        client.set(name, b"not ours")
        request.addfinalizer(lambda: client.delete(name))
        return lambda: client.get(name) == b"not ours"

    def sibling() -> Any:
        from llm_cache.stores.redis import RedisStore

        other = RedisStore.from_url(f"{target.url}?prefix={target.prefix}sibling:")
        request.addfinalizer(lambda: (other.clear(), other.close()))
        return other

    return Case("redis", store, corrupt, outside, sibling)


def _cluster_case(request: pytest.FixtureRequest) -> Case:
    target = request.getfixturevalue("cluster_target")
    store = target.store()
    client = target.client()

    def corrupt(key: str, model_version: str, text: str) -> None:
        client.set(target.base + "e:" + key, text.encode())

    def outside() -> Callable[[], bool]:
        # in the store's own hash slot, and in another: neither is the store's
        names = [target.base + "outside", "llm-cache-contract-outside:" + target.prefix]
        for name in names:
            client.set(name, b"not ours")
        request.addfinalizer(lambda: client.delete(*names))
        return lambda: all(client.get(name) == b"not ours" for name in names)

    def sibling() -> Any:
        from llm_cache.stores.redis import RedisStore

        other = RedisStore.from_url(f"{target.url}?prefix={target.prefix}sibling:")
        request.addfinalizer(lambda: (other.clear(), other.close()))
        return other

    return Case("redis-cluster", store, corrupt, outside, sibling)


@pytest.fixture(params=["file", "memory", "redis", "redis-cluster"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    if request.param == "file":
        made = _file_case(tmp_path)
    elif request.param == "memory":
        made = _memory_case()
    elif request.param == "redis":
        made = _redis_case(request)
    else:
        made = _cluster_case(request)
    try:
        yield made
    finally:
        made.store.close()


@pytest.fixture
def store(case: Case) -> Any:
    return case.store


# -- entries ------------------------------------------------------------------


def test_put_then_get_round_trips(store):
    entry = make_entry()
    location = store.put(entry)
    assert location == store.location(entry.key, entry.model_version)
    got = store.get(entry.key, entry.model_version)
    assert got == entry
    assert got.recorded_at == RECORDED
    assert got.response_bytes() == entry.response_bytes()


def test_put_with_text_given(store):
    entry = make_entry()
    store.put(entry, dump_entry(entry))
    assert store.get(entry.key, entry.model_version) == entry


def test_get_missing_is_none(store):
    entry = make_entry()
    assert store.get(entry.key, entry.model_version) is None


def test_put_replaces(store):
    old, new = make_entry(answer="old"), make_entry(answer="new", recorded_at=RECORDED + timedelta(hours=1))
    assert old.key == new.key
    store.put(old)
    store.put(new)
    got = store.get(new.key, new.model_version)
    assert got == new and got.recorded_at == new.recorded_at
    assert store.size() == (1, len(dump_entry(new).encode()))
    assert [m.recorded_at for m in store.scan()] == [new.recorded_at]


def test_location_is_stable_and_distinct_per_key(store):
    a, b = make_entry("a"), make_entry("b")
    before = store.location(a.key, a.model_version)
    assert store.put(a) == before == store.location(a.key, a.model_version)
    assert store.put(b) == store.location(b.key, b.model_version) != before


def test_delete_removes_and_is_idempotent(store):
    a, b = make_entry("a"), make_entry("b")
    store.put(a)
    store.put(b)
    meta = next(m for m in store.scan() if m.key == a.key)
    store.delete(meta)
    assert store.get(a.key, a.model_version) is None
    assert store.get(b.key, b.model_version) == b
    assert [m.key for m in store.scan()] == [b.key]
    store.delete(meta)  # a missing entry is not an error
    assert store.size()[0] == 1


def test_scan_gives_metadata(store):
    entries = [make_entry("a"), make_entry("b", model="gpt-4o-mini"), make_entry("c", recorded_at=RECORDED - timedelta(days=3))]
    for entry in entries:
        store.put(entry)
    metas = {m.key: m for m in store.scan()}
    assert set(metas) == {e.key for e in entries}
    for entry in entries:
        meta = metas[entry.key]
        assert isinstance(meta, EntryMeta)
        assert meta.model_version == entry.model_version
        assert meta.recorded_at == entry.recorded_at
        assert meta.recorded_at.tzinfo is not None
        assert meta.size == len(dump_entry(entry).encode()) > 0
        assert meta.location == store.location(entry.key, entry.model_version)


def test_entries_filter_by_model_version_and_limit(store):
    a, b, c = make_entry("a"), make_entry("b"), make_entry("c", model="gpt-4o-mini")
    for entry in (a, b, c):
        store.put(entry)
    assert sorted(e.key for e in store.entries("gpt-4o")) == sorted([a.key, b.key])
    assert [e.key for e in store.entries("gpt-4o-mini")] == [c.key]
    assert list(store.entries("no-such-model")) == []
    assert sorted(e.key for e in store.entries()) == sorted([a.key, b.key, c.key])
    assert len(list(store.entries(limit=2))) == 2
    assert all(isinstance(e, Entry) for e in store.entries())


def test_size_counts_entries_and_bytes(store):
    assert store.size() == (0, 0)
    a, b = make_entry("a"), make_entry("b", answer="a longer answer " * 20)
    store.put(a)
    store.put(b)
    assert store.size() == (2, len(dump_entry(a).encode()) + len(dump_entry(b).encode()))


# -- usage --------------------------------------------------------------------


def test_touch_merges_hits_and_last_used(store):
    a, b = make_entry("a"), make_entry("b")
    store.put(a)
    store.put(b)
    base = float(int(RECORDED.timestamp()))  # the file index keeps milliseconds
    merged = store.touch({a.key: Usage(base + 100.5, 2)})
    assert merged[a.key] == Usage(base + 100.5, 2)
    store.touch({a.key: Usage(base + 50.25, 3), b.key: Usage(base + 10.0, 1)})
    usage = store.usage()
    assert usage[a.key] == Usage(base + 100.5, 5)  # latest use, hits added
    assert usage[b.key] == Usage(base + 10.0, 1)
    # a store may list never-used entries too, with no hits
    assert all(use.hits == 0 for key, use in usage.items() if key not in (a.key, b.key))


def test_touch_with_nothing_changes_nothing(store):
    a = make_entry("a")
    store.put(a)
    store.touch({a.key: Usage(RECORDED.timestamp() + 1, 1)})
    before = store.usage()
    assert store.touch({}) == before
    assert store.touch({}, keep={a.key})[a.key] == before[a.key]


# -- locks --------------------------------------------------------------------


def _in_thread(fn: Callable[[], Any]) -> Any:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_lock_excludes_until_released(store):
    key = make_entry().key
    held = store.lock(key)
    held.acquire(timeout=1)
    try:
        def contend() -> float:
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                store.lock(key).acquire(timeout=0.2)
            return time.monotonic() - start

        waited = _in_thread(contend)
        assert 0.15 <= waited < 2
        # another key is not blocked
        other = store.lock(make_entry("other").key)
        other.acquire(timeout=0.2)
        other.release()
    finally:
        held.release()

    def take() -> bool:
        lock = store.lock(key)
        lock.acquire(timeout=1)
        lock.release()
        return True

    assert _in_thread(take)


def test_lock_serialises_threads(store):
    key = make_entry().key
    counter = {"n": 0}
    rounds, threads = 5, 8

    def work() -> None:
        for _ in range(rounds):
            lock = store.lock(key)
            lock.acquire(timeout=20)
            try:
                seen = counter["n"]
                time.sleep(0.001)  # widen the window a lost update needs
                counter["n"] = seen + 1
            finally:
                lock.release()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert not any(w.is_alive() for w in workers)
    assert counter["n"] == rounds * threads


# -- clear --------------------------------------------------------------------


def test_clear_removes_all_and_only_this_stores_entries(case):
    store = case.store
    entries = [make_entry(str(i)) for i in range(3)]
    for entry in entries:
        store.put(entry)
    store.touch({entries[0].key: Usage(RECORDED.timestamp() + 1, 1)})
    still_there = case.outside()
    sibling = case.sibling()
    kept = make_entry("sibling")
    sibling.put(kept)

    assert store.clear() == 3
    assert store.size() == (0, 0)
    assert list(store.scan()) == []
    assert list(store.entries()) == []
    assert all(store.get(e.key, e.model_version) is None for e in entries)
    assert still_there()
    assert sibling.get(kept.key, kept.model_version) == kept
    assert sibling.size()[0] == 1
    assert store.clear() == 0
    # usable again after a clear
    store.put(entries[0])
    assert store.get(entries[0].key, entries[0].model_version) == entries[0]


# -- corrupt entries ----------------------------------------------------------


def test_corrupt_entry_raises_naming_location_then_quarantine(case):
    if case.corrupt is None:
        pytest.skip(f"the {case.name} store keeps entries parsed: none can be corrupt")
    store = case.store
    bad, good = make_entry("bad"), make_entry("good")
    store.put(bad)
    store.put(good)
    case.corrupt(bad.key, bad.model_version, "llm_cache: 1\nkey: [unclosed\n")
    location = store.location(bad.key, bad.model_version)
    with pytest.raises(CassetteError) as caught:
        store.get(bad.key, bad.model_version)
    assert caught.value.path == location
    assert location in str(caught.value)
    assert [e.key for e in store.entries()] == [good.key]  # unusable entries are skipped

    moved = store.quarantine(bad.key, bad.model_version)
    assert moved is not None and moved != location
    assert store.get(bad.key, bad.model_version) is None
    assert good.key in {m.key for m in store.scan()}
    assert store.get(good.key, good.model_version) == good
    assert store.quarantine(bad.key, bad.model_version) is None  # nothing left to move


def test_entry_of_another_key_is_refused(case):
    if case.corrupt is None:
        pytest.skip(f"the {case.name} store keeps entries parsed")
    store = case.store
    a, b = make_entry("a"), make_entry("b")
    case.corrupt(a.key, a.model_version, dump_entry(b))
    with pytest.raises(CassetteError, match="not the key it was looked up by"):
        store.get(a.key, a.model_version)


def test_quarantine_missing_is_none(store):
    entry = make_entry()
    assert store.quarantine(entry.key, entry.model_version) is None
