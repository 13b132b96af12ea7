"""The Redis store on a real Redis Cluster that fails: a master stalled or killed mid-run, a failover; and TLS.

Every answer is the right one or ``StoreUnavailable``, never another entry's,
and nothing goes upstream for a request the store cannot answer; with replicas
the promoted one serves the same entries. The killed and TLS clusters are this
module's own (tests/redis_cluster.py); the stall uses the session's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakeapi import FakeLLMServer
from redis_cluster import ClusterTarget, LocalCluster, make_tls_files, require_redis_cluster
from test_redis_cluster import asker, redis
from test_store_contract import make_entry

from llm_cache import LLMCache
from llm_cache.errors import StoreUnavailable
from llm_cache.stores import open_store
from llm_cache.stores.redis import RedisStore


def test_a_stalled_master_is_unavailable_within_about_twice_the_timeout(cluster_target: ClusterTarget):
    store = cluster_target.store(timeout=0.5)
    entry = make_entry()
    store.put(entry)
    port = cluster_target.cluster.master_of(cluster_target.base)
    paused = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    paused.client_pause(1500)  # answers nothing for 1.5 s
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match="timed out") as caught:
        store.get(entry.key, entry.model_version)
    assert time.monotonic() - start < 2 * 0.5 + 0.5  # once, and once more after refreshing the layout
    assert caught.value.timeout == 0.5
    time.sleep(max(0.0, 1.6 - (time.monotonic() - start)))
    assert store.get(entry.key, entry.model_version) == entry  # awake again: served
    paused.close()


# -- a master killed mid-run ----------------------------------------------------------


@pytest.fixture(scope="module")
def fragile_cluster() -> Iterator[LocalCluster]:
    """Three masters, no replicas, of this module's own: one gets killed."""
    require_redis_cluster()
    with LocalCluster(3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def replicated_cluster() -> Iterator[LocalCluster]:
    """Three masters with a replica each, of this module's own: a master gets killed, its replica promoted."""
    require_redis_cluster()
    with LocalCluster(3, replicas=1) as cluster:
        yield cluster


def prefix_on(cluster: LocalCluster, port: int, stem: str) -> str:
    """A prefix whose keys live on the master at ``port``."""
    for i in range(200):
        prefix = f"{stem}{i}:"
        if cluster.master_of("{" + prefix + "}") == port:
            return prefix
    raise LookupError(f"no prefix {stem}N: on {port}")


def outcome(ask: Callable[[str], str], text: str) -> str:
    try:
        return ask(text)
    except StoreUnavailable:
        return "unavailable"


def test_a_killed_master_gives_store_unavailable_never_a_wrong_answer(
    fake_api: FakeLLMServer, fragile_cluster: LocalCluster
) -> None:
    cluster = fragile_cluster
    doomed, spared = cluster.master_ports()[:2]
    prefixes = {"doomed": prefix_on(cluster, doomed, "doomed"), "spared": prefix_on(cluster, spared, "spared")}
    urls = {name: f"{cluster.url}?prefix={prefix}&timeout=1" for name, prefix in prefixes.items()}
    questions = [f"question {i}" for i in range(4)]
    asks = {name: asker(LLMCache(url), fake_api) for name, url in urls.items()}
    for ask in asks.values():
        assert [ask(q) for q in questions] == [f"echo: {q}" for q in questions]
    stores = {name: RedisStore.from_url(url) for name, url in urls.items()}
    kept = {name: {m.key: store.get(m.key, m.model_version) for m in store.scan()} for name, store in stores.items()}
    calls = fake_api.count()
    assert calls == 8

    cluster.kill(doomed)

    # the killed master's prefix: every store call is unavailable, at once
    store = stores["doomed"]
    key, entry = next(iter(kept["doomed"].items()))
    assert entry is not None
    for call in (
        lambda: store.get(key, entry.model_version),
        lambda: store.put(entry),
        lambda: list(store.scan()),
        store.size,
        store.usage,
        lambda: store.lock(key).acquire(timeout=1),
    ):
        start = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            call()
        assert time.monotonic() - start < 2 * 1 + 1.5  # one try, one more after refreshing the layout
        assert caught.value.url == urls["doomed"]
    # a request is answered right (from what the session already holds) or refused; a new one is refused
    assert all(outcome(asks["doomed"], q) in (f"echo: {q}", "unavailable") for q in questions)
    assert outcome(asks["doomed"], "never asked") == "unavailable"

    # another master's prefix: served right until the cluster sees the master fail, then refused
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            got = {k: stores["spared"].get(k, e.model_version) for k, e in kept["spared"].items()}  # type: ignore[union-attr]
        except StoreUnavailable as exc:
            seen.append("unavailable")
            assert "cluster" in exc.reason  # CLUSTERDOWN, or the layout refreshed without the master
            break
        assert got == kept["spared"]
        seen.append("served")
        time.sleep(0.05)
    assert seen[-1] == "unavailable", seen
    assert all(outcome(asks["spared"], q) in (f"echo: {q}", "unavailable") for q in questions)
    assert outcome(asks["spared"], "never asked either") == "unavailable"
    assert fake_api.count() == calls  # a request the store cannot answer is refused, not sent upstream
    for opened in stores.values():
        opened.close()


def test_after_failover_the_promoted_replica_serves_the_same_entries(
    fake_api: FakeLLMServer, replicated_cluster: LocalCluster
) -> None:
    cluster = replicated_cluster
    url = f"{cluster.url}?prefix=failover:&timeout=1"
    questions = [f"kept {i}" for i in range(4)]
    ask = asker(LLMCache(url), fake_api)
    assert [ask(q) for q in questions] == [f"echo: {q}" for q in questions]
    store = RedisStore.from_url(url)
    kept = {m.key: store.get(m.key, m.model_version) for m in store.scan()}
    doomed = cluster.master_of("{failover:}")
    node = store.client.get_node_from_key("{failover:}meta")
    assert store.client.execute_command("WAIT", 1, 900, target_nodes=node) == 1  # the replica has them all

    cluster.kill(doomed)

    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            got = {k: store.get(k, e.model_version) for k, e in kept.items()}  # type: ignore[union-attr]
        except StoreUnavailable:
            seen.append("unavailable")
            time.sleep(0.1)
            continue
        assert got == kept  # the very entries, never another's
        seen.append("served")
        break
    assert seen[-1] == "served", seen
    assert cluster.master_of("{failover:}") != doomed
    # a new cache is served by the promoted replica: nothing goes upstream again
    again = asker(LLMCache(url), fake_api)
    assert [again(q) for q in questions] == [f"echo: {q}" for q in questions]
    assert fake_api.count() == len(questions)
    store.close()


# -- TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three masters that also listen with TLS (a throwaway CA), and talk TLS to each other."""
    require_redis_cluster()
    pytest.importorskip("cryptography")
    with LocalCluster(3, tls=make_tls_files(tmp_path_factory.mktemp("tls"))) as cluster:
        yield cluster


def test_rediss_cluster_and_rediss_over_tls(tls_cluster: LocalCluster) -> None:
    assert tls_cluster.tls_dir is not None
    ca = str(tls_cluster.tls_dir / "ca.pem")
    url = f"{tls_cluster.tls_url}?prefix=tls:&ssl_ca_certs={ca}"
    store = open_store(url, Path("."))
    entry = make_entry()
    assert store.put(entry).startswith(tls_cluster.tls_url.rstrip("/") + "/{tls:}e:")
    assert store.get(entry.key, entry.model_version) == entry
    with store.lock(entry.key):
        pass
    nodes = store.client.get_nodes()  # type: ignore[attr-defined]
    assert {node.port for node in nodes} == set(tls_cluster.tls_ports.values())  # the cluster names its TLS ports
    assert all(node.redis_connection.connection_pool.connection_kwargs.get("ssl_ca_certs") == ca for node in nodes)
    assert store.clear() == 1
    store.close()
    # without the CA the certificate is refused: unavailable, never plaintext
    with pytest.raises(StoreUnavailable, match="certificate verify failed"):
        RedisStore.from_url(f"{tls_cluster.tls_url}?prefix=tls:&timeout=1")
    # rediss:// to one node: TLS to one server; the nodes not holding the key's slot say to use the cluster URL
    said = []
    for port in tls_cluster.tls_ports.values():
        single = RedisStore.from_url(f"rediss://127.0.0.1:{port}/0?prefix=tls:&ssl_ca_certs={ca}&timeout=1")
        try:
            said.append(single.get(entry.key, entry.model_version))
        except StoreUnavailable as exc:
            said.append(exc.reason)
        single.close()
    assert said.count(None) == 1, said  # the node holding the slot answers: nothing there
    assert all("use redis+cluster://" in reason for reason in said if reason is not None)
