"""Crash safety: recording processes killed with SIGKILL at random moments, many times over,
leave only complete cassettes and no stuck lock; the next run works and re-records only
what is missing.

Two levels:

- the library: ``tests/reliability/_recorder.py crash`` records M chat completions through
  ``LLMCache("file://cassettes", root=DIR)`` and is killed K times against the same DIR,
  after a random delay between 0 and the time a full run takes (counted from the moment the
  recorder is set up; measured once first, then following the runs that end before their
  kill, as other tests load the machine more or less).
  Each kill run but the last works on the first M-LATE requests: it records them
  (``record``) while some are missing, then refreshes them (``refresh`` with a TTL of one
  microsecond: every cassette is overwritten), so that every run has writes to interrupt,
  the replacement of a good cassette included. The last kill run records the LATE others
  for the first time, so that the final run (all M) has something to re-record. The recorder
  writes each temporary file in flushed pieces a few milliseconds apart, so that many kills
  land between a temporary file's creation and its ``os.replace``;
- the plugin: ``python -m pytest --llm-cache=record`` killed mid-way (on the first half of
  its tests, then, the last time, on the other half), then recorded and replayed to the end.

After every kill, every cassette written or changed since the previous check goes through
``llm_cache.verify.check_file`` (checking only at the end would be too late: the next run
moves a damaged cassette aside to ``.corrupt`` and records it again, hiding the damage),
no ``.corrupt`` file may appear, and every lock must be free.

Sizes: K=12 runs to kill (3 for the plugin) by default, 150 (20) under ``--stress``. The seed is
``LLM_CACHE_RELIABILITY_SEED`` (default below). Figures go to ``$LLM_CACHE_RELIABILITY_OUT``
under ``"crash"``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _reliability_figures import lock_is_free, record_figures
from conftest import PROJECT_CONFTEST
from fakeapi import FakeLLMServer

from llm_cache.cassette import load_entry
from llm_cache.verify import check_file

RECORDER = Path(__file__).with_name("_recorder.py")
SEED = int(os.environ.get("LLM_CACHE_RELIABILITY_SEED", "20240806"))
M = 40  # distinct requests the recorder makes
LATE = 20  # of which the last kill run records for the first time (the earlier ones see the others)
PAD = 16_000  # bytes added to each prompt: a cassette of about 33 KB
SLOW_WRITES = 4_096  # the recorder writes each temporary file in flushed pieces this big, 2 ms apart
PLUGIN_TESTS = 24
PLUGIN_PAD = 32_000
RUN_TIMEOUT = 180.0  # a run that waited LOCK_TIMEOUT (120 s) on a stuck lock still ends within it


# -- checks shared by both levels ---------------------------------------------------------------


class Checker:
    """Checks the cassettes under a directory after each kill: only those new or changed since."""

    def __init__(self, cassettes: Path) -> None:
        self.cassettes = cassettes
        self.seen: dict[Path, tuple[int, int, int]] = {}
        self.checked = 0
        self.problems: list[str] = []

    def check(self, when: str) -> None:
        if not self.cassettes.exists():
            return
        for path in sorted(self.cassettes.rglob("*.yaml")):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            if self.seen.get(path) == signature:
                continue
            self.seen[path] = signature
            self.checked += 1
            if path.name.startswith("."):
                self.problems.append(f"{when}: {path}: a hidden .yaml file (a temporary file taken for a cassette?)")
            self.problems.extend(f"{when}: {p.path}: {p.reason}" for p in check_file(path))
        self.problems.extend(f"{when}: {p}: a cassette was moved aside as corrupt"
                             for p in sorted(self.cassettes.rglob("*.corrupt")))

    def valid(self) -> list[Path]:
        return [p for p in sorted(self.cassettes.rglob("*.yaml")) if not check_file(p)]


def lock_files(cassettes: Path) -> list[Path]:
    meta = cassettes / ".llm-cache"
    return sorted((meta / "locks").glob("*.lock")) + sorted(meta.glob("*.lock"))


def stuck_locks(cassettes: Path) -> tuple[int, list[Path]]:
    """How many lock files there are, and those that cannot be taken at once (timeout 0)."""
    paths = lock_files(cassettes)
    stuck = []
    for path in paths:
        if not lock_is_free(path):
            stuck.append(path)
    return len(paths), stuck


def temp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*.tmp") if p.is_file())


def prompt_of(path: Path) -> str:
    entry = load_entry(path.read_text(encoding="utf-8"), str(path))
    body = json.loads(entry.request_body.to_bytes())
    return str(body["messages"][0]["content"])


def wait_ready(process: subprocess.Popen[Any], is_ready: Callable[[], bool]) -> bool:
    """Wait until the process says it is set up; False when it ended first."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while not is_ready():
        if process.poll() is not None:
            return is_ready()
        assert time.monotonic() < deadline, "the process was not set up in time"
        time.sleep(0.005)
    return True


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)


def work_time(process: subprocess.Popen[Any], is_ready: Callable[[], bool]) -> tuple[int, float]:
    """Let the process run to its end: its exit status and the seconds from set-up to exit."""
    try:
        wait_ready(process, is_ready)
        ready = time.perf_counter()
        code = process.wait(timeout=RUN_TIMEOUT)
        return code, time.perf_counter() - ready
    finally:
        stop(process)


def kill_at_random(
    process: subprocess.Popen[Any], is_ready: Callable[[], bool], delay: float
) -> tuple[bool, float]:
    """SIGKILL the process ``delay`` seconds after it is set up, unless it ended first.

    Returns whether it was killed, and the seconds from its set-up to its end. The delay
    counts from the set-up (imports done, cache opened), not from the spawn: the time
    imports take swings with the machine's load, that of the work much less."""
    try:
        ready = time.perf_counter()
        if wait_ready(process, is_ready):
            ready = time.perf_counter()
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
        killed = process.wait(timeout=RUN_TIMEOUT) == -signal.SIGKILL
        return killed, time.perf_counter() - ready
    finally:
        stop(process)


# -- the library: LLMCache + openai SDK in a subprocess -------------------------------------------


def start_recorder(root: Path, server: FakeLLMServer, mode: str, log: Path,
                   first: int = 0, count: int = M) -> subprocess.Popen[Any]:
    command = [sys.executable, str(RECORDER), "crash", "--root", str(root), "--base-url", server.openai_base_url,
               "--first", str(first), "--count", str(count), "--pad", str(PAD),
               "--slow-writes", str(SLOW_WRITES), "--mode", mode]
    with open(log, "wb") as out:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def last_json(output: str) -> dict[str, Any]:
    """The stats a recorder prints as its last JSON line."""
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert lines, f"no stats in the output:\n{output[-3000:]}"
    return dict(json.loads(lines[-1]))


def run_to_end(root: Path, server: FakeLLMServer, mode: str, log: Path) -> tuple[dict[str, Any], float]:
    """A run without a kill: its stats and the seconds from set-up to exit."""
    code, seconds = work_time(start_recorder(root, server, mode, log), lambda: recorder_ready(log))
    output = log.read_text(errors="replace")
    assert code == 0, f"the recorder failed ({code}):\n{output[-3000:]}"
    return last_json(output), seconds


def recorder_ready(log: Path) -> bool:
    return b"ready\n" in log.read_bytes()


def test_recorder_killed_at_random_moments_leaves_only_complete_cassettes(
    fake_api: FakeLLMServer, tmp_path: Path, stress: bool
) -> None:
    kills = 150 if stress else 12
    rng = random.Random(SEED)
    log = tmp_path / "recorder.log"
    started = time.perf_counter()

    # How long the work of a full run takes (set-up to exit, recording all M), in a directory of its own.
    calibration = tmp_path / "calibration"
    calibrated, full_run = run_to_end(calibration, fake_api, "record", log)
    assert calibrated["recorded"] == M, calibrated
    shutil.rmtree(calibration)

    root = tmp_path / "app"
    cassettes = root / "cassettes"
    checker = Checker(cassettes)
    killed = finished = 0
    modes = {"record": 0, "refresh": 0}
    stuck_after: list[str] = []
    early = M - LATE
    # Kill delays are drawn between 0 and the time a full run takes. The calibration may have
    # run on a busier machine than the kills (other tests, under xdist): the bound follows the
    # refresh runs that end before their kill, and grows a little after each kill.
    bound = full_run
    bounds: list[float] = []
    indexes: dict[Path, int] = {}  # a cassette's file name follows from its request: read it once

    def index_of(path: Path) -> int:
        if path not in indexes:
            indexes[path] = int(prompt_of(path).split()[2])
        return indexes[path]

    for run in range(kills):
        if run < kills - 1:
            # Requests 0..early-1: recorded while some are missing (kills land in writes of new
            # files), then refreshed (kills land in the replacement of good cassettes).
            first, count = 0, early
            present = sum(1 for p in cassettes.rglob("*.yaml") if index_of(p) < early)
            mode = "record" if present < early else "refresh"
        else:
            # The last run records the LATE others for the first time: the final run has
            # something to re-record.
            first, count, mode = early, LATE, "record"
        modes[mode] += 1
        process = start_recorder(root, fake_api, mode, log, first, count)
        # a full run of `count` requests takes about count/M of a full run of M
        was_killed, seconds = kill_at_random(process, lambda: recorder_ready(log), rng.uniform(0.0, bound * count / M))
        if was_killed:
            killed += 1
            bound *= 1.05  # the machine may have slowed down: let the next kills reach further
        else:
            finished += 1
            assert process.returncode == 0, f"run {run} failed:\n{log.read_text(errors='replace')[-3000:]}"
            if mode == "refresh":  # every request written, as in the calibration: a new measure
                bound = seconds * M / count
        bounds.append(bound)
        checker.check(f"after run {run} ({mode})")
        _, stuck = stuck_locks(cassettes)
        stuck_after.extend(f"after run {run}: {path}" for path in stuck)
        if checker.problems or stuck_after:
            break  # reported below; the next run would move a damaged cassette aside

    leftovers = temp_files(root)
    in_model_dirs = [p for p in leftovers if ".llm-cache" not in p.relative_to(root).parts]
    lock_count, stuck = stuck_locks(cassettes)
    valid_before = len(checker.valid())

    calls_before = fake_api.count()
    stats, _ = run_to_end(root, fake_api, "record", log)
    re_recorded = fake_api.count() - calls_before
    checker.check("after the final run")
    final = sorted(cassettes.rglob("*.yaml"))

    figures = {
        "seed": SEED,
        "requests": M,
        "requests_first_recorded_by_the_last_kill_run": LATE,
        "cassette_bytes": final[0].stat().st_size if final else 0,
        "runs": kills,
        "runs_by_mode": modes,
        "kills": killed,
        "finished_before_the_kill": finished,
        "full_run_work_seconds": round(full_run, 3),
        "kill_delay_bound_seconds": [round(min(bounds or [bound]), 3), round(max(bounds or [bound]), 3)],
        "slowed_writes_in_a_full_run": calibrated.get("slowed_writes", 0),
        "cassettes_checked": checker.checked,
        "corrupt_found": len(checker.problems),
        "stuck_locks": len(stuck_after) + len(stuck),
        "lock_files": lock_count,
        "leftover_temp_files": len(leftovers),
        "leftover_temp_files_in_model_dirs": len(in_model_dirs),
        "leftover_partial_cassettes_bytes": sorted(p.stat().st_size for p in in_model_dirs),
        "valid_cassettes_before_final_run": valid_before,
        "re_recorded": re_recorded,
        "cassettes_after": len(final),
        "seconds": round(time.perf_counter() - started, 1),
    }
    record_figures("crash", "library", figures)
    print("crash (library):", json.dumps(figures))

    assert checker.problems == [], "damaged cassettes:\n" + "\n".join(checker.problems[:20])
    assert stuck_after == [] and stuck == [], f"locks still held: {stuck_after[:10]} {stuck[:10]}"
    assert all(not p.name.endswith(".yaml") for p in leftovers), leftovers
    assert killed > 0, "no run was killed: the delays are all longer than the runs"
    assert re_recorded == M - valid_before, figures
    assert stats["recorded"] == M - valid_before and stats["hits"] == valid_before, stats
    assert stats["corrupt"] == 0 and stats["misses"] == 0, stats
    assert len(final) == M, figures
    assert sorted(int(prompt_of(p).split()[2]) for p in final) == list(range(M))


# -- the plugin: `pytest --llm-cache=record` killed mid-way ---------------------------------------

PLUGIN_TEST_FILE = "test_killed_recording_session"  # a basename no module under tests/ has


def plugin_tests() -> str:
    """PLUGIN_TESTS tests, one request each: the first half named ``test_early_*``, the others ``test_late_*``."""
    pad = " ".join(f"word{k % 89}" for k in range(PLUGIN_PAD // 7))
    lines = ["from conftest import chat", f"PAD = {pad!r}", ""]
    for i in range(PLUGIN_TESTS):
        half = "early" if i < PLUGIN_TESTS // 2 else "late"
        lines += [
            f"def test_{half}_{i}(client, llm_cache):",
            f"    text = 'plugin crash question {i} ' + PAD",
            "    assert chat(client, text).choices[0].message.content == 'echo: ' + text",
            "",
        ]
    return "\n".join(lines)


# The inner session says when it is set up (plugins loaded, tests collected): a file in LLM_TEST_OUT.
READY_HOOK = '''

def pytest_collection_finish(session):
    open(os.path.join(os.environ["LLM_TEST_OUT"], "ready"), "w").close()
'''


def inner_env(server: FakeLLMServer, out: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT_TEST", "PYTEST_ADDOPTS", "LLM_CACHE_MODE"))}
    env.update(FAKE_LLM_URL=server.url, LLM_TEST_OUT=str(out))
    return env


def test_pytest_record_session_killed_midway_then_records_and_replays(
    pytester: pytest.Pytester, fake_api: FakeLLMServer, stress: bool
) -> None:
    kills = 20 if stress else 3
    rng = random.Random(SEED + 1)
    started = time.perf_counter()
    pytester.makeconftest(PROJECT_CONFTEST + READY_HOOK)
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(**{PLUGIN_TEST_FILE: plugin_tests()})
    out = pytester.path / "_out"
    out.mkdir()
    env = inner_env(fake_api, out)
    log = pytester.path / "_inner.log"

    def start(*args: str) -> subprocess.Popen[Any]:
        # as Project.run: plugins the inner runs do not need (hypothesis's alone adds a second at the end)
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                   "-p", "no:anyio", "-q", f"{PLUGIN_TEST_FILE}.py", *args]
        with open(log, "wb") as handle:
            return subprocess.Popen(command, cwd=pytester.path, env=env, stdin=subprocess.DEVNULL,
                                    stdout=handle, stderr=subprocess.STDOUT)

    ready = out / "ready"

    def is_ready() -> bool:
        return ready.exists()

    def to_end(*args: str) -> tuple[int, str, float]:
        ready.unlink(missing_ok=True)
        code, seconds = work_time(start(*args), is_ready)
        return code, log.read_text(errors="replace"), seconds

    code, output, full_run = to_end("--llm-cache=record", "--llm-cache-dir=calibration")
    assert code == 0, output[-3000:]
    shutil.rmtree(pytester.path / "calibration")

    cassettes = pytester.path / "cassettes"
    checker = Checker(cassettes)
    killed = finished = 0
    stuck_after: list[str] = []
    for run in range(kills):
        # the early tests, then, in the last killed session, the late ones: the final record
        # run has something to re-record
        half = "early" if run < kills - 1 else "late"
        ready.unlink(missing_ok=True)
        # each run does half the tests: a delay within half a full run lands in it
        if kill_at_random(start("--llm-cache=record", "-k", half), is_ready, rng.uniform(0.0, full_run / 2))[0]:
            killed += 1
        else:
            finished += 1
            assert "passed" in log.read_text(errors="replace"), log.read_text(errors="replace")[-3000:]
        checker.check(f"after run {run}")
        _, stuck = stuck_locks(cassettes)
        stuck_after.extend(f"after run {run}: {path}" for path in stuck)
        if checker.problems or stuck_after:
            break

    leftovers = temp_files(pytester.path)
    valid_before = len(checker.valid())

    calls = fake_api.count()
    record_report = pytester.path / "record.json"
    code, record_output, _ = to_end("--llm-cache=record", f"--llm-cache-report={record_report}")
    re_recorded = fake_api.count() - calls
    checker.check("after the record run")

    calls = fake_api.count()
    code_replay, replay_output, _ = to_end("--llm-cache=replay")
    replay_calls = fake_api.count() - calls
    lock_count, stuck = stuck_locks(cassettes)

    figures = {
        "seed": SEED + 1,
        "tests": PLUGIN_TESTS,
        "runs": kills,
        "kills": killed,
        "finished_before_the_kill": finished,
        "full_run_work_seconds": round(full_run, 3),
        "cassettes_checked": checker.checked,
        "corrupt_found": len(checker.problems),
        "stuck_locks": len(stuck_after) + len(stuck),
        "lock_files": lock_count,
        "leftover_temp_files": len(leftovers),
        "valid_cassettes_before_final_run": valid_before,
        "re_recorded": re_recorded,
        "replay_upstream_calls": replay_calls,
        "seconds": round(time.perf_counter() - started, 1),
    }
    record_figures("crash", "plugin", figures)
    print("crash (plugin):", json.dumps(figures))

    assert checker.problems == [], "damaged cassettes:\n" + "\n".join(checker.problems[:20])
    assert stuck_after == [] and stuck == [], f"locks still held: {stuck_after[:10]} {stuck[:10]}"
    assert all(not p.name.endswith(".yaml") for p in leftovers), leftovers
    assert killed > 0, "no run was killed: the delays are all longer than the runs"
    assert code == 0, record_output[-3000:]
    assert f"{PLUGIN_TESTS} passed" in record_output, record_output[-3000:]
    report = json.loads(record_report.read_text())
    assert re_recorded == PLUGIN_TESTS - valid_before, figures
    assert report["recorded"] == PLUGIN_TESTS - valid_before and report["hits"] == valid_before, report
    assert len(list(cassettes.rglob("*.yaml"))) == PLUGIN_TESTS
    assert code_replay == 0 and f"{PLUGIN_TESTS} passed" in replay_output, replay_output[-3000:]
    assert replay_calls == 0
