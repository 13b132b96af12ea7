"""The cache under load: concurrent asyncio callers through AsyncOpenAI on ``cache.async_transport()``.

    python benchmarks/bench_load.py                        # 64 callers, every store: about 60 s on 2 cores
    python benchmarks/bench_load.py --callers 8 --requests-per-caller 5 --stores memory
    python benchmarks/bench_load.py --json out.json        # the figures as JSON too

The API is ``load_server.py``: a separate asyncio process on ``127.0.0.1`` that answers
every chat completion in exactly ``--latency-ms`` and counts the calls per prompt. The
application is one event loop with ``--callers`` tasks sharing one
``AsyncOpenAI(http_client=httpx2.AsyncClient(transport=cache.async_transport(inner)))``
(``inner``: an ``httpx2.AsyncHTTPTransport`` allowing a connection per caller; the row
without the cache uses that transport alone). Each caller awaits its requests one after
the other and parses each answer, as an application would.

Requests repeat: with ``--repeat 0.9``, the N requests of a run ask 0.1 N distinct
prompts. The first request asks a new prompt, so do 0.1 N - 1 others at random places of
the run; every other request repeats one of the prompts asked before it, chosen at random.
Caller c takes requests c, c + callers, c + 2 callers... of that sequence. The cache's
answer to each request is checked against the prompt.

Two phases per row, each on an empty cache:

- closed loop: every caller sends its next request as soon as it has its answer. This
  gives requests/s, latency, and the upstream calls against the distinct requests;
- paced: the same, each caller pausing between requests (exponential, mean ``--think-ms``),
  so the loop is busy only part of the time: there the loop-lag probe shows how long
  anything held the loop, not how many callers were waiting their turn.

Rows: the floor (the same SDK call over an ``httpx2.MockTransport`` answering at once: no
cache and no network, what an SDK call costs at least), no cache (straight to the server),
then each store: ``memory://``, ``file://`` (a temporary directory), ``redis://`` (a
redis-server started here), the same Redis with no memory tier in front (``memory_entries=0``:
every hit is read from Redis, as when another process recorded it) and
``redis+cluster://`` (a 3-master cluster started here, when the store and
``tests/redis_cluster.py`` exist). These Redis rows run with the store's default for a
server on this machine, ``asyncio=auto``: each round trip made on the loop by the blocking
client. ``--stores`` also takes ``redis-awaited`` and ``redis-direct-awaited``, the two
Redis rows with ``?asyncio=yes`` (each round trip awaited through ``redis.asyncio``, the
default for a server on another machine), and ``--redis-rtt-ms`` puts a network's round
trip between the application and Redis: the two kinds side by side in one run. Rounds
run the rows in a rotated order; their figures are pooled.

Figures: latency is from the call to the parsed answer. A hit is an answer marked
``x-llm-cache-status: hit``; one that waited for another caller's request of the same
prompt, still on its way upstream, is counted apart ("joined"): it took the upstream's time,
not the cache's. The cost of a hit is its p99 minus the floor's p99, in wall time and in
this thread's CPU time (a hit never waits for anything, so its CPU time is its own; on a
busy machine the wall time also holds the moments the OS ran something else). The
loop-lag probe is a task that sleeps 1 ms in a loop and records how late it wakes; the
idle row is the probe alone on the loop, the machine's own lateness. A hold is a stretch
of the cache's own code, run without giving the loop back: each synchronous stretch of
the caching transport and of the body it returns is timed, the wrapped HTTP transport's
stretches inside them taken out. The garbage collector's pauses (``gc.callbacks``, every
generation) that fall in a hold are timed too and shown apart ("gc max", "own max"): a
collection walks the whole heap, the application's objects as much as the cache's. A step is the longest any caller ran without giving the
loop back (SDK and cache together: a hit never waits, so a caller's consecutive hits are
one step). The targets are judged on these figures and printed last: a hit's cost p99
(memory <= 2 ms, Redis <= 5 ms), upstream calls = distinct requests, and no hold over 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Generator
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))  # redis_server.RedisServer (and redis_cluster, when there)

import httpx2
import load_server
from openai import AsyncOpenAI

from llm_cache import LLMCache

MODEL = "gpt-4o"
SEED = 20240806
STATUS = "x-llm-cache-status"
PROBE_S = 0.001
ALL_STORES = ("memory", "file", "redis", "redis-direct", "cluster", "redis-awaited", "redis-direct-awaited")
REDIS_ROWS = ("redis", "redis-direct", "redis-awaited", "redis-direct-awaited")
LABELS = {
    "floor": "floor (MockTransport)", "none": "no cache", "memory": "memory://", "file": "file://",
    "redis": "redis://", "redis-direct": "redis://, no memory tier", "cluster": "redis+cluster://",
    # the same with ?asyncio=yes: every round trip awaited through redis.asyncio (on loopback the
    # store's default, asyncio=auto, makes them on the loop with the blocking client)
    "redis-awaited": "redis://, asyncio=yes", "redis-direct-awaited": "redis://, no tier, asyncio=yes",
}
# targets (ms)
HIT_COST = {"memory": 2.0, "redis": 5.0, "redis-direct": 5.0, "redis-awaited": 5.0, "redis-direct-awaited": 5.0}
MAX_BLOCK_MS = 5.0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def say(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


# -- the workload -----------------------------------------------------------------------------


@dataclass
class Workload:
    prompts: list[str]  # the distinct prompts
    schedule: list[list[int]]  # per caller, the prompt of each of its requests

    @property
    def total(self) -> int:
        return sum(len(s) for s in self.schedule)


def workload(callers: int, per_caller: int, repeat: float, seed: int, tag: str) -> Workload:
    """``callers x per_caller`` requests of which ``1 - repeat`` ask a prompt not asked before."""
    total = callers * per_caller
    distinct = max(1, min(total, round(total * (1 - repeat))))
    rng = random.Random(seed)
    firsts = {0, *rng.sample(range(1, total), distinct - 1)}
    sequence: list[int] = []
    asked = 0
    for position in range(total):
        if position in firsts:
            sequence.append(asked)
            asked += 1
        else:
            sequence.append(rng.randrange(asked))
    prompts = [f"load question {tag}-{i}: what is {i} times {i % 13}?" for i in range(distinct)]
    return Workload(prompts, [sequence[c::callers] for c in range(callers)])


# -- timing the loop's holders ------------------------------------------------------------------


class Clock:
    """The synchronous stretches of what it drives. Each ``send`` into a coroutine runs it
    until it suspends or ends, the event loop held all that time. ``cache`` stretches have
    the ``inner`` stretches that ran inside them taken out; ``caller`` stretches are whole."""

    def __init__(self) -> None:
        self.nested = 0.0  # seconds of inner stretches so far
        self.nested_cpu = 0.0
        self.holds: list[float] = []  # ms, the cache's own stretches
        self.holds_cpu: list[float] = []  # ms of this thread's CPU time in them
        self.holds_gc: list[float] = []  # ms of garbage collection in them (the whole heap's work)
        self.steps: list[float] = []  # ms, the callers' steps
        self.gc = 0.0  # seconds of garbage collection so far, every generation, any thread
        self.nested_gc = 0.0  # of which inside inner stretches
        self._gc_started = 0.0

    def collected(self, phase: str, info: dict[str, int]) -> None:
        """A ``gc.callbacks`` hook: the collector's time, taken out of the holds it fell in."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc += time.perf_counter() - self._gc_started

    def drive(self, coro: Any, kind: str) -> Awaitable[Any]:
        return _Driven(self, coro, kind)

    def _took(self, kind: str, started: tuple[float, float, float, float, float, float]) -> None:
        wall, cpu = time.perf_counter() - started[0], time.thread_time() - started[1]
        if kind == "inner":
            self.nested += wall
            self.nested_cpu += cpu
            self.nested_gc += self.gc - started[4]
        elif kind == "cache":
            self.holds.append((wall - (self.nested - started[2])) * 1000)
            self.holds_cpu.append((cpu - (self.nested_cpu - started[3])) * 1000)
            self.holds_gc.append(((self.gc - started[4]) - (self.nested_gc - started[5])) * 1000)
        else:
            self.steps.append(wall * 1000)


class _Driven:
    __slots__ = ("clock", "coro", "kind")

    def __init__(self, clock: Clock, coro: Any, kind: str) -> None:
        self.clock, self.coro, self.kind = clock, coro, kind

    def __await__(self) -> Generator[Any, Any, Any]:
        clock, coro, kind = self.clock, self.coro, self.kind
        value: Any = None
        error: BaseException | None = None
        while True:
            started = (time.perf_counter(), time.thread_time(), clock.nested, clock.nested_cpu, clock.gc,
                       clock.nested_gc)
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                clock._took(kind, started)
                return stop.value
            except BaseException:
                clock._took(kind, started)
                raise
            clock._took(kind, started)
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - a cancellation: passed on to the coroutine
                value, error = None, exc


class HeldStream(httpx2.AsyncByteStream):
    """A response body whose every step is timed as ``kind``."""

    def __init__(self, stream: Any, clock: Clock, kind: str) -> None:
        self.stream, self.clock, self.kind = stream, clock, kind

    async def __aiter__(self) -> Any:
        iterator = self.stream.__aiter__()
        while True:
            try:
                chunk = await self.clock.drive(iterator.__anext__(), self.kind)
            except StopAsyncIteration:
                return
            yield chunk

    async def aclose(self) -> None:
        await self.clock.drive(self.stream.aclose(), self.kind)


class HeldTransport(httpx2.AsyncBaseTransport):
    """A transport whose stretches (the request's and its body's) are timed as ``kind``."""

    def __init__(self, wrapped: Any, clock: Clock, kind: str) -> None:
        self.wrapped, self.clock, self.kind = wrapped, clock, kind

    async def handle_async_request(self, request: Any) -> Any:
        response = await self.clock.drive(self.wrapped.handle_async_request(request), self.kind)
        response.stream = HeldStream(response.stream, self.clock, self.kind)
        return response

    async def aclose(self) -> None:
        await self.wrapped.aclose()


# -- one run ------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one phase of one row measured."""

    requests: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this thread's CPU time over the run (the loop's, every caller's)
    latencies: list[float] = field(default_factory=list)  # ms, every request
    cpu: list[float] = field(default_factory=list)  # ms of this thread's CPU time, every request
    hits: list[float] = field(default_factory=list)  # ms, hits of entries already stored
    hits_cpu: list[float] = field(default_factory=list)  # their CPU time (a hit never waits: all its own)
    joined: list[float] = field(default_factory=list)  # ms, hits that waited for one in flight
    misses: list[float] = field(default_factory=list)  # ms, misses
    other: dict[str, int] = field(default_factory=dict)  # any other status: stale, refresh, bypass
    lags: list[float] = field(default_factory=list)  # ms, how late the probe woke
    gc_pauses: list[float] = field(default_factory=list)  # ms, the garbage collections of generation 2
    holds: list[float] = field(default_factory=list)
    holds_cpu: list[float] = field(default_factory=list)
    holds_gc: list[float] = field(default_factory=list)  # ms of garbage collection in each hold
    steps: list[float] = field(default_factory=list)
    distinct: int = 0
    upstream: int = 0
    upstream_distinct: int = 0
    most_calls_per_prompt: int = 0
    server: dict[str, Any] = field(default_factory=dict)
    wrong: int = 0

    def add(self, other: Run) -> None:
        for name in ("requests", "seconds", "cpu_seconds", "distinct", "upstream", "upstream_distinct", "wrong"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("latencies", "cpu", "hits", "hits_cpu", "joined", "misses", "lags", "gc_pauses", "holds",
                     "holds_cpu", "holds_gc", "steps"):
            getattr(self, name).extend(getattr(other, name))
        for status, count in other.other.items():
            self.other[status] = self.other.get(status, 0) + count
        self.most_calls_per_prompt = max(self.most_calls_per_prompt, other.most_calls_per_prompt)
        self.server = {k: max(v, self.server.get(k, v)) for k, v in other.server.items()}

    def own_holds(self) -> list[float]:
        """The holds with the collector's pauses in them taken out: the cache's own code."""
        return [hold - collecting for hold, collecting in zip(self.holds, self.holds_gc)]

    def summary(self) -> dict[str, Any]:
        def dist(values: list[float]) -> dict[str, Any]:
            return {"n": len(values), "p50": percentile(values, 0.5), "p99": percentile(values, 0.99),
                    "max": max(values, default=None)}

        return {
            "requests": self.requests, "seconds": self.seconds,
            "cpu_ms_per_request": self.cpu_seconds * 1000 / self.requests if self.requests else None,
            "requests_per_s": self.requests / self.seconds if self.seconds else None,
            "latency_ms": dist(self.latencies), "cpu_ms": dist(self.cpu), "hit_ms": dist(self.hits),
            "hit_cpu_ms": dist(self.hits_cpu), "joined_ms": dist(self.joined), "miss_ms": dist(self.misses),
            "other_statuses": self.other, "loop_lag_ms": dist(self.lags), "gc2_pause_ms": dist(self.gc_pauses),
            "cache_hold_ms": dist(self.holds),
            "cache_hold_cpu_ms": dist(self.holds_cpu), "cache_hold_gc_ms": dist(self.holds_gc),
            "cache_hold_without_gc_ms": dist(self.own_holds()), "caller_step_ms": dist(self.steps),
            "cache_holds_over_limit": sum(h > MAX_BLOCK_MS for h in self.holds),
            "cache_holds_cpu_over_limit": sum(c > MAX_BLOCK_MS for c in self.holds_cpu),
            "distinct": self.distinct, "upstream": self.upstream, "upstream_distinct": self.upstream_distinct,
            "most_calls_per_prompt": self.most_calls_per_prompt, "wrong_answers": self.wrong, "server": self.server,
        }


class Server:
    """load_server.py in a subprocess: started here, stopped when this ends (its stdin closes)."""

    def __init__(self, latency_ms: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve().parent / "load_server.py"),
             "--latency-ms", str(latency_ms), "--lifetime", "1800"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"load_server.py did not start (said {self.url!r})")
        self.control = httpx2.Client(base_url=self.url, timeout=10)

    def reset(self) -> None:
        self.control.post("/reset").raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = self.control.get("/stats")
        response.raise_for_status()
        return dict(response.json())

    def stop(self) -> None:
        if getattr(self, "control", None) is not None:
            self.control.close()
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


async def probe(lags: list[float], stop: asyncio.Event) -> None:
    """Sleep 1 ms, again and again, and keep how late each wake-up came."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(PROBE_S)
        lags.append((time.perf_counter() - started - PROBE_S) * 1000)


async def drive_load(client: AsyncOpenAI, load: Workload, think_ms: float, clock: Clock, seed: int) -> Run:
    """Every caller's requests through ``client``, the probe running meanwhile."""
    run = Run(requests=load.total, distinct=len(load.prompts))
    answered: dict[int, float] = {}  # prompt -> when its first answer from upstream was in
    expected = [load_server.answer_text(p) for p in load.prompts]

    async def caller(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        for prompt in load.schedule[index]:
            if think_ms:
                await asyncio.sleep(rng.expovariate(1000 / think_ms))
            started, cpu = time.perf_counter(), time.thread_time()
            raw = await client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": load.prompts[prompt]}], max_tokens=128)
            answer = raw.parse()
            done, cpu_ms = time.perf_counter(), (time.thread_time() - cpu) * 1000
            ms = (done - started) * 1000
            run.latencies.append(ms)
            run.cpu.append(cpu_ms)
            if answer.choices[0].message.content != expected[prompt]:
                run.wrong += 1
            status = raw.headers.get(STATUS, "none")
            if status == "hit":
                # a hit that started before the prompt's first answer was in waited for it
                first = answered.get(prompt)
                if first is not None and first <= started:
                    run.hits.append(ms)
                    run.hits_cpu.append(cpu_ms)
                else:
                    run.joined.append(ms)
            elif status in ("miss", "none"):
                answered.setdefault(prompt, done)
                run.misses.append(ms)
            else:
                run.other[status] = run.other.get(status, 0) + 1

    async def stepped(index: int) -> None:
        await clock.drive(caller(index), "caller")

    collecting = [0.0]

    def collected(phase: str, info: dict[str, int]) -> None:
        if info["generation"] < 2:
            return
        if phase == "start":
            collecting[0] = time.perf_counter()
        else:
            run.gc_pauses.append((time.perf_counter() - collecting[0]) * 1000)

    stop = asyncio.Event()
    prober = asyncio.create_task(probe(run.lags, stop))
    await asyncio.sleep(0.01)  # the probe is running before the first request
    gc.callbacks.append(collected)
    gc.callbacks.append(clock.collected)
    started, cpu = time.perf_counter(), time.thread_time()
    try:
        await asyncio.gather(*(stepped(i) for i in range(len(load.schedule))))
    finally:
        run.seconds, run.cpu_seconds = time.perf_counter() - started, time.thread_time() - cpu
        gc.callbacks.remove(clock.collected)
        gc.callbacks.remove(collected)
    stop.set()
    await prober
    run.holds, run.holds_cpu, run.holds_gc, run.steps = clock.holds, clock.holds_cpu, clock.holds_gc, clock.steps
    return run


# -- the rows -----------------------------------------------------------------------------------


@dataclass
class Stores:
    """Where the stores live: a temporary directory, a redis-server, a cluster (each may be absent)."""

    workdir: Path
    redis_url: str | None = None
    cluster_url: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def url(self, store: str, tag: str) -> tuple[str, dict[str, Any]]:
        if store == "memory":
            return "memory://", {}
        if store == "file":
            return f"file://{self.workdir / ('file-' + tag)}", {}
        if store in REDIS_ROWS:
            assert self.redis_url is not None
            options = {"memory_entries": 0} if "direct" in store else {}
            awaited = "&asyncio=yes" if store.endswith("awaited") else ""
            return f"{self.redis_url}?prefix=bench-load:{tag}:{awaited}", options
        if store == "cluster":
            assert self.cluster_url is not None
            return f"{self.cluster_url}?prefix=bench-load:{tag}:", {}
        raise ValueError(store)


def canned(prompts: list[str]) -> Callable[[Any], Awaitable[Any]]:
    """The floor's handler: the server's answer to each prompt, at once."""
    bodies = {p: json.dumps(load_server.completion(p, MODEL)).encode() for p in prompts}

    async def handler(request: Any) -> Any:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        return httpx2.Response(200, content=bodies[prompt], headers={"content-type": "application/json"})

    return handler


async def run_row(row: str, load: Workload, think_ms: float, server: Server, stores: Stores,
                  tag: str, callers: int, seed: int) -> Run:
    clock = Clock()
    cache: LLMCache | None = None
    limits = httpx2.Limits(max_connections=2 * callers, max_keepalive_connections=2 * callers)
    warm_prompt = f"warm-up {tag}"
    if row == "floor":
        transport: Any = HeldTransport(httpx2.MockTransport(canned([*load.prompts, warm_prompt])), clock, "cache")
    else:
        inner = HeldTransport(httpx2.AsyncHTTPTransport(limits=limits), clock, "inner")
        if row == "none":
            transport = inner
        else:
            url, options = stores.url(row, tag)
            cache = LLMCache(url, **options)
            transport = HeldTransport(cache.async_transport(inner, httpx=httpx2), clock, "cache")
    client = AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0,
                         http_client=httpx2.AsyncClient(transport=transport, timeout=30))
    try:
        # one call first, untimed: the client's first request costs more whatever answers it
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": warm_prompt}])
        clock.holds.clear()
        clock.holds_cpu.clear()
        clock.holds_gc.clear()
        clock.steps.clear()
        server.reset()
        gc.collect()
        run = await drive_load(client, load, think_ms, clock, seed)
        if row != "floor":
            counts = server.stats()
            run.upstream, run.upstream_distinct = counts["calls"], counts["distinct"]
            run.most_calls_per_prompt = counts["max_calls_per_prompt"]
            run.server = {k: counts[k] for k in ("max_in_flight", "late_p99_ms", "late_max_ms")}
        if cache is not None:
            counted, said = cache.stats().get("hits"), len(run.hits) + len(run.joined)
            if counted is not None and counted != said:
                say(f"  note: {row}: the cache counted {counted} hits, the answers said {said}")
    finally:
        await client.close()
        if cache is not None:
            cache.close()
    return run


# -- stores that need a server ------------------------------------------------------------------


def start_redis(stack: ExitStack) -> tuple[str | None, str | None]:
    """A redis-server of tests/redis_server.py; (url, None) or (None, why not)."""
    if shutil.which("redis-server") is None:
        return None, "no redis-server"
    try:
        import redis  # noqa: F401
        from redis_server import RedisServer
    except ImportError as exc:
        return None, f"cannot start Redis ({exc})"
    server = stack.enter_context(RedisServer())
    return server.url, None


def behind_rtt(stack: ExitStack, url: str, rtt_ms: float) -> str:
    """``url`` through rtt_proxy.py: Redis answering as across a network, ``rtt_ms`` a round trip."""
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    proxy = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parent / "rtt_proxy.py"), str(port), str(rtt_ms)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proxy.stdin is not None and proxy.stdout is not None
    stack.callback(proxy.wait, 10)
    stack.callback(proxy.stdin.close)
    listening = proxy.stdout.readline().strip()
    if not listening.isdigit():
        raise RuntimeError(f"rtt_proxy.py did not start (said {listening!r})")
    return url.replace(f":{port}", f":{listening}", 1)


def cluster_support() -> str | None:
    """Why the Redis Cluster row cannot run, or None when it can."""
    if not (ROOT / "tests" / "redis_cluster.py").exists():
        return "Redis Cluster store not available"
    from llm_cache.errors import ConfigError
    from llm_cache.stores import open_store

    try:
        open_store("redis+cluster://127.0.0.1:1/0?timeout=0.2", Path(tempfile.gettempdir()))
    except ConfigError:
        return "Redis Cluster store not available"
    except Exception:  # noqa: BLE001, S110 - accepted, but nothing listens there: the store exists
        pass
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        return "no redis-server or redis-cli"
    return None


def start_cluster(stack: ExitStack) -> tuple[str | None, str | None]:
    """A 3-master cluster of tests/redis_cluster.py; (url, None) or (None, why not)."""
    reason = cluster_support()
    if reason is not None:
        return None, reason
    import redis_cluster  # type: ignore[import-not-found]

    url, stop = redis_cluster.start_cluster(3)
    stack.callback(stop)
    return url, None


# -- the report ---------------------------------------------------------------------------------


def ms(value: float | None, width: int = 7) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.2f}"


def machine() -> dict[str, Any]:
    versions = {}
    for name in ("openai", "httpx2", "redis", "pytest-llm-cache"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cores": os.cpu_count(), "python": platform.python_version(), "versions": versions,
            "loadavg_at_start": list(os.getloadavg())}


def _max(values: list[float]) -> float | None:
    return max(values, default=None)


def report(args: argparse.Namespace, rows: list[str], closed: dict[str, Run], paced: dict[str, Run],
           idle: Run | None, skipped: dict[str, str], distinct_each: int, total_each: int) -> dict[str, Any]:
    """Print the tables and the targets; return the figures."""
    floor = closed.get("floor")
    floor_p99 = percentile(floor.latencies, 0.99) if floor else None
    floor_cpu_p99 = percentile(floor.cpu, 0.99) if floor else None
    none = closed.get("none")
    none_rps = none.requests / none.seconds if none and none.seconds else None

    def hits_of(row: str) -> tuple[list[float], list[float]]:
        run = closed[row]
        return (run.latencies, run.cpu) if row == "floor" else (run.hits, run.hits_cpu)

    def cost(row: str) -> tuple[float | None, float | None]:
        wall, cpu = hits_of(row)
        hit_p99, cpu_p99 = percentile(wall, 0.99), percentile(cpu, 0.99)
        return (None if hit_p99 is None or floor_p99 is None else hit_p99 - floor_p99,
                None if cpu_p99 is None or floor_cpu_p99 is None else cpu_p99 - floor_cpu_p99)

    print(f"cache under load: {args.callers} asyncio callers, one AsyncOpenAI client, the API answering in "
          f"{args.latency_ms:g} ms; {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
          + (f"; Redis {args.redis_rtt_ms:g} ms away (a round trip, through rtt_proxy.py)" if args.redis_rtt_ms else ""))
    print(f"each closed-loop run: {total_each} requests ({args.requests_per_caller} a caller), {distinct_each} "
          f"distinct: the first ask of each at a random place, every other request repeats an earlier one "
          f"({args.repeat:.0%}); empty cache each run; {args.rounds} round(s), pooled")
    print()
    print("closed loop (a caller sends its next request when it has its answer): ms from the call to the parsed "
          "answer; cost = hit p99 - floor p99; cpu: this thread's CPU time")
    print(f"{'store':<26} {'req/s':>6} {'x none':>6} {'cpu/req':>7} {'p50':>6} {'p99':>6} {'hits':>5} "
          f"{'hit p50':>7} {'hit p99':>7} {'cost':>6} | {'cpu p99':>7} {'cost':>6} | {'joined':>6} "
          f"{'upstream/distinct':>17}")
    data_rows: dict[str, Any] = {}
    for row in rows:
        label = LABELS[row]
        if row in skipped:
            print(f"{label:<26} n/a ({skipped[row]})")
            data_rows[row] = {"skipped": skipped[row]}
            continue
        run = closed[row]
        rps = run.requests / run.seconds
        wall, cpu = hits_of(row)
        wall_cost, cpu_cost = cost(row)
        up = "" if row == "floor" else f"{run.upstream}/{run.distinct}"
        ratio = f"{rps / none_rps:>5.2f}x" if none_rps else f"{'-':>6}"
        print(f"{label:<26} {rps:>6.0f} {ratio} {ms(run.cpu_seconds * 1000 / run.requests)} "
              f"{ms(percentile(run.latencies, 0.5), 6)} "
              f"{ms(percentile(run.latencies, 0.99), 6)} {len(wall):>5} {ms(percentile(wall, 0.5))} "
              f"{ms(percentile(wall, 0.99))} {ms(wall_cost, 6)} | {ms(percentile(cpu, 0.99))} {ms(cpu_cost, 6)} | "
              f"{len(run.joined):>6} {up:>17}")
        data_rows[row] = {"closed": run.summary(), "paced": paced[row].summary() if row in paced else None,
                          "hit_cost_p99_ms": wall_cost, "hit_cost_cpu_p99_ms": cpu_cost}
    print("(floor: every call answered at once, its figures in the hit columns; cpu/req: the loop's CPU time "
          "over the run a request; joined: hits that waited for the same request on its way upstream)")
    if none is not None and none.server:
        print(f"(the API, with no cache: {none.server['max_in_flight']} requests in flight at most, each answered "
              f"at most {none.server['late_max_ms']:.1f} ms later than {args.latency_ms:g} ms, p99 "
              f"{none.server['late_p99_ms']:.1f} ms: the server keeps its time; the rest is the client's)")
    print()
    print(f"the event loop, ms: lag = how late a probe sleeping {PROBE_S * 1000:g} ms wakes; step = the longest a "
          "caller ran without yielding (SDK + cache); hold = a stretch of the cache's own code")
    print(f"{'':<26} {'closed loop':<24} | {'paced, ' + format(args.think_ms, 'g') + ' ms mean pause':<48} | "
          f"cache holds, both phases")
    print(f"{'store':<26} {'lag p99':>7} {'lag max':>7} {'step max':>8} | {'req/s':>5} {'p99':>6} {'lag p99':>7} "
          f"{'lag max':>7} "
          f"{'upstream/distinct':>17} | {'holds':>6} {'p99':>5} {'max':>6} {'cpu max':>7} {'>5 ms':>5} {'cpu >5':>6} "
          f"{'gc max':>6} {'own max':>7}")
    if idle is not None:
        print(f"{'idle loop (probe alone)':<26} {'':>7} {'':>7} {'':>8} | {'':>5} {'':>6} {ms(percentile(idle.lags, 0.99))} "
              f"{ms(_max(idle.lags))}")
    for row in rows:
        label = LABELS[row]
        if row in skipped:
            print(f"{label:<26} n/a ({skipped[row]})")
            continue
        run, slow = closed[row], paced[row]
        up = "" if row == "floor" else f"{slow.upstream}/{slow.distinct}"
        line = (f"{label:<26} {ms(percentile(run.lags, 0.99))} {ms(_max(run.lags))} {ms(_max(run.steps), 8)} | "
                f"{slow.requests / slow.seconds:>5.0f} {ms(percentile(slow.latencies, 0.99), 6)} "
                f"{ms(percentile(slow.lags, 0.99))} {ms(_max(slow.lags))} "
                f"{up:>17} |")
        if row != "none":
            holds, cpu = run.holds + slow.holds, run.holds_cpu + slow.holds_cpu
            line += (f" {len(holds):>6} {ms(percentile(holds, 0.99), 5)} {ms(_max(holds), 6)} {ms(_max(cpu))} "
                     f"{sum(h > MAX_BLOCK_MS for h in holds):>5} {sum(c > MAX_BLOCK_MS for c in cpu):>6} "
                     f"{ms(_max(run.holds_gc + slow.holds_gc), 6)} {ms(_max(run.own_holds() + slow.own_holds()))}")
        print(line)
    print("(floor: its holds are MockTransport's own; no cache: the probe and steps with no cache at all; "
          "cpu: this thread's CPU time in the hold; gc max: the most time the garbage collector took in one hold; "
          "own max: the longest hold with the collector's time taken out)")
    pauses = [p for run in [*closed.values(), *paced.values()] for p in run.gc_pauses]
    if pauses:
        print(f"(generation-2 collections during the runs: {len(pauses)}, the longest {max(pauses):.1f} ms: "
              "the whole heap's, not the cache's own)")
    print()

    targets: list[dict[str, Any]] = []

    def verdict(name: str, ok: bool, figure: str) -> None:
        targets.append({"target": name, "pass": ok, "figure": figure})
        print(f"target {name}: {'met' if ok else 'MISSED'} ({figure})")

    for row, limit in HIT_COST.items():
        if row not in closed or floor_p99 is None or not closed[row].hits:
            continue
        wall_cost, cpu_cost = cost(row)
        assert wall_cost is not None and cpu_cost is not None
        hit_p99 = percentile(closed[row].hits, 0.99)
        # with the loop idle part of the time, a hit that awaits Redis waits for no other caller
        paced_hit = percentile(paced[row].hits, 0.99) if row in paced and paced[row].hits else None
        verdict(f"hit cost p99 <= {limit:g} ms, {LABELS[row]}", wall_cost <= limit,
                f"hit p99 {hit_p99:.2f} ms - floor p99 {floor_p99:.2f} ms = {wall_cost:.2f} ms; raw hit p99 "
                f"{'within' if hit_p99 is not None and hit_p99 <= limit else 'over'} {limit:g} ms; CPU time: "
                f"{cpu_cost:.2f} ms over the floor's"
                + (f"; paced: hit p99 {paced_hit:.2f} ms" if paced_hit is not None else ""))
    cache_rows = [r for r in rows if r not in ("floor", "none") and r not in skipped]
    if cache_rows:
        runs = [(r, phase, run) for r in cache_rows for phase, run in (("closed", closed[r]), ("paced", paced[r]))]
        ok = all(run.upstream == run.distinct and run.most_calls_per_prompt <= 1 for _, _, run in runs)
        figure = ", ".join(f"{r} {closed[r].upstream}/{closed[r].distinct} + {paced[r].upstream}/{paced[r].distinct}"
                           for r in cache_rows)
        verdict("upstream calls = distinct requests (no stampede)", ok, f"closed + paced: {figure}")
        worst, where, phase = max((_max(run.holds) or 0.0, r, phase) for r, phase, run in runs)
        worst_cpu = max(_max(run.holds_cpu) or 0.0 for _, _, run in runs)
        worst_own = max(_max(run.own_holds()) or 0.0 for _, _, run in runs)
        slow_lag = max(_max(paced[r].lags) or 0.0 for r in cache_rows)
        base = f" ({_max(paced['none'].lags) or 0.0:.2f} ms with no cache)" if "none" in paced else ""
        verdict(f"event loop never blocked > {MAX_BLOCK_MS:g} ms by the cache", worst <= MAX_BLOCK_MS,
                f"longest hold {worst:.2f} ms ({LABELS[where]}, {phase}), at most {worst_cpu:.2f} ms of CPU time "
                f"and {worst_own:.2f} ms without the collector's pauses in any hold; probe, paced: lag max "
                f"{slow_lag:.2f} ms{base}")
    wrong = sum(run.wrong for run in [*closed.values(), *paced.values()])
    if wrong:
        print(f"WRONG ANSWERS: {wrong} answers did not match their prompt")
    others = {r: run.other for r, run in closed.items() if run.other}
    if others:
        print(f"other statuses seen: {others}")
    return {"rows": data_rows, "targets": targets, "wrong_answers": wrong, "skipped": skipped}


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--callers", type=int, default=64, help="concurrent asyncio callers")
    parser.add_argument("--requests-per-caller", type=int, default=10, help="requests of each caller per run (closed loop)")
    parser.add_argument("--repeat", type=float, default=0.9, help="share of requests that repeat an earlier one")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="how long the API takes to answer")
    parser.add_argument("--stores", default="memory,file,redis,redis-direct,cluster",
                        help=f"comma-separated, of {','.join(ALL_STORES)} (floor and no cache always run)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every row, in a rotated order, pooled")
    parser.add_argument("--paced-requests", type=int, default=4, help="requests of each caller per paced run")
    parser.add_argument("--think-ms", type=float, default=250.0, help="mean pause between a caller's paced requests")
    parser.add_argument("--idle-s", type=float, default=0.5, help="seconds of the probe alone on the loop, per round")
    parser.add_argument("--redis-rtt-ms", type=float, default=0.0,
                        help="a network's round trip between the application and redis-server "
                             "(rtt_proxy.py in front of it; the redis rows only, not the cluster)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures there")
    args = parser.parse_args(argv)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = set(args.stores) - set(ALL_STORES)
    if unknown:
        parser.error(f"unknown stores: {', '.join(sorted(unknown))} (known: {', '.join(ALL_STORES)})")
    if not 0 <= args.repeat < 1 or args.callers < 1 or args.requests_per_caller < 1 or args.rounds < 1:
        parser.error("--repeat is in [0, 1); --callers, --requests-per-caller and --rounds are at least 1")
    return args


async def main_async(args: argparse.Namespace, server: Server, stores: Stores) -> dict[str, Any]:
    rows = ["floor", "none", *args.stores]
    runnable = [r for r in rows if r not in stores.skipped]
    closed: dict[str, Run] = {}
    paced: dict[str, Run] = {}
    total_each = distinct_each = 0
    idle: Run | None = None
    for round_no in range(args.rounds):
        if args.idle_s > 0:  # the machine's own lateness: the probe with nothing else on the loop
            say(f"round {round_no + 1}/{args.rounds}: idle loop, {args.idle_s:g} s")
            idle = idle or Run()
            stop = asyncio.Event()
            prober = asyncio.create_task(probe(idle.lags, stop))
            await asyncio.sleep(args.idle_s)
            stop.set()
            await prober
        order = runnable[round_no % len(runnable):] + runnable[: round_no % len(runnable)]
        for index, row in enumerate(order):
            for phase, per_caller, think, into in (
                ("closed", args.requests_per_caller, 0.0, closed),
                ("paced", args.paced_requests, args.think_ms, paced),
            ):
                tag = f"{round_no}-{index}-{phase[0]}-{row}"
                seed = SEED + 7919 * round_no + (0 if phase == "closed" else 1)
                load = workload(args.callers, per_caller, args.repeat, seed, tag)
                if phase == "closed":
                    total_each, distinct_each = load.total, len(load.prompts)
                say(f"round {round_no + 1}/{args.rounds}: {LABELS[row]}, {phase} ({load.total} requests)")
                run = await run_row(row, load, think, server, stores, tag, args.callers, seed)
                into.setdefault(row, Run()).add(run)
    result = report(args, rows, closed, paced, idle, stores.skipped, distinct_each, total_each)
    if idle is not None:
        result["idle_loop_lag_ms"] = idle.summary()["loop_lag_ms"]
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine()
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        stores = Stores(workdir)
        if any(row in args.stores for row in REDIS_ROWS):
            stores.redis_url, why = start_redis(stack)
            if stores.redis_url is not None and args.redis_rtt_ms > 0:
                stores.redis_url = behind_rtt(stack, stores.redis_url, args.redis_rtt_ms)
            if why:
                stores.skipped.update({r: why for r in REDIS_ROWS if r in args.stores})
        if "cluster" in args.stores:
            stores.cluster_url, why = start_cluster(stack)
            if why:
                stores.skipped["cluster"] = why
        server = Server(args.latency_ms)
        stack.callback(server.stop)
        result = asyncio.run(main_async(args, server, stores))
    wrong = result["wrong_answers"]
    if args.json is not None:
        info["loadavg_at_end"] = list(os.getloadavg())
        args.json.parent.mkdir(parents=True, exist_ok=True)
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"machine": info, "options": options, **result}, indent=2))
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
