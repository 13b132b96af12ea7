"""The benchmark harness runs end to end: `benchmarks/bench.py --quick` exits 0, prints its
table and writes JSON with every section. No timing is asserted: the machine is noisy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench.py"


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def test_bench_quick_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_CACHE_", "PYTEST_"))}
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out), "--workdir", str(tmp_path / "work")],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + "\n" + proc.stderr[-4000:]
    assert "pytest-llm-cache benchmarks" in proc.stdout
    assert "Targets" in proc.stdout

    data = json.loads(out.read_text())
    assert data["quick"] is True
    assert {"hit", "startup", "warm", "record", "evict", "stores", "targets", "machine"} <= set(data)

    hit = data["hit"]
    assert _positive(hit["floor"]["non_stream"]["median"]) and _positive(hit["floor"]["stream"]["median"])
    assert {p["entries"] for p in hit["points"]} == {100, 1000}
    for point in hit["points"]:
        for which in ("cold", "warm"):
            assert _positive(point[which]["median"]) and _positive(point[which]["ratio"])
    assert all(p["cold_copy"] is None or _positive(p["cold_copy"]["median"]) for p in hit["points"])
    assert {(v["interactions"], v["kind"]) for v in hit["vcrpy"]} == {
        (100, "non_stream"), (100, "stream"), (1000, "non_stream"), (1000, "stream")
    }
    assert all(_positive(v["median"]) for v in hit["vcrpy"])
    assert all(_positive(s["ratio"]) for s in hit["scale"])

    startup = data["startup"]["points"]
    assert {(p["entries"], p["warm"]) for p in startup} == {
        (n, mode) for n in (0, 1000) for mode in ("no", "first", "again")
    }
    assert all(_positive(p["first_hit_s"]) for p in startup)

    warm = data["warm"]["points"]
    assert [(p["entries"], p["source"]) for p in warm] == [(1000, "yaml"), (1000, "parsed copies")]
    for point in warm:
        if "skipped" in point:  # a file store that keeps no parsed copies
            continue
        assert point["warmed"] == 1000
        assert _positive(point["seconds"]) and _positive(point["disk_bytes"]) and _positive(point["rss_after"])
    assert "skipped" not in warm[0]

    record = data["record"]
    assert record["calls"] == 100 and record["cassettes_written"] == 101
    assert _positive(record["plain"]["calls_per_s"]) and _positive(record["record"]["calls_per_s"])
    assert _positive(record["ratio"])

    evict = data["evict"]
    assert evict["entries"] == 1000 and evict["evicted"] == 10
    for which in ("first", "later"):
        assert _positive(evict[which]["seconds"]) and _positive(evict[which]["session_finish_s"])

    stores = {p["store"]: p for p in data["stores"]["points"]}
    assert set(stores) == {"file", "file, parsed copies", "memory", "redis"}
    # CI sets LLM_CACHE_REQUIRE_REDIS=1 and installs redis-server: there Redis is never skipped
    with_redis = shutil.which("redis-server") is not None or os.environ.get("LLM_CACHE_REQUIRE_REDIS") == "1"
    measured = ["file", "memory"] + (["redis"] if with_redis else [])
    for name in measured:
        assert _positive(stores[name]["cold"]["median"]) and _positive(stores[name]["warm"]["median"])

    assert data["targets"] and all(isinstance(t["pass"], bool) for t in data["targets"])


def test_bench_load_tiny_runs_and_writes_json(tmp_path: Path) -> None:
    """bench_load.py at a tiny size: a few callers and requests, the memory and file stores (and Redis and a
    Redis Cluster when there)."""
    out = tmp_path / "load.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_CACHE_", "PYTEST_"))}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_load.py"), "--callers", "4", "--requests-per-caller", "5",
         "--paced-requests", "2", "--think-ms", "5", "--rounds", "1", "--idle-s", "0.1", "--stores", "memory,file,redis,cluster",
         "--redis-rtt-ms", "1", "--json", str(out)],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + "\n" + proc.stderr[-4000:]
    assert "cache under load" in proc.stdout and "target upstream calls" in proc.stdout

    data = json.loads(out.read_text())
    assert data["wrong_answers"] == 0
    assert data["targets"] and all(isinstance(t["pass"], bool) for t in data["targets"])
    assert data["options"]["redis_rtt_ms"] == 1 and "1 ms away" in proc.stdout  # Redis behind rtt_proxy.py
    rows = data["rows"]
    assert set(rows) == {"floor", "none", "memory", "file", "redis", "cluster"}
    with_redis = shutil.which("redis-server") is not None or os.environ.get("LLM_CACHE_REQUIRE_REDIS") == "1"
    servers = ["redis", "cluster"] if with_redis else []
    for name in ["floor", "none", "memory", "file", *servers]:
        for phase, requests in (("closed", 20), ("paced", 8)):
            run = rows[name][phase]
            assert run["requests"] == requests and _positive(run["requests_per_s"])
            assert _positive(run["latency_ms"]["p50"]) and run["loop_lag_ms"]["n"] > 0
            if name != "floor":  # the server counted every call; with a cache, one per distinct request
                assert run["upstream"] == (requests if name == "none" else run["distinct"])
    for name in ["memory", "file", *servers]:
        assert rows[name]["closed"]["hit_ms"]["n"] + rows[name]["closed"]["joined_ms"]["n"] > 0
        assert rows[name]["closed"]["cache_hold_ms"]["n"] > 0
        holds, own = rows[name]["closed"]["cache_hold_ms"], rows[name]["closed"]["cache_hold_without_gc_ms"]
        assert own["n"] == holds["n"] == rows[name]["closed"]["cache_hold_gc_ms"]["n"]
        assert own["max"] <= holds["max"] + 1e-9  # the collector's pauses taken out, never added
        over = rows[name]["closed"]["cache_holds_over_limit"]
        assert 0 <= over <= holds["n"] and (over == 0) == (holds["max"] <= 5.0)

    tables = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "load_tables.py"), str(out)],
                            check=True, cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "| `memory://` |" in tables and "| idle loop (the probe alone) |" in tables
    assert tables.count("\n| --- |") == 2  # the closed-loop table and the event loop's
    data["rows"]["redis"] = {"skipped": "no redis-server here"}  # as a machine without one writes it
    out.write_text(json.dumps(data))
    tables = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "load_tables.py"), str(out)],
                            check=True, cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "| `redis://` |" not in tables and "not measured: `redis://`: no redis-server here" in tables
