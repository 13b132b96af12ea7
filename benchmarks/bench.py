"""Benchmarks of pytest-llm-cache, measured side by side in one run.

    python benchmarks/bench.py                    # everything (several minutes)
    python benchmarks/bench.py --quick            # small sizes only, well under a minute
    python benchmarks/bench.py --only hit,stores  # some sections
    python benchmarks/bench.py --json out.json    # default: benchmarks/results/latest.json

Sections: hit (replay hit time vs the MockTransport floor and vcrpy), startup (pytest
launch to first hit), warm (warming time and resident memory), record (record-mode
overhead against the local fake API), evict (one eviction pass), stores (file, memory and
Redis stores). See benchmarks/README.md for what each measures and how to read the table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_corpus as bc
import httpx2
import openai

from llm_cache.adapters.patches import intercept
from llm_cache.engine.session import CacheSession, open_settings_store
from llm_cache.modes import Mode
from llm_cache.policy import Cap, Eviction, plan_eviction
from llm_cache.settings import Settings
from llm_cache.stores import FileStore

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "latest.json"
SECTIONS = ("hit", "stores", "record", "evict", "warm", "startup")
TABLE_HEADER = "pytest-llm-cache benchmarks"
SEED = 20261127


@dataclass(frozen=True)
class Config:
    quick: bool
    hit_sizes: tuple[int, ...]
    hit_calls: int  # timed calls per point
    vcr_sizes: tuple[int, ...]
    vcr_calls: dict[int, int]
    rounds: int  # interleaving rounds: each point gets hit_calls / rounds calls per round
    startup_sizes: tuple[int, ...]
    startup_reps: int
    warm_sizes: tuple[int, ...]
    record_calls: int
    evict_size: int
    evict_reps: int
    store_size: int
    store_calls: int


FULL = Config(
    quick=False,
    hit_sizes=(100, 1_000, 10_000, 100_000),
    hit_calls=300,
    vcr_sizes=(100, 1_000),
    vcr_calls={100: 300, 1_000: 60},
    rounds=15,
    startup_sizes=(0, 10_000, 100_000),
    startup_reps=3,
    warm_sizes=(10_000, 100_000),
    record_calls=1_000,
    evict_size=100_000,
    evict_reps=3,
    store_size=1_000,
    store_calls=300,
)
QUICK = Config(
    quick=True,
    hit_sizes=(100, 1_000),
    hit_calls=40,
    vcr_sizes=(100, 1_000),
    vcr_calls={100: 10, 1_000: 4},
    rounds=2,
    startup_sizes=(0, 1_000),
    startup_reps=1,
    warm_sizes=(1_000,),
    record_calls=100,
    evict_size=1_000,
    evict_reps=1,
    store_size=1_000,
    store_calls=40,
)


# -- small helpers ------------------------------------------------------------------------------


def say(text: str = "") -> None:
    print(text, flush=True)


def note(text: str) -> None:
    """Progress, on stderr: the table on stdout stays clean."""
    print(f"  .. {text}", file=sys.stderr, flush=True)


def summary(samples: list[float], scale: float = 1000.0) -> dict[str, Any]:
    """Median and spread of samples in seconds, given in ms (scale 1000) or as they are."""
    ordered = sorted(samples)
    n = len(ordered)

    def q(p: float) -> float:
        return ordered[min(n - 1, int(p * n))] * scale

    return {"median": statistics.median(ordered) * scale, "p10": q(0.10), "p90": q(0.90), "n": n}


def point_summary(point: Point, floor: dict[str, Any] | None = None) -> dict[str, Any]:
    """Wall-time summary of a point, its median CPU time, and both as ratios to ``floor``."""
    out = summary(point.samples)
    out["cpu_median"] = statistics.median(point.cpu) * 1000 if point.cpu else None
    if floor is not None:
        out["ratio"] = out["median"] / floor["median"]
        out["cpu_ratio"] = out["cpu_median"] / floor["cpu_median"]
    return out


def fmt_n(n: int) -> str:
    return f"{n:,}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("openai", "vcrpy", "PyYAML", "httpx2", "redis", "pytest", "pytest-llm-cache"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import yaml

    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
        "libyaml": bool(getattr(yaml, "__with_libyaml__", False)),
        "loadavg_at_start": load,
    }


def sdk_client(http_client: Any = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=bc.BASE_URL, api_key="x", max_retries=0, http_client=http_client)


# -- timed points -------------------------------------------------------------------------------


class Point:
    """One measured configuration. ``batch(k)`` adds k timed calls to ``samples``.

    Every batch starts with an untimed call (the first call after entering an
    interception context costs more, whatever is cached), and with a garbage collection.
    """

    def __init__(self, name: str, stream: bool) -> None:
        self.name = name
        self.stream = stream
        self.samples: list[float] = []  # wall time of each call
        self.cpu: list[float] = []  # this thread's CPU time of each call (robust to a loaded machine)

    def batch(self, k: int) -> None:
        raise NotImplementedError

    def _timed(self, client: openai.OpenAI, i: int) -> Any:
        cpu = time.thread_time()
        started = time.perf_counter()
        result = bc.call(client, i, self.stream)
        self.samples.append(time.perf_counter() - started)
        self.cpu.append(time.thread_time() - cpu)
        return result

    def close(self) -> None:
        pass


class FloorPoint(Point):
    """The same SDK call over httpx2.MockTransport returning the same response bytes."""

    def __init__(self, templates: bc.Templates, stream: bool) -> None:
        super().__init__("floor", stream)
        t = templates.of(stream)
        body, ctype = t.response_bytes, t.content_type

        def handler(request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(200, headers={"content-type": ctype}, content=body)

        self.client = sdk_client(httpx2.Client(transport=httpx2.MockTransport(handler)))
        self.i = 0

    def batch(self, k: int) -> None:
        gc.collect()
        bc.call(self.client, 0, self.stream)
        for _ in range(k):
            self.i += 1
            self._timed(self.client, 2 * self.i + int(self.stream))

    def close(self) -> None:
        self.client.close()


def _pool(size: int, stream: bool, rng: random.Random) -> tuple[int, list[int]]:
    """(primer index, shuffled timed indices) of one kind in a corpus of ``size``."""
    indices = [i for i in range(size) if bc.is_stream(i) == stream]
    primer, rest = indices[0], indices[1:]
    rng.shuffle(rest)
    return primer, rest


class _CachePoint(Point):
    def __init__(self, name: str, stream: bool, size: int, new_session: Callable[[], CacheSession],
                 client: openai.OpenAI, rng: random.Random) -> None:
        super().__init__(name, stream)
        self.size = size
        self.new_session = new_session
        self.client = client
        self.rng = rng
        self.primer, self.order = _pool(size, stream, rng)
        self.session: CacheSession | None = None
        self.scope: Any = None
        self.sessions = 0

    def _open(self) -> None:
        self.session = self.new_session()
        self.scope = self.session.scope("bench")
        self.sessions += 1

    def _check(self, expected_hits: int) -> None:
        counts = self.scope.stats
        if counts.misses or counts.hits != expected_hits:
            raise RuntimeError(f"{self.name}: expected {expected_hits} hits, got {counts}")


class ColdPoint(_CachePoint):
    """Each timed call asks a cassette its session has not read yet (a fresh session when all are read).

    ``pristine``: a cassette dir whose derived data (``.llm-cache/``: parsed copies) is removed
    before each batch, so every read is a first read ever, from the YAML. ``indices``: ask only
    these cassettes (those given parsed copies beforehand)."""

    cursor = 0
    # A new session after this many timed reads, whatever the corpus size, so that every size
    # measures sessions of the same shape and only the size of the cassette directory differs.
    READS_PER_SESSION = 40

    def __init__(self, *args: Any, pristine: Path | None = None, indices: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pristine = pristine
        if indices is not None:
            self.order = [i for i in indices if i != self.primer]

    def batch(self, k: int) -> None:
        if self.pristine is not None:
            bc.clean_derived(self.pristine)
        done = 0
        while done < k:
            if self.session is None or self.cursor >= min(len(self.order), self.READS_PER_SESSION):
                self._open()
                self.rng.shuffle(self.order)
                self.cursor = 0
            take = min(k - done, min(len(self.order), self.READS_PER_SESSION) - self.cursor)
            gc.collect()
            before = self.scope.stats.hits
            with intercept(self.scope):
                bc.call(self.client, self.primer, self.stream)
                for _ in range(take):
                    i = self.order[self.cursor]
                    self.cursor += 1
                    self._timed(self.client, i)
            self._check(before + take + 1)
            done += take


class WarmPoint(_CachePoint):
    """The same requests again, after a first call put their entries in memory."""

    WORKING_SET = 50

    def batch(self, k: int) -> None:
        if self.session is None:
            self._open()
            self.working = self.order[: self.WORKING_SET]
            self.pos = 0
            with intercept(self.scope):
                for i in [self.primer, *self.working]:
                    bc.call(self.client, i, self.stream)
        gc.collect()
        before = self.scope.stats.hits
        with intercept(self.scope):
            bc.call(self.client, self.primer, self.stream)
            for _ in range(k):
                self._timed(self.client, self.working[self.pos % len(self.working)])
                self.pos += 1
        self._check(before + k + 1)


class VcrPoint(Point):
    """vcrpy replaying one cassette of ``size`` interactions (match_on method, path, body)."""

    def __init__(self, path: Path, size: int, stream: bool, client: openai.OpenAI, rng: random.Random) -> None:
        super().__init__(f"vcrpy {fmt_n(size)}", stream)
        self.path = path
        self.client = client
        self.primer, self.order = _pool(size, stream, rng)
        self.pos = 0

    def batch(self, k: int) -> None:
        gc.collect()
        with bc.vcr_context(self.path):
            bc.call(self.client, self.primer, self.stream)
            for _ in range(k):
                self._timed(self.client, self.order[self.pos % len(self.order)])
                self.pos += 1


def run_interleaved(points: list[tuple[Point, int]], rounds: int, rng: random.Random, label: str) -> None:
    """Measure every point in ``rounds`` rounds, in a new random order each round."""
    for r in range(rounds):
        order = list(points)
        rng.shuffle(order)
        started = time.perf_counter()
        for point, total in order:
            share = total // rounds + (1 if r < total % rounds else 0)
            if share:
                point.batch(share)
        note(f"{label}: round {r + 1}/{rounds} in {time.perf_counter() - started:.1f} s")


# -- section 1: hit time ---------------------------------------------------------------------------


def file_session_factory(directory: Path) -> Callable[[], CacheSession]:
    settings = Settings(mode=Mode.REPLAY, cassette_dir=directory)
    return lambda: CacheSession(settings)


def prime_parsed_copies(directory: Path, picks: list[tuple[int, bool]]) -> int:
    """Read these cassettes through a FileStore and close it, as a session that used them
    does at its end: the store writes its parsed copies (of every cassette, as under
    llm_cache_parsed_copies = on: by default, small ones get none). Returns how many derived
    files appeared."""
    store = FileStore(directory, copies_from=0)
    for i, stream in picks:
        if store.get(bc.key_of(i, stream), bc.MODEL) is None:
            raise RuntimeError(f"prime: cassette {i} missing in {directory}")
    close = getattr(store, "close", None)
    if close is not None:
        close()
    return bc.derived_files(directory)


def section_hit(cfg: Config, corpora: bc.Corpora, templates: bc.Templates, workdir: Path) -> dict[str, Any]:
    rng = random.Random(SEED)
    client = sdk_client()
    floors = {s: FloorPoint(templates, s) for s in (False, True)}
    points: list[tuple[Point, int]] = [(floors[s], cfg.hit_calls) for s in (False, True)]
    ours: dict[tuple[int, str, bool], Point] = {}
    copies: dict[int, int] = {}
    for size in cfg.hit_sizes:
        directory = corpora.get(size)
        note(f"corpus of {fmt_n(size)} cassettes ready ({corpora.seconds[size]:.1f} s to write)")
        factory = file_session_factory(directory)
        # a twin of the corpus (hard links) where an earlier session left parsed copies
        twin = workdir / f"corpus-{size}-parsed"
        bc.link_copy(directory, twin)
        twin_factory = file_session_factory(twin)
        picks: dict[bool, list[int]] = {}
        for stream in (False, True):
            _, order = _pool(size, stream, rng)
            picks[stream] = order[: cfg.hit_calls + 10]
        copies[size] = prime_parsed_copies(twin, [(i, s) for s in (False, True) for i in picks[s]])
        for stream in (False, True):
            ours[size, "cold", stream] = ColdPoint("cold", stream, size, factory, client, rng, pristine=directory)
            if copies[size]:
                ours[size, "cold_copy", stream] = ColdPoint("cold, parsed copy", stream, size, twin_factory, client,
                                                            rng, indices=picks[stream])
            ours[size, "warm", stream] = WarmPoint("warm", stream, size, factory, client, rng)
    points += [(p, cfg.hit_calls) for p in ours.values()]
    vcrs: dict[tuple[int, bool], Point] = {}
    for size in cfg.vcr_sizes:
        path = workdir / f"vcrpy-{size}.yaml"
        bc.write_vcr_cassette(templates, path, size)
        bc.verify_vcr_cassette(path, size)
        for stream in (False, True):
            vcrs[size, stream] = VcrPoint(path, size, stream, client, rng)
            points.append((vcrs[size, stream], cfg.vcr_calls[size]))
    run_interleaved(points, cfg.rounds, rng, "hit")
    for p, _ in points:
        p.close()
    client.close()
    for size in cfg.hit_sizes:
        shutil.rmtree(workdir / f"corpus-{size}-parsed", ignore_errors=True)

    floor = {s: point_summary(floors[s]) for s in (False, True)}
    kind = {False: "non_stream", True: "stream"}
    rows = []
    for size in cfg.hit_sizes:
        for stream in (False, True):
            row: dict[str, Any] = {"entries": size, "kind": kind[stream], "cold_copy": None}
            for which in WHICH:
                point = ours.get((size, which, stream))
                if point is None:
                    continue
                row[which] = point_summary(point, floor[stream])
                if which != "warm":
                    row[which]["sessions"] = point.sessions  # type: ignore[attr-defined]
            rows.append(row)
    vcr_rows = []
    for (size, stream), point in vcrs.items():
        vcr_rows.append({"interactions": size, "kind": kind[stream], **point_summary(point, floor[stream])})
    small, large = min(cfg.hit_sizes), max(cfg.hit_sizes)
    scale = []
    for stream in (False, True):
        for which in WHICH:
            if (small, which, stream) not in ours or (large, which, stream) not in ours:
                continue
            a = point_summary(ours[small, which, stream])
            b = point_summary(ours[large, which, stream])
            scale.append({"kind": kind[stream], "which": which, "small": small, "large": large,
                          "ratio": b["median"] / a["median"], "cpu_ratio": b["cpu_median"] / a["cpu_median"]})
    return {
        "calls_per_point": cfg.hit_calls,
        "rounds": cfg.rounds,
        "parsed_copies_primed": copies,
        "floor": {kind[s]: floor[s] for s in (False, True)},
        "points": rows,
        "vcrpy": vcr_rows,
        "scale": scale,
    }


WHICH = ("cold", "cold_copy", "warm")
LABEL = {"cold": "cold", "cold_copy": "cold, parsed copy", "warm": "warm"}
LIMIT = {"cold": 1.5, "cold_copy": 1.5, "warm": 1.1}


def print_hit(res: dict[str, Any]) -> None:
    say(f"1. Replay hit time, OpenAI SDK chat completion, file store (median of {res['calls_per_point']} calls per point;")
    say("   cold: first read ever, from the YAML; cold, parsed copy: first read in the session, an earlier")
    say("   session left the store's parsed copy; warm: the entry is in memory; rows: kind, cassettes stored;")
    say("   x floor: wall-time ratio to the MockTransport floor measured in the same run, interleaved;")
    say("   cpu x: the same ratio in this thread's CPU time, less disturbed by other processes)")
    cell = "{:>9}{:>8}{:>7}{:>6}"
    say(f"   {'':<30}{'non-stream':^30}  {'stream':^30}")
    say(f"   {'':<30}" + cell.format("ms", "x floor", "cpu x", "") + "  " + cell.format("ms", "x floor", "cpu x", ""))

    def cells(c: dict[str, Any], limit: float | None) -> str:
        ok = "" if limit is None else verdict(c["ratio"] <= limit)
        return cell.format(f"{c['median']:.3f}", f"{c.get('ratio', 1.0):.2f}", f"{c.get('cpu_ratio', 1.0):.2f}", ok)

    fl = res["floor"]
    say(f"   {'floor (httpx2 MockTransport)':<30}" + cells(fl["non_stream"], None) + "  " + cells(fl["stream"], None))
    by = {(r["entries"], r["kind"]): r for r in res["points"]}
    for size in sorted({r["entries"] for r in res["points"]}):
        for which in WHICH:
            ns, st = by[size, "non_stream"].get(which), by[size, "stream"].get(which)
            label = f"{LABEL[which]}, {fmt_n(size)}"
            if ns is None or st is None:
                say(f"   {label:<30}n/a: the file store left no parsed copies")
                continue
            say(f"   {label:<30}" + cells(ns, LIMIT[which]) + "  " + cells(st, LIMIT[which]))
    vby = {(r["interactions"], r["kind"]): r for r in res["vcrpy"]}
    for size in sorted({r["interactions"] for r in res["vcrpy"]}):
        say(f"   {f'vcrpy, {fmt_n(size)} interactions':<30}" + cells(vby[size, "non_stream"], None) + "  "
            + cells(vby[size, "stream"], None) + f"  ({vby[size, 'non_stream']['n']} calls)")
    scale = {(s["kind"], s["which"]): s for s in res["scale"]}
    small, large = res["scale"][0]["small"], res["scale"][0]["large"]
    say(f"   scale, ours at {fmt_n(large)} vs {fmt_n(small)} cassettes (median ratio, wall and cpu; limit 1.05x):")
    for which in WHICH:
        if ("non_stream", which) not in scale:
            continue
        line = f"   {f'  {LABEL[which]}':<30}"
        for kind in ("non_stream", "stream"):
            c = scale[kind, which]
            line += cell.format("", f"{c['ratio']:.3f}", f"{c['cpu_ratio']:.3f}", verdict(c["ratio"] <= 1.05)) + "  "
        say(line.rstrip())


# -- section 6: stores -----------------------------------------------------------------------------


@contextmanager
def redis_server() -> Iterator[str | None]:
    """A redis-server on 127.0.0.1 (tests/redis_server.py), or None when there is no binary."""
    if shutil.which("redis-server") is None:
        yield None
        return
    from redis_server import RedisServer

    with RedisServer() as server:
        yield server.url


def _fill(store: Any, directory: Path) -> int:
    from llm_cache.cassette import load_entry

    count = 0
    for path in sorted((directory / bc.MODEL).glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        store.put(load_entry(text, str(path)), text)
        count += 1
    return count


def section_stores(cfg: Config, corpora: bc.Corpora, templates: bc.Templates, workdir: Path) -> dict[str, Any]:
    rng = random.Random(SEED + 6)
    size = cfg.store_size
    directory = corpora.get(size)
    client = sdk_client()
    floor = FloorPoint(templates, False)
    points: dict[tuple[str, str], Point] = {}
    names = ["file", "file, parsed copies", "memory", "redis"]
    skipped: dict[str, str] = {}
    twin = workdir / f"corpus-{size}-stores-parsed"
    with redis_server() as redis_url:
        file_factory = file_session_factory(directory)
        points["file", "cold"] = ColdPoint("cold", False, size, file_factory, client, rng, pristine=directory)
        points["file", "warm"] = WarmPoint("warm", False, size, file_factory, client, rng)
        bc.link_copy(directory, twin)
        _, order = _pool(size, False, rng)
        picks = order[: cfg.store_calls + 10]
        if prime_parsed_copies(twin, [(i, False) for i in picks]):
            points["file, parsed copies", "cold"] = ColdPoint(
                "cold", False, size, file_session_factory(twin), client, rng, indices=picks)
        else:
            skipped["file, parsed copies"] = "the file store left no parsed copies"
        memory_settings = Settings(mode=Mode.REPLAY, store_url="memory://")
        memory = open_settings_store(memory_settings)
        _fill(memory, directory)
        shared: dict[str, tuple[Settings, Any]] = {"memory": (memory_settings, memory)}
        redis_store = None
        if redis_url is not None:
            redis_settings = Settings(mode=Mode.REPLAY, store_url=redis_url + "?prefix=bench:")
            redis_store = open_settings_store(redis_settings)
            _fill(redis_store, directory)
            shared["redis"] = (redis_settings, redis_store)
        else:
            skipped["redis"] = "no redis-server binary"
        for name, (settings, store) in shared.items():
            def factory(settings: Settings = settings, store: Any = store) -> CacheSession:
                return CacheSession(settings, store=store)

            points[name, "cold"] = ColdPoint("cold", False, size, factory, client, rng)
            points[name, "warm"] = WarmPoint("warm", False, size, factory, client, rng)
        run_interleaved([(floor, cfg.store_calls)] + [(p, cfg.store_calls) for p in points.values()],
                        cfg.rounds, rng, "stores")
        if redis_store is not None:
            redis_store.clear()
            redis_store.close()
    shutil.rmtree(twin, ignore_errors=True)
    floor.close()
    client.close()
    f = point_summary(floor)
    rows = []
    for name in names:
        if name in skipped:
            rows.append({"store": name, "skipped": skipped[name]})
            continue
        row: dict[str, Any] = {"store": name}
        for which in ("cold", "warm"):
            if (name, which) in points:
                row[which] = point_summary(points[name, which], f)
        rows.append(row)
    return {"entries": size, "calls_per_point": cfg.store_calls, "floor": f, "points": rows}


def print_stores(res: dict[str, Any]) -> None:
    say(f"6. Hit time by store, {fmt_n(res['entries'])} entries, plugin path, non-streamed "
        f"(median ms of {res['calls_per_point']} calls)")
    say(f"   {'store':<22}{'cold ms':>10}{'x floor':>9}{'cpu x':>7}{'warm ms':>10}{'x floor':>9}{'cpu x':>7}")
    say(f"   {'floor':<22}{res['floor']['median']:>10.3f}{1.0:>9.2f}{1.0:>7.2f}")
    for row in res["points"]:
        if "skipped" in row:
            say(f"   {row['store']:<22}skipped: {row['skipped']}")
            continue
        line = f"   {row['store']:<22}"
        for which in ("cold", "warm"):
            c = row.get(which)
            line += f"{c['median']:>10.3f}{c['ratio']:>9.2f}{c['cpu_ratio']:>7.2f}" if c else f"{'(as file)':>26}"
        say(line)


# -- section 4: recording --------------------------------------------------------------------------


def section_record(cfg: Config, workdir: Path) -> dict[str, Any]:
    from fakeapi import FakeLLMServer

    total = cfg.record_calls
    batches = max(2, min(10, total // 50))
    per = total // batches
    target = workdir / "recorded"
    shutil.rmtree(target, ignore_errors=True)
    plain: list[float] = []
    recorded: list[float] = []
    # CPU time of the calling thread per call: the fake server answers in other threads, so
    # the difference is what recording costs the caller (key, YAML, redaction, write, locks)
    cpu: dict[str, list[float]] = {"plain": [], "recrd": []}
    plain_wall = record_wall = 0.0
    with FakeLLMServer(gzip_json=False) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0)
        session = CacheSession(Settings(mode=Mode.RECORD, cassette_dir=target))
        scope = session.scope("bench-record")

        def run(tag: str, samples: list[float], first: int) -> float:
            started = time.perf_counter()
            for n in range(first, first + per):
                msgs = [{"role": "user", "content": f"{tag} question {n:06d}"}]
                t0, c0 = time.perf_counter(), time.thread_time()
                client.chat.completions.create(model=bc.MODEL, messages=msgs)  # type: ignore[arg-type]
                samples.append(time.perf_counter() - t0)
                cpu[tag].append(time.thread_time() - c0)
            return time.perf_counter() - started

        # one untimed call each way: connections, first-use costs
        client.chat.completions.create(model=bc.MODEL, messages=[{"role": "user", "content": "warm up"}])
        with intercept(scope):
            client.chat.completions.create(model=bc.MODEL, messages=[{"role": "user", "content": "warm up record"}])
        for b in range(batches):
            gc.collect()
            if b % 2 == 0:
                plain_wall += run("plain", plain, b * per)
                with intercept(scope):
                    record_wall += run("recrd", recorded, b * per)
            else:
                with intercept(scope):
                    record_wall += run("recrd", recorded, b * per)
                plain_wall += run("plain", plain, b * per)
        client.close()
        server_calls = server.count("/v1/chat/completions")
    if scope.stats.recorded != len(recorded) + 1:
        raise RuntimeError(f"record: expected {len(recorded) + 1} recorded, got {scope.stats}")
    files = len(list((target / bc.MODEL).glob("*.yaml")))
    p, r = summary(plain), summary(recorded)
    return {
        "calls": len(plain),
        "plain": {**p, "calls_per_s": len(plain) / plain_wall},
        "record": {**r, "calls_per_s": len(recorded) / record_wall},
        "ratio": r["median"] / p["median"],
        "ratio_throughput": (len(plain) / plain_wall) / (len(recorded) / record_wall),
        "cpu_per_call_ms": (statistics.median(cpu["recrd"]) - statistics.median(cpu["plain"])) * 1000,
        "server_calls": server_calls,
        "cassettes_written": files,
    }


def print_record(res: dict[str, Any]) -> None:
    say(f"4. Recording, {fmt_n(res['calls'])} chat completions each way against the local fake API (unique prompts)")
    say(f"   {'':<24}{'calls/s':>10}{'median ms':>11}")
    say(f"   {'without interception':<24}{res['plain']['calls_per_s']:>10.0f}{res['plain']['median']:>11.3f}")
    say(f"   {'record mode':<24}{res['record']['calls_per_s']:>10.0f}{res['record']['median']:>11.3f}")
    say(f"   overhead per call (median ratio): {res['ratio']:.2f}x   (throughput ratio {res['ratio_throughput']:.2f}x)")
    say(f"   CPU per recorded call in the calling thread, over the plain call: {res['cpu_per_call_ms']:.3f} ms")


# -- section 5: eviction ---------------------------------------------------------------------------


def _direct_pass(directory: Path, cap: Cap, expect_left: int) -> dict[str, float]:
    """One eviction pass as its parts: scan, plan, delete (a fresh FileStore, as a new session has)."""
    gc.collect()
    store = FileStore(directory)
    t0 = time.perf_counter()
    metas = list(store.scan())
    t1 = time.perf_counter()
    plan = plan_eviction(metas, cap, store.usage(), datetime.now(timezone.utc), Settings().ttl)
    t2 = time.perf_counter()
    for meta in plan.evict:
        store.delete(meta)
    t3 = time.perf_counter()
    left = bc.corpus_bytes(directory)[0]
    if left != expect_left:
        raise RuntimeError(f"evict: planned {len(plan.evict)}, {left} left, expected {expect_left}")
    return {"scan": t1 - t0, "plan": t2 - t1, "delete": t3 - t2, "total": t3 - t0}


def _session_pass(directory: Path, cap: Cap, expect_evicted: int) -> float:
    """The same pass as the plugin runs it at session end."""
    gc.collect()
    session = CacheSession(Settings(mode=Mode.REPLAY, cassette_dir=directory, cap=cap))
    session.scope("bench-evict")
    t0 = time.perf_counter()
    session.finish(force=True)
    seconds = time.perf_counter() - t0
    if session.stats.evicted != expect_evicted:
        raise RuntimeError(f"evict: session evicted {session.stats.evicted}, expected {expect_evicted}")
    return seconds


def section_evict(cfg: Config, corpora: bc.Corpora, workdir: Path) -> dict[str, Any]:
    """Two passes per copy: the first ever (no derived data beside the cassettes), then a later one
    (a new store, with whatever the first pass left in .llm-cache/, e.g. a scan index) evicting as many."""
    size = cfg.evict_size
    step = size // 100
    caps = {"first": Cap(max_entries=size - step, policy=Eviction.LRU),
            "later": Cap(max_entries=size - 2 * step, policy=Eviction.LRU)}
    source = corpora.get(size)
    direct: dict[str, list[dict[str, float]]] = {"first": [], "later": []}
    plugin: dict[str, list[float]] = {"first": [], "later": []}
    derived = 0
    copy = workdir / "evict"
    for rep in range(cfg.evict_reps):
        bc.link_copy(source, copy)
        direct["first"].append(_direct_pass(copy, caps["first"], size - step))
        derived = bc.derived_files(copy)
        direct["later"].append(_direct_pass(copy, caps["later"], size - 2 * step))
        bc.link_copy(source, copy)
        plugin["first"].append(_session_pass(copy, caps["first"], step))
        plugin["later"].append(_session_pass(copy, caps["later"], step))
        note(f"evict: rep {rep + 1}/{cfg.evict_reps}: first {direct['first'][-1]['total']:.2f} s direct, "
             f"{plugin['first'][-1]:.2f} s finish(); later {direct['later'][-1]['total']:.2f} s, "
             f"{plugin['later'][-1]:.2f} s")
    shutil.rmtree(copy, ignore_errors=True)
    out: dict[str, Any] = {"entries": size, "evicted": step, "reps": cfg.evict_reps,
                           "derived_files_after_first_pass": derived}
    for which in ("first", "later"):
        med = {k: statistics.median(d[k] for d in direct[which]) for k in ("scan", "plan", "delete", "total")}
        out[which] = {
            "cap_entries": caps[which].max_entries,
            "seconds": med["total"], "scan_s": med["scan"], "plan_s": med["plan"], "delete_s": med["delete"],
            "session_finish_s": statistics.median(plugin[which]),
        }
    return out


def print_evict(res: dict[str, Any]) -> None:
    say(f"5. Eviction pass over {fmt_n(res['entries'])} cassettes evicting {fmt_n(res['evicted'])} (lru; median of "
        f"{res['reps']}); first: no derived data beside the cassettes; later: the next pass, a new store")
    for which in ("first", "later"):
        r = res[which]
        say(f"   {which:<6} cap {fmt_n(r['cap_entries']):>7}: scan {r['scan_s']:.2f} s + plan {r['plan_s']:.2f} s + "
            f"delete {r['delete_s']:.2f} s = {r['seconds']:.2f} s;  CacheSession.finish(force=True): "
            f"{r['session_finish_s']:.2f} s")


# -- section 3: warming and memory ------------------------------------------------------------------

WARM_SCRIPT = textwrap.dedent("""
    import gc, json, sys, time
    from pathlib import Path

    def rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    from llm_cache.modes import Mode
    from llm_cache.engine.session import CacheSession, open_settings_store
    from llm_cache.settings import Settings

    # parsed copies of every cassette (llm_cache_parsed_copies = on), so the 2nd run reads them
    session = CacheSession(Settings(mode=Mode.REPLAY, cassette_dir=Path(sys.argv[1]), warm=(), parsed_copies=0))
    gc.collect()
    before = rss()
    t0 = time.perf_counter()
    session.warm()
    seconds = time.perf_counter() - t0
    after = rss()
    gc.collect()
    after_gc = rss()
    t0 = time.perf_counter()
    close = getattr(session, "close", None)
    if close is not None:
        close()  # as at session end: the file store writes its parsed copies
    close_seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "warmed": session.stats.warmed, "tier": len(session.tier),
                      "rss_before": before, "rss_after": after, "rss_after_gc": after_gc,
                      "close_seconds": close_seconds}))
""")


def section_warm(cfg: Config, corpora: bc.Corpora) -> dict[str, Any]:
    rows = []
    for size in cfg.warm_sizes:
        directory = corpora.get(size)
        files, disk, allocated = bc.corpus_bytes(directory)
        corpora.clean(size)
        # first from the YAML (a first session ever), then from what its close() left (parsed copies)
        for source in ("yaml", "parsed copies"):
            if source == "parsed copies" and not bc.derived_files(directory):
                rows.append({"entries": size, "source": source, "skipped": "the file store left no parsed copies"})
                continue
            proc = subprocess.run([sys.executable, "-c", WARM_SCRIPT, str(directory)], check=False, capture_output=True,
                                  text=True, timeout=900, env=clean_env())
            if proc.returncode != 0:
                raise RuntimeError(f"warm subprocess failed:\n{proc.stderr[-3000:]}")
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            if got["warmed"] != files:
                raise RuntimeError(f"warm: warmed {got['warmed']} of {files}")
            delta = got["rss_after"] - got["rss_before"]
            rows.append({
                "entries": size, "source": source, "seconds": got["seconds"], "warmed": got["warmed"],
                "rss_before": got["rss_before"], "rss_after": got["rss_after"], "rss_delta": delta,
                "rss_after_gc": got["rss_after_gc"],
                "disk_bytes": disk, "disk_allocated": allocated, "rss_per_disk": delta / disk,
                "entries_per_s": got["warmed"] / got["seconds"], "close_seconds": got["close_seconds"],
            })
            note(f"warm {fmt_n(size)} from {source}: {got['seconds']:.1f} s, RSS +{delta / 1e6:.0f} MB, "
                 f"close {got['close_seconds']:.1f} s")
        corpora.clean(size)
    return {"points": rows}


def print_warm(res: dict[str, Any]) -> None:
    say("3. Warming (CacheSession.warm, as --llm-cache-warm=all) and resident memory, in a fresh process;")
    say("   from the YAML (first session ever), then from the parsed copies that session's close() wrote")
    say(f"   {'entries':>9}  {'from':<14}{'seconds':>9}{'entries/s':>11}{'RSS delta MB':>14}{'disk MB':>9}"
        f"{'RSS/disk':>10}{'close() s':>11}")
    for r in res["points"]:
        if "skipped" in r:
            say(f"   {fmt_n(r['entries']):>9}  {r['source']:<14}skipped: {r['skipped']}")
            continue
        say(f"   {fmt_n(r['entries']):>9}  {r['source']:<14}{r['seconds']:>9.2f}{r['entries_per_s']:>11.0f}"
            f"{r['rss_delta'] / 1e6:>14.1f}{r['disk_bytes'] / 1e6:>9.1f}{r['rss_per_disk']:>10.2f}"
            f"{r['close_seconds']:>11.2f}")


# -- section 2: start-up -----------------------------------------------------------------------------

TEST_FILE = '''\
import os
import time

os.environ["OPENAI_BASE_URL"] = "{base_url}"
os.environ["OPENAI_API_KEY"] = "bench-not-a-key"

import openai

HIT_FILE = {hit_file!r}


def test_one_replayed_call(llm_cache):
    client = openai.OpenAI(max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{{"role": "user", "content": "bench question 0"}}]
    )
    hit = time.time()
    with open(HIT_FILE, "w") as handle:
        handle.write(repr(hit))
    assert reply.choices[0].message.content == "echo: bench question 0"
    assert llm_cache.stats.hits == 1
'''


def clean_env() -> dict[str, str]:
    drop = ("LLM_CACHE_", "PYTEST_", "OPENAI_", "ANTHROPIC_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def section_startup(cfg: Config, corpora: bc.Corpora, workdir: Path) -> dict[str, Any]:
    projects = {}
    for size in cfg.startup_sizes:
        corpus = corpora.get(max(size, 1))  # "0": only the one cassette the test uses
        project = workdir / f"project-{size}"
        shutil.rmtree(project, ignore_errors=True)
        project.mkdir()
        # copies of every cassette, so that the 2nd run with warming reads what the 1st wrote
        (project / "pytest.ini").write_text("[pytest]\nllm_cache_parsed_copies = on\n")
        (project / "cassettes").symlink_to(corpus, target_is_directory=True)
        hit_file = project / "hit.txt"
        (project / "test_startup.py").write_text(TEST_FILE.format(base_url=bc.BASE_URL, hit_file=str(hit_file)))
        projects[size] = (project, hit_file, max(size, 1))
    for size in cfg.startup_sizes:
        corpora.clean(projects[size][2])
    # Only this plugin: the venv's other pytest plugins (hypothesis, xdist) add seconds of their own.
    env = {**clean_env(), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}

    def launch(size: int, warm: bool) -> dict[str, float]:
        project, hit_file, _ = projects[size]
        hit_file.unlink(missing_ok=True)
        command = [sys.executable, "-m", "pytest", "-p", "llm_cache.pytest.plugin", "-p", "no:cacheprovider", "-q",
                   "test_startup.py"]
        if warm:
            command.append("--llm-cache-warm=all")
        started = time.time()
        proc = subprocess.run(command, check=False, cwd=project, env=env, capture_output=True, text=True, timeout=900)
        ended = time.time()
        if proc.returncode != 0 or not hit_file.exists():
            raise RuntimeError(f"start-up run failed ({size}, warm={warm}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        return {"first_hit": float(hit_file.read_text()) - started, "wall": ended - started}

    if not cfg.quick:
        launch(min(cfg.startup_sizes), False)  # untimed: imports from a cold page cache
        corpora.clean(projects[min(cfg.startup_sizes)][2])
    rng = random.Random(SEED + 2)
    runs: dict[tuple[int, str], list[dict[str, float]]] = {
        (s, m): [] for s in cfg.startup_sizes for m in STARTUP_MODES
    }
    for rep in range(cfg.startup_reps):
        sizes = list(cfg.startup_sizes)
        rng.shuffle(sizes)
        for size in sizes:
            corpus_size = projects[size][2]
            corpora.clean(corpus_size)
            runs[size, "no"].append(launch(size, False))
            corpora.clean(corpus_size)
            runs[size, "first"].append(launch(size, True))  # leaves what its session end writes
            runs[size, "again"].append(launch(size, True))
            corpora.clean(corpus_size)
        note(f"startup: rep {rep + 1}/{cfg.startup_reps} done")
    rows = []
    small = min(cfg.startup_sizes)
    base = {m: statistics.median(r["first_hit"] for r in runs[small, m]) for m in STARTUP_MODES}
    for size in cfg.startup_sizes:
        for mode in STARTUP_MODES:
            rs = runs[size, mode]
            first = statistics.median(r["first_hit"] for r in rs)
            rows.append({
                "entries": size, "warm": mode, "first_hit_s": first, "delta_s": first - base[mode],
                "wall_s": statistics.median(r["wall"] for r in rs), "runs": [r["first_hit"] for r in rs],
            })
    return {"reps": cfg.startup_reps, "points": rows}


STARTUP_MODES = ("no", "first", "again")
STARTUP_LABEL = {"no": "no", "first": "all, 1st run", "again": "all, 2nd run"}


def print_startup(res: dict[str, Any]) -> None:
    say(f"2. Start-up: launching `python -m pytest` to the first replayed hit (median of {res['reps']});")
    say("   warm all, 2nd run: right after the 1st, with what its session end left (parsed copies)")
    say(f"   {'cassettes':>10}  {'warm':<14}{'to first hit s':>15}{'vs 0 s':>9}{'whole run s':>13}")
    for r in res["points"]:
        say(f"   {fmt_n(r['entries']):>10}  {STARTUP_LABEL[r['warm']]:<14}{r['first_hit_s']:>15.3f}"
            f"{r['delta_s']:>+9.3f}{r['wall_s']:>13.3f}")


# -- targets -------------------------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def add(name: str, limit: str, value: float, shown: str, ok: bool, where: str = "") -> None:
        out.append({"target": name, "limit": limit, "value": value, "measured": shown, "where": where, "pass": ok})

    hit = results.get("hit")
    if hit:
        for which in ("warm", "cold", "cold_copy"):
            measured = [r for r in hit["points"] if r.get(which)]
            if not measured:
                continue
            worst = max(measured, key=lambda r: r[which]["ratio"])
            v, limit = worst[which]["ratio"], LIMIT[which]
            name = {"warm": "warm hit", "cold": "cold hit (first read ever, YAML)",
                    "cold_copy": "cold hit (parsed copy from an earlier session)"}[which]
            add(f"{name} <= {limit}x floor", f"{limit}x", v, f"{v:.2f}x",
                v <= limit, f"worst: {worst['kind']}, {fmt_n(worst['entries'])} cassettes")
        worst = max(hit["scale"], key=lambda s: s["ratio"])
        v = worst["ratio"]
        add(f"hit time at {fmt_n(worst['large'])} vs {fmt_n(worst['small'])} <= 1.05x", "1.05x", v, f"{v:.3f}x",
            v <= 1.05, f"worst: {LABEL[worst['which']]} {worst['kind']}")
    rec = results.get("record")
    if rec:
        v = rec["ratio"]
        add("record-mode overhead per call <= 1.5x", "1.5x", v, f"{v:.2f}x", v <= 1.5,
            f"{rec['record']['calls_per_s']:.0f} vs {rec['plain']['calls_per_s']:.0f} calls/s")
        v = rec["cpu_per_call_ms"]
        add("CPU per recorded call <= 0.5 ms", "0.5 ms", v, f"{v:.3f} ms", v <= 0.5,
            "YAML, write, redaction, locks: caller's thread time over a plain call")
    st = results.get("startup")
    if st:
        cold = [r for r in st["points"] if r["warm"] == "no"]
        big = max(cold, key=lambda r: r["entries"])
        v = big["delta_s"]
        add(f"start-up at {fmt_n(big['entries'])} <= +0.5 s over 0 (no warming)", "+0.5 s", v, f"{v:+.3f} s",
            v <= 0.5, f"{big['first_hit_s']:.2f} s to first hit")
    warm = results.get("warm")
    if warm:
        for source in ("yaml", "parsed copies"):
            rows = [r for r in warm["points"] if r["source"] == source and "skipped" not in r]
            if not rows:
                continue
            big = max(rows, key=lambda r: r["entries"])
            v = big["seconds"]
            add(f"warming {fmt_n(big['entries'])} <= 10 s (from {source})", "10 s", v, f"{v:.2f} s", v <= 10,
                f"{big['entries_per_s']:.0f} entries/s")
            v = big["rss_per_disk"]
            add(f"RSS after warming {fmt_n(big['entries'])} <= 2x bytes on disk (from {source})", "2x", v,
                f"{v:.2f}x", v <= 2, f"+{big['rss_delta'] / 1e6:.0f} MB for {big['disk_bytes'] / 1e6:.0f} MB of YAML")
    ev = results.get("evict")
    if ev:
        for which, label in (("first", "first pass"), ("later", "later pass")):
            r = ev[which]
            v = max(r["seconds"], r["session_finish_s"])
            add(f"one eviction pass over {fmt_n(ev['entries'])} <= 2 s ({label})", "2 s", v, f"{v:.2f} s", v <= 2,
                "slower of scan+plan+delete and finish(force=True)")
    return out


def print_targets(rows: list[dict[str, Any]]) -> None:
    say("Targets (ratios measured side by side in this run)")
    say(f"   {'target':<66}{'measured':>10}  {'result':<6}  where")
    for r in rows:
        say(f"   {r['target']:<66}{r['measured']:>10}  {verdict(r['pass']):<6}  {r['where']}")


# -- main -------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only: well under a minute")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write the results (default {DEFAULT_JSON})")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated: {','.join(SECTIONS)}")
    parser.add_argument("--workdir", type=Path, default=None, help="where corpora go (default: a new temporary dir, removed at the end)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in chosen]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    started = time.perf_counter()
    info = machine()
    say(f"{TABLE_HEADER} ({'quick' if cfg.quick else 'full'} run, {datetime.now().isoformat(timespec='seconds')})")
    say(f"machine: {info['cpu']}, {info['cores']} cores, {info['implementation']} {info['python']}, "
        f"load {' '.join(info['loadavg_at_start'])}")
    say("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + f", libyaml {info['libyaml']}")
    say()

    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="llm-cache-bench-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": info, "quick": cfg.quick, "sections": args.sections,
                               "started": datetime.now(timezone.utc).isoformat()}
    try:
        templates = bc.record_templates(workdir)
        corpora = bc.Corpora(workdir, templates)
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "hit": lambda: section_hit(cfg, corpora, templates, workdir),
            "stores": lambda: section_stores(cfg, corpora, templates, workdir),
            "record": lambda: section_record(cfg, workdir),
            "evict": lambda: section_evict(cfg, corpora, workdir),
            "warm": lambda: section_warm(cfg, corpora),
            "startup": lambda: section_startup(cfg, corpora, workdir),
        }
        for name in args.sections:
            t0 = time.perf_counter()
            note(f"section {name} ...")
            results[name] = runners[name]()
            results[name]["section_seconds"] = time.perf_counter() - t0
            note(f"section {name} took {time.perf_counter() - t0:.1f} s")
        results["corpora"] = {str(k): {"seconds_to_write": v} for k, v in sorted(corpora.seconds.items())}
        report(results, started, args.json)
    finally:
        if own_workdir:
            note(f"removing {workdir}")
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def report(results: dict[str, Any], started: float, path: Path) -> None:
    """Print the tables (in the brief's numbering) and the targets; write the JSON."""
    printers = {"hit": print_hit, "stores": print_stores, "record": print_record, "evict": print_evict,
                "warm": print_warm, "startup": print_startup}
    for name in ("hit", "startup", "warm", "record", "evict", "stores"):
        if name in results:
            printers[name](results[name])
            say()
    if results.get("corpora"):
        say("corpora written: " + ", ".join(f"{fmt_n(int(k))} cassettes in {v['seconds_to_write']:.1f} s"
                                            for k, v in results["corpora"].items()))
        say()
    results["targets"] = targets(results)
    print_targets(results["targets"])
    results["seconds"] = time.perf_counter() - started
    try:
        results["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    say(f"\ntotal {results['seconds']:.0f} s; JSON: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
