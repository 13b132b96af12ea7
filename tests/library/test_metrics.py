"""Cache metrics: the Prometheus text, xdist's merge, and both exporters tested for real.

A real ``LLMCache`` serves real openai SDK calls from the local server; the Prometheus
exporter is scraped over HTTP from ``prometheus_client.start_http_server``, the
OpenTelemetry one read through the SDK's in-memory metric reader.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from fakeapi import FakeLLMServer
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from llm_cache import CacheMiss, LLMCache, Metrics
from llm_cache.engine.session import utcnow
from llm_cache.metrics import BUCKETS
from llm_cache.stores import MemoryStore

STORE = "file://cassettes"


def chat(client: openai.OpenAI, text: str, model: str = "gpt-4o") -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def make_client(server: FakeLLMServer, cache: LLMCache) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key="sk-metrics-test-0000", max_retries=0,
                         http_client=httpx2.Client(transport=cache.transport()))


def parse(text: str) -> dict[str, Any]:
    """Prometheus text -> {family name: (type, {(sample name, sorted labels): value})}."""
    out = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = (family.type, {
            (s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples
        })
    return out


def value(parsed: dict[str, Any], sample: str, **labels: str) -> float | None:
    """One sample's value; None when the series is not there."""
    for _type, samples in parsed.values():
        found = samples.get((sample, tuple(sorted(labels.items()))))
        if found is not None:
            return float(found)
    return None


@pytest.fixture
def srv(fake_api: FakeLLMServer) -> FakeLLMServer:
    return fake_api


def exercise(srv: FakeLLMServer, cache: LLMCache) -> None:
    """A miss recorded, two hits, a response not stored (an error status), an eviction pass."""
    client = make_client(srv, cache)
    for _ in range(3):
        chat(client, "metrics please")
    with pytest.raises(openai.InternalServerError):
        chat(client, "boom", model="error-500")
    cache.evict()


# -- the text, without an exporter ------------------------------------------------------------


def test_the_text_parses_with_its_types_labels_and_buckets() -> None:
    metrics = Metrics('redis://:***@h:6379/0')
    for event in ("hit", "hit", "miss", "recorded", "stale_served", "refreshed", "corrupt"):
        metrics(event, "gpt-4o", None, None)
    metrics("not_stored", "gpt-4o", "error status", None)
    metrics("store_error", 'odd "v"\\\n', "unavailable", None)
    for seconds in (0.00005, 0.0003, 0.004, 2.5):
        metrics("lookup", "gpt-4o", None, seconds)
    metrics("entries", "-", None, 7)
    metrics("bytes", "-", None, 123456)
    metrics("warmed", "-", None, 1)  # an event that is no metric is left alone
    parsed = parse(metrics.prometheus_text())
    assert {name: kind for name, (kind, _) in parsed.items()} == {
        "llm_cache_hits": "counter", "llm_cache_misses": "counter", "llm_cache_stale_served": "counter",
        "llm_cache_recorded": "counter", "llm_cache_refreshed": "counter", "llm_cache_not_stored": "counter",
        "llm_cache_corrupt": "counter", "llm_cache_store_errors": "counter",
        "llm_cache_lookup_seconds": "histogram", "llm_cache_entries": "gauge", "llm_cache_bytes": "gauge",
    }
    series = {"model_version": "gpt-4o", "store": "redis://:***@h:6379/0"}
    assert value(parsed, "llm_cache_hits_total", **series) == 2
    assert value(parsed, "llm_cache_misses_total", **series) == 1
    assert value(parsed, "llm_cache_stale_served_total", **series) == 1
    assert value(parsed, "llm_cache_not_stored_total", **series, reason="error status") == 1
    odd = {"model_version": 'odd "v"\\\n', "store": series["store"]}
    assert value(parsed, "llm_cache_store_errors_total", **odd, reason="unavailable") == 1
    # the counters of every series start at zero, so that rate() has a first point
    assert value(parsed, "llm_cache_hits_total", **odd) is None  # a reasoned event makes no series
    assert value(parsed, "llm_cache_refreshed_total", **series) == 1
    buckets = {dict(labels)["le"]: v for (name, labels), v in parsed["llm_cache_lookup_seconds"][1].items()
               if name.endswith("_bucket")}
    assert list(buckets) == [repr(b) for b in BUCKETS] + ["+Inf"]
    assert buckets["0.0001"] == 1 and buckets["0.0005"] == 2 and buckets["0.005"] == 3
    assert buckets["1.0"] == 3 and buckets["+Inf"] == 4
    assert value(parsed, "llm_cache_lookup_seconds_count", **series) == 4
    assert value(parsed, "llm_cache_lookup_seconds_sum", **series) == pytest.approx(2.50435)
    assert value(parsed, "llm_cache_entries", store=series["store"]) == 7
    assert value(parsed, "llm_cache_bytes", store=series["store"]) == 123456


def test_an_empty_metrics_text_still_names_every_family() -> None:
    parsed = parse(Metrics().prometheus_text())
    assert len(parsed) == 11 and all(not samples for _, samples in parsed.values())


def test_to_dict_goes_through_json_and_merges() -> None:
    one, two = Metrics("file:///a"), Metrics("file:///a")
    for m in (one, two):
        m("hit", "gpt-4o", None, None)
        m("lookup", "gpt-4o", None, 0.002)
        m("not_stored", "gpt-4o", "too large", None)
    two("miss", "claude", None, None)
    two("entries", "-", None, 3)
    merged = Metrics()
    for m in (one, two):
        merged.merge(json.loads(json.dumps(m.to_dict())))
    assert merged.count("hit") == 2 and merged.count("miss", "claude") == 1
    assert merged.count("not_stored", reason="too large") == 2 and merged.count("not_stored", reason="x") == 0
    assert merged.count("lookup", "gpt-4o") == 2
    assert merged.gauge("entries", "file:///a") == 3
    parsed = parse(merged.prometheus_text())
    assert value(parsed, "llm_cache_lookup_seconds_bucket", model_version="gpt-4o", store="file:///a", le="0.0025") == 2
    with pytest.raises(ValueError, match="other lookup buckets"):
        merged.merge({**one.to_dict(), "buckets": [1.0]})


# -- LLMCache.metrics ------------------------------------------------------------------------


def test_metrics_count_from_the_start_not_from_when_they_are_first_asked_for(srv: FakeLLMServer) -> None:
    cache = LLMCache()
    chat(make_client(srv, cache), "before")
    chat(make_client(srv, cache), "before")
    metrics = cache.metrics  # an exporter registered late, at the first scrape
    assert cache.metrics is metrics and cache.session.stats.listeners == [metrics]
    assert metrics.count("recorded", "gpt-4o", store="memory://") == 1
    assert metrics.count("hit", "gpt-4o", store="memory://") == 1
    chat(make_client(srv, cache), "before")
    assert metrics.count("hit", "gpt-4o", store="memory://") == 2


def test_stale_entries_served_and_replay_misses_are_counted(srv: FakeLLMServer) -> None:
    store = MemoryStore()
    writer = LLMCache(store)
    chat(make_client(srv, writer), "old news")
    later = LLMCache(store, mode="replay", ttl="1h", clock=lambda: utcnow() + timedelta(hours=2))
    metrics = later.metrics
    client = make_client(srv, later)
    chat(client, "old news")
    with pytest.raises(CacheMiss):
        chat(client, "never recorded")
    series = {"model_version": "gpt-4o", "store": "memory://"}
    parsed = parse(metrics.prometheus_text())
    assert value(parsed, "llm_cache_hits_total", **series) == 1
    assert value(parsed, "llm_cache_stale_served_total", **series) == 1
    assert value(parsed, "llm_cache_misses_total", **series) == 1
    assert value(parsed, "llm_cache_lookup_seconds_count", **series) == 2


def test_store_errors_are_counted_and_the_password_never_shown(srv: FakeLLMServer, redis_server: Any) -> None:
    from redis_server import RedisServer

    with RedisServer(extra_args=("--requirepass", "s3cret-pw")) as private:
        url = f"redis://:s3cret-pw@127.0.0.1:{private.port}/0?timeout=0.5&prefix=metrics:"
        cache = LLMCache(url, fallback="passthrough")
        metrics = cache.metrics
        client = make_client(srv, cache)
        chat(client, "before the fall")
        private.kill()
        chat(client, "after the fall")
        text = metrics.prometheus_text()
    assert "s3cret-pw" not in text
    label = f"redis://:***@127.0.0.1:{private.port}/0?timeout=0.5&prefix=metrics:"
    parsed = parse(text)
    assert value(parsed, "llm_cache_recorded_total", model_version="gpt-4o", store=label) == 1
    assert value(parsed, "llm_cache_store_errors_total", model_version="gpt-4o", store=label,
                 reason="unavailable") == 1


# -- Prometheus ------------------------------------------------------------------------------


@pytest.fixture
def scrape() -> Iterator[Any]:
    """``scrape(registry)``: the registry served by start_http_server on a free port, read over HTTP."""
    servers: list[Any] = []

    def _scrape(registry: CollectorRegistry) -> dict[str, Any]:
        if not servers:
            servers.append(start_http_server(0, addr="127.0.0.1", registry=registry))
        server, _thread = servers[0]
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            return parse(response.read().decode("utf-8"))

    yield _scrape
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_prometheus_registry_scraped_over_http(srv: FakeLLMServer, tmp_path: Path, scrape: Any) -> None:
    cache = LLMCache(STORE, root=tmp_path)
    registry = CollectorRegistry()
    collector = cache.metrics.to_prometheus(registry)
    exercise(srv, cache)
    parsed = scrape(registry)
    series = {"model_version": "gpt-4o", "store": STORE}
    assert value(parsed, "llm_cache_hits_total", **series) == 2
    assert value(parsed, "llm_cache_recorded_total", **series) == 1
    assert value(parsed, "llm_cache_misses_total", **series) == 0
    assert value(parsed, "llm_cache_not_stored_total", model_version="error-500", store=STORE,
                 reason="error status") == 1
    assert value(parsed, "llm_cache_lookup_seconds_count", **series) == 3
    assert value(parsed, "llm_cache_lookup_seconds_bucket", **series, le="+Inf") == 3
    assert value(parsed, "llm_cache_entries", store=STORE) == 1
    files = list((tmp_path / "cassettes").rglob("*.yaml"))
    assert value(parsed, "llm_cache_bytes", store=STORE) == sum(p.stat().st_size for p in files) > 0
    stats = cache.stats()
    assert (stats["hits"], stats["recorded"], stats["not_stored"]) == (2, 1, 1)
    # each scrape reads the figures of the moment
    chat(make_client(srv, cache), "metrics please")
    assert value(scrape(registry), "llm_cache_hits_total", **series) == 3
    assert cache.metrics.to_prometheus(registry) is collector  # again: the same collector, nothing counted twice
    assert value(scrape(registry), "llm_cache_hits_total", **series) == 3
    registry.unregister(collector)
    assert value(scrape(registry), "llm_cache_hits_total", **series) is None


def test_two_caches_share_one_registry(srv: FakeLLMServer, tmp_path: Path, scrape: Any) -> None:
    """An application with a file cache and a memory cache exports both from one registry,
    told apart by store; two caches of one store add up."""
    files, memory = LLMCache(STORE, root=tmp_path), LLMCache("memory://")
    same_store = LLMCache(STORE, root=tmp_path)
    registry = CollectorRegistry()
    collector = files.metrics.to_prometheus(registry)
    assert memory.metrics.to_prometheus(registry) is collector
    same_store.metrics.to_prometheus(registry)
    for cache, times in ((files, 2), (memory, 3), (same_store, 1)):
        for _ in range(times):
            chat(make_client(srv, cache), "shared registry")
    parsed = scrape(registry)
    # files: 1 recorded + 1 hit; same_store: a hit of what files recorded; memory: 1 recorded + 2 hits
    assert value(parsed, "llm_cache_hits_total", model_version="gpt-4o", store=STORE) == 2
    assert value(parsed, "llm_cache_recorded_total", model_version="gpt-4o", store=STORE) == 1
    assert value(parsed, "llm_cache_hits_total", model_version="gpt-4o", store="memory://") == 2
    assert value(parsed, "llm_cache_lookup_seconds_count", model_version="gpt-4o", store=STORE) == 3
    collector.remove(memory.metrics)
    assert value(scrape(registry), "llm_cache_hits_total", model_version="gpt-4o", store="memory://") is None


def test_prometheus_default_registry(srv: FakeLLMServer) -> None:
    cache = LLMCache()
    collector = cache.metrics.to_prometheus()
    try:
        chat(make_client(srv, cache), "global")
        chat(make_client(srv, cache), "global")
        labels = {"model_version": "gpt-4o", "store": "memory://"}
        assert REGISTRY.get_sample_value("llm_cache_hits_total", labels) == 1
        assert REGISTRY.get_sample_value("llm_cache_recorded_total", labels) == 1
    finally:
        REGISTRY.unregister(collector)


@pytest.mark.parametrize(("library", "extra", "method"), [
    ("prometheus_client", "prometheus", "to_prometheus"),
    ("opentelemetry", "otel", "to_otel"),
])
def test_a_missing_extra_names_its_pip_command(monkeypatch: pytest.MonkeyPatch, library: str, extra: str,
                                               method: str) -> None:
    for name in [m for m in sys.modules if m == library or m.startswith(library + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, library, None)
    for ours in ("llm_cache.metrics.prometheus", "llm_cache.metrics.otel"):
        monkeypatch.delitem(sys.modules, ours, raising=False)
    with pytest.raises(ImportError, match=rf"pip install 'pytest-llm-cache\[{extra}\]'"):
        getattr(Metrics(), method)()


# -- OpenTelemetry ---------------------------------------------------------------------------


def _points(reader: Any) -> dict[str, Any]:
    """The llm_cache meter's metrics: {name: (unit, [(attributes, data point)])}."""
    out = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name != "llm_cache":
                continue
            for metric in scope.metrics:
                out[metric.name] = (metric.unit, [(dict(p.attributes), p) for p in metric.data.data_points])
    return out


def _value(points: dict[str, Any], name: str, **attributes: str) -> Any:
    return next((p for attrs, p in points.get(name, ("", []))[1] if attrs == attributes), None)


def test_otel_instruments_read_by_the_sdk(srv: FakeLLMServer, tmp_path: Path) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        cache = LLMCache(STORE, root=tmp_path)
        export = cache.metrics.to_otel(provider)
        exercise(srv, cache)
        points = _points(reader)
        series = {"model_version": "gpt-4o", "store": STORE}
        assert _value(points, "llm_cache.hits", **series).value == 2
        assert _value(points, "llm_cache.recorded", **series).value == 1
        assert _value(points, "llm_cache.misses", **series).value == 0
        assert _value(points, "llm_cache.not_stored", model_version="error-500", store=STORE,
                      reason="error status").value == 1
        assert points["llm_cache.hits"][0] == "{request}" and points["llm_cache.bytes"][0] == "By"
        latency = _value(points, "llm_cache.lookup", **series)
        assert points["llm_cache.lookup"][0] == "s"
        assert latency.count == 3 and 0 < latency.sum < 3
        assert tuple(latency.explicit_bounds) == BUCKETS and sum(latency.bucket_counts) == 3
        assert _value(points, "llm_cache.entries", store=STORE).value == 1
        files = list((tmp_path / "cassettes").rglob("*.yaml"))
        assert _value(points, "llm_cache.bytes", store=STORE).value == sum(p.stat().st_size for p in files)
        assert set(export.instruments) >= {"llm_cache.hits", "llm_cache.lookup", "llm_cache.entries"}
        export.stop()
        chat(make_client(srv, cache), "metrics please")
        points = _points(reader)
        assert _value(points, "llm_cache.hits", **series) is None  # the callbacks observe nothing more
        assert _value(points, "llm_cache.lookup", **series).count == 3  # nor is a lookup recorded
        assert cache.metrics.count("hit") == 3  # the metrics themselves still count
    finally:
        provider.shutdown()
