"""Concurrency stress: 8 recording processes started together, half of their requests shared.

Each process (``tests/reliability/_recorder.py stress``) has one openai client on
``LLMCache(store)`` and makes its calls one after the other: N shared prompts, asked by
every process in the same order, interleaved with N prompts of its own. Processes run in
parallel. With the file store and with the Redis store, afterwards:

- exactly one valid entry per distinct request (N + 8 x N), each holding the key of its
  own request, and none for anything else;
- the processes' figures add up: recorded summed over processes = distinct requests,
  recorded + hits = all requests; no miss, no corrupt entry, nothing refreshed or refused;
- the server saw each distinct request exactly once (single flight across processes);
- no lock is left behind: every lock file can be taken, all at once (file), no
  ``<prefix>lock:*`` key remains (Redis).

Sizes: 8 x 200 by default, 8 x 1000 under ``--stress`` (half shared).

Then many distinct requests in flight in one thread, each in a subprocess with a deadline
(a stalled process is killed): 64 (256 under ``--stress``) requests gathered on one event
loop, and 64 responses opened one after the other and read only then. Every one must be
recorded once, promptly: no key may wait for another's lock.

Figures go to ``$LLM_CACHE_RELIABILITY_OUT`` under ``"stress"``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _reliability_figures import lock_is_free, record_figures
from fakeapi import FakeLLMServer

from llm_cache.cassette import load_entry
from llm_cache.verify import check_file, recompute_key

RECORDER = Path(__file__).with_name("_recorder.py")
PROCESSES = 8
START_TIMEOUT = 120.0  # for all processes to be ready (imports, on a loaded machine)
RUN_TIMEOUT = 600.0  # for all of them to finish, once started


def expected_prompts(processes: int, shared: int, own: int) -> list[str]:
    return [f"shared question {j}" for j in range(shared)] + [
        f"process {p} question {j}" for p in range(processes) for j in range(own)
    ]


def prompt_of(entry: Any) -> str:
    return str(json.loads(entry.request_body.to_bytes())["messages"][0]["content"])


def run_processes(store: str, root: Path, server: FakeLLMServer, shared: int, own: int,
                  logs: Path) -> tuple[list[dict[str, Any]], float]:
    """Start PROCESSES recorders, wait until each is ready, let them go together; their stats."""
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[Any]] = []
    outs: list[Path] = []
    try:
        for p in range(PROCESSES):
            out = logs / f"proc{p}.out"
            outs.append(out)
            command = [sys.executable, str(RECORDER), "stress", "--root", str(root), "--base-url",
                       server.openai_base_url, "--store", store, "--proc", str(p), "--shared", str(shared),
                       "--own", str(own)]
            with open(out, "wb") as handle:
                procs.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=handle,
                                              stderr=subprocess.STDOUT))
        deadline = time.monotonic() + START_TIMEOUT
        while not all(b"ready\n" in out.read_bytes() for out in outs):
            dead = [p for p, proc in enumerate(procs) if proc.poll() is not None]
            assert not dead, f"process {dead[0]} ended before it was ready:\n{outs[dead[0]].read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the processes were not ready in time"
            time.sleep(0.05)
        started = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        deadline = time.monotonic() + RUN_TIMEOUT
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    stats = []
    for p, (proc, out) in enumerate(zip(procs, outs)):
        text = out.read_text(errors="replace")
        assert proc.returncode == 0, f"process {p} failed ({proc.returncode}):\n{text[-3000:]}"
        stats.append(last_json(text))
    return stats, elapsed


@dataclass
class Stored:
    """What a store holds after a run: bad entries, the prompts of the good ones, locks."""

    problems: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    locks_left: list[str] = field(default_factory=list)
    lock_files: int = 0
    entries: int = 0


def inspect_store(cassettes: Path, target: Any) -> Stored:
    """Check every entry (file: ``check_file``; Redis: parse, key of its own request) and every lock.

    File locks are all taken at once (timeout 0) and then released; on Redis no
    ``<prefix>lock:*`` key may remain."""
    out = Stored()
    if target is None:
        files = sorted(cassettes.rglob("*.yaml"))
        for path in files:
            out.problems.extend(f"{p.path}: {p.reason}" for p in check_file(path))
            out.prompts.append(prompt_of(load_entry(path.read_text(encoding="utf-8"), str(path))))
        out.problems.extend(f"{p}: moved aside as corrupt" for p in cassettes.rglob("*.corrupt"))
        lock_paths = sorted((cassettes / ".llm-cache" / "locks").glob("*.lock"))
        lock_paths += sorted((cassettes / ".llm-cache").glob("*.lock"))
        out.lock_files = len(lock_paths)
        out.locks_left = [str(path) for path in lock_paths if not lock_is_free(path)]
        out.entries = len(files)
        return out
    client = target.client()
    prefix = target.prefix.encode()
    names = target.keys()
    entries = [n for n in names if n.startswith(prefix + b"e:")]
    out.locks_left = [n.decode() for n in names if n.startswith(prefix + b"lock:")]
    out.problems.extend(f"{n.decode()}: moved aside as corrupt" for n in names if n.startswith(prefix + b"corrupt:"))
    for name in entries:
        key = name[len(prefix) + 2:].decode()
        data = client.get(name)
        if data is None:
            out.problems.append(f"{name.decode()}: gone before it was read")
            continue
        try:
            entry = load_entry(data, name.decode(), expected_key=key)
        except Exception as exc:  # noqa: BLE001 - reported with the others
            out.problems.append(f"{name.decode()}: {exc}")
            continue
        if recompute_key(entry) != key:
            out.problems.append(f"{name.decode()}: its key is not the key of its request")
        out.prompts.append(prompt_of(entry))
    indexed = client.hlen(target.prefix + "meta")
    if indexed != len(entries):
        out.problems.append(f"the meta index has {indexed} rows for {len(entries)} entries")
    out.entries = len(entries)
    return out


def last_json(output: str) -> dict[str, Any]:
    """The stats a recorder prints as its last JSON line."""
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert lines, f"no stats in the output:\n{output[-3000:]}"
    return dict(json.loads(lines[-1]))


def sizes(stress: bool) -> tuple[int, int]:
    per_process = 1000 if stress else 200
    return per_process // 2, per_process // 2  # shared, own


@pytest.mark.parametrize("where", ["file", "redis"])
def test_parallel_recorders_make_one_entry_and_one_call_per_request(
    fake_api: FakeLLMServer, tmp_path: Path, where: str, stress: bool, request: pytest.FixtureRequest
) -> None:
    shared, own = sizes(stress)
    target = request.getfixturevalue("redis_target") if where == "redis" else None
    store = target.store_url if target is not None else "file://cassettes"
    prompts = expected_prompts(PROCESSES, shared, own)
    distinct, total = len(prompts), PROCESSES * (shared + own)

    stats, elapsed = run_processes(store, tmp_path, fake_api, shared, own, tmp_path / "logs")

    # what reached the server: each distinct request once
    asked = Counter(prompt_of_call(call) for call in fake_api.calls)
    twice = sorted(text for text, n in asked.items() if n > 1)

    # what is stored
    stored_state = inspect_store(tmp_path / "cassettes", target)
    problems, stored = stored_state.problems, stored_state.prompts
    locks_left, lock_count, entry_count = stored_state.locks_left, stored_state.lock_files, stored_state.entries

    recorded = sum(s["recorded"] for s in stats)
    hits = sum(s["hits"] for s in stats)
    figures = {
        "processes": PROCESSES,
        "requests_per_process": shared + own,
        "shared_per_process": shared,
        "requests": total,
        "distinct": distinct,
        "entries": entry_count,
        "recorded": recorded,
        "hits": hits,
        "recorded_per_process": [s["recorded"] for s in stats],
        "upstream_calls": fake_api.count(),
        "requests_sent_twice": len(twice),
        "bad_entries": len(problems),
        "lock_files": lock_count,
        "locks_left": len(locks_left),
        "seconds": round(elapsed, 2),
        "requests_per_second": round(total / elapsed, 1),
    }
    record_figures("stress", where, figures)
    print(f"stress ({where}):", json.dumps(figures))

    assert problems == [], "bad entries:\n" + "\n".join(problems[:20])
    assert locks_left == [], f"locks left behind: {locks_left[:10]}"
    assert sorted(stored) == sorted(prompts), "the stored requests are not the distinct requests, once each"
    assert entry_count == distinct
    assert twice == [], f"sent upstream more than once: {twice[:10]}"
    assert fake_api.count() == distinct
    assert recorded == distinct, figures
    assert recorded + hits == total, figures
    for s in stats:
        assert (s["misses"], s["corrupt"], s["refreshed"], s["not_stored"]) == (0, 0, 0, 0), s


def prompt_of_call(call: Any) -> str:
    body = call.json if isinstance(call.json, dict) else {}
    messages = body.get("messages") or [{}]
    return str(messages[0].get("content"))


# -- many distinct requests in flight in one thread: an event loop, or open responses ------------

# seconds from set-up; a healthy run of 64 (256) requests takes about 1 (4) s, 2 to 3 times that on a busy machine
DEADLINE, STRESS_DEADLINE = 10.0, 30.0



def run_within_deadline(
    command: list[str], out: Path, server: FakeLLMServer, what: str, seconds: float
) -> tuple[str, float]:
    """Run a recorder; fail when its work (after ``ready``) takes longer than ``seconds``."""
    with open(out, "wb") as handle:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while b"ready\n" not in out.read_bytes() and proc.poll() is None:
            assert time.monotonic() < deadline, "the process was not ready in time"
            time.sleep(0.02)
        started = time.perf_counter()
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{what}: still not done after {seconds:.0f} s; "
                        f"{server.count()} requests had reached the server")
        elapsed = time.perf_counter() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    text = out.read_text(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    return text, elapsed


STALLS = ["file", "redis"]


@pytest.mark.parametrize("where", STALLS)
def test_one_event_loop_recording_many_distinct_requests_at_once_is_not_stalled(
    fake_api: FakeLLMServer, tmp_path: Path, where: str, stress: bool, request: pytest.FixtureRequest
) -> None:
    count = 256 if stress else 64
    target = request.getfixturevalue("redis_target") if where == "redis" else None
    store = target.store_url if target is not None else "file://cassettes"
    command = [sys.executable, str(RECORDER), "async", "--root", str(tmp_path), "--base-url",
               fake_api.openai_base_url, "--store", store, "--count", str(count)]
    text, elapsed = run_within_deadline(command, tmp_path / "async.out", fake_api,
                                        f"{count} concurrent distinct requests on one event loop",
                                        STRESS_DEADLINE if stress else DEADLINE)
    check_concurrent_recording(text, elapsed, tmp_path, target, fake_api, "async question", count, f"async-{where}")


@pytest.mark.parametrize("where", STALLS)
def test_one_thread_with_many_responses_open_is_not_stalled(
    fake_api: FakeLLMServer, tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    count = 64
    target = request.getfixturevalue("redis_target") if where == "redis" else None
    store = target.store_url if target is not None else "file://cassettes"
    command = [sys.executable, str(RECORDER), "streams", "--root", str(tmp_path), "--base-url",
               fake_api.openai_base_url, "--store", store, "--count", str(count)]
    text, elapsed = run_within_deadline(command, tmp_path / "streams.out", fake_api,
                                        f"one thread opening {count} distinct requests before reading them", DEADLINE)
    check_concurrent_recording(text, elapsed, tmp_path, target, fake_api, "open question", count, f"streams-{where}")


def check_concurrent_recording(text: str, elapsed: float, tmp_path: Path, target: Any, server: FakeLLMServer,
                               prefix: str, count: int, name: str) -> None:
    stats = last_json(text)
    stored = inspect_store(tmp_path / "cassettes", target)
    figures = {"requests": count, "seconds": round(elapsed, 2), "upstream_calls": server.count(),
               "entries": stored.entries, "bad_entries": len(stored.problems), "locks_left": len(stored.locks_left)}
    record_figures("stress", name, figures)
    assert stored.problems == [] and stored.locks_left == [], (stored.problems[:10], stored.locks_left[:10])
    assert sorted(stored.prompts) == sorted(f"{prefix} {i}" for i in range(count))
    assert server.count() == count
    assert (stats["recorded"], stats["hits"], stats["misses"]) == (count, 0, 0), stats
