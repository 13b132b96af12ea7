"""Under pytest-xdist, workers send their figures to the controller, which prints one merged summary."""

from __future__ import annotations

import json

import pytest

from conftest import Project

TESTS = "from conftest import chat\n" + "\n".join(
    f"def test_{i}(client, llm_cache):\n    chat(client, 'question {i % 6}')\n" for i in range(12)
)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_merged_counts_equal_a_run_without_xdist(project: Project, workers: str) -> None:
    project.pytester.makepyfile(test_par=TESTS)
    project.run("--llm-cache=record").assert_outcomes(passed=12)
    assert len(project.files()) == 6

    serial = project.pytester.path / "serial.json"
    parallel = project.pytester.path / "parallel.json"
    project.run(f"--llm-cache-report={serial}").assert_outcomes(passed=12)
    result = project.run("-n", workers, f"--llm-cache-report={parallel}")
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines(["hits: 12   misses: 0   recorded: 0   refreshed: 0   stale: 0   hit rate: 100%"])
    assert len([line for line in result.outlines if line.startswith("hits: ")]) == 1
    merged, alone = json.loads(parallel.read_text()), json.loads(serial.read_text())
    for report in (merged, alone):  # when each was written
        del report["created_at"], report["inventory"]["taken_at"]
    assert [t["test_id"] for t in merged["per_test"]] == sorted(t["test_id"] for t in merged["per_test"])
    assert len(merged["per_test"]) == 12
    assert merged == alone
    assert project.server.count() == 6


def test_misses_from_workers_are_listed(project: Project) -> None:
    project.pytester.makepyfile(test_par=TESTS)
    result = project.run("-n", "2")
    result.assert_outcomes(failed=12)
    result.stdout.fnmatch_lines(["hits: 0   misses: 12*", "misses (12):", "  ... and 2 more"])
    assert project.server.count() == 0


def test_parallel_recording_of_the_same_requests_calls_upstream_once_per_key(project: Project) -> None:
    project.pytester.makepyfile(test_par=TESTS)  # 12 tests, 6 distinct requests
    serial_report = project.pytester.path / "serial.json"
    project.run("--llm-cache=record", f"--llm-cache-report={serial_report}").assert_outcomes(passed=12)
    serial = json.loads(serial_report.read_text())
    for path in project.files():
        path.unlink()
    project.server.calls.clear()

    parallel_report = project.pytester.path / "parallel.json"
    project.run("-n", "2", "--llm-cache=record", f"--llm-cache-report={parallel_report}").assert_outcomes(passed=12)
    parallel = json.loads(parallel_report.read_text())
    assert project.server.count() == 6
    assert len(project.files()) == 6
    assert {k: parallel[k] for k in ("hits", "recorded", "misses")} == {k: serial[k] for k in ("hits", "recorded", "misses")}
    project.run().assert_outcomes(passed=12)  # every cassette valid


def test_threads_asking_for_the_same_missing_request_make_one_upstream_call(project: Project) -> None:
    project.pytester.makepyfile(
        test_threads="""
from concurrent.futures import ThreadPoolExecutor
from conftest import chat
def test_it(client, llm_cache, save):
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: chat(client, "same").choices[0].message.content, range(16)))
    assert set(answers) == {"echo: same"}
    save("stats", [llm_cache.stats.recorded, llm_cache.stats.hits])
"""
    )
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    assert project.server.count() == 1
    assert project.result("stats") == [1, 15]


def test_a_lock_left_by_a_killed_process_does_not_block(project: Project) -> None:
    import os
    import signal
    import subprocess
    import sys

    project.pytester.makepyfile(test_k="from conftest import chat\ndef test_it(client, llm_cache):\n    chat(client, 'locked')\n")
    # find the key of the request by recording it once, then remove the cassette
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    [path] = project.files()
    key = path.stem
    path.unlink()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from llm_cache import FileStore; "
         f"FileStore({str(project.cassettes)!r}).lock({key!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert (project.cassettes / ".llm-cache" / "locks" / "keys.lock").exists()
    # a lock still held would make this wait for minutes: the timeout fails the test instead
    result = project.pytester.runpytest_subprocess("--llm-cache=record", "-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=1)
    assert len(project.files()) == 1
