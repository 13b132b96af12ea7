"""The plugin on the Redis store: record, replay, refresh; two pytest processes sharing one Redis."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from conftest import Project
from redis_server import RedisTarget

TESTS = "from conftest import chat\n" + "\n".join(
    f"def test_{i}(client, llm_cache, save):\n    save('r{i}', chat(client, 'redis question {i % 4}').choices[0].message.content)\n"
    for i in range(8)
)


def test_record_replay_refresh_on_redis(project: Project, redis_target: RedisTarget) -> None:
    project.pytester.makepyfile(test_r=TESTS)
    store = f"--llm-cache-store={redis_target.store_url}"
    result = project.run("--llm-cache=record", store)
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines([f"mode: record   store: {redis_target.store_url} (4 entries, * KB)", "hits: 4   misses: 0   recorded: 4*"])
    assert project.files() == []  # nothing on disk
    assert project.server.count() == 4
    assert all(k.startswith(redis_target.prefix.encode()) for k in redis_target.keys())

    project.run(store).assert_outcomes(passed=8)
    assert project.server.count() == 4

    # age one entry: refresh re-records it, and only it
    client = redis_target.client()
    entry_keys = [k for k in client.scan_iter(match=f"{redis_target.prefix}e:*")]
    old = client.get(entry_keys[0]).decode()
    client.set(entry_keys[0], re.sub(r"recorded_at: '[^']+'", "recorded_at: '2020-01-01T00:00:00Z'", old, count=1))
    project.server.generation = 3
    result = project.run("--llm-cache=refresh", store)
    result.assert_outcomes(passed=8)
    # the aged request is asked twice: re-recorded once, then served fresh
    result.stdout.fnmatch_lines(["hits: 7   misses: 0   recorded: 0   refreshed: 1   stale: 0*"])
    assert project.server.count() == 5
    assert "(gen 3)" in client.get(entry_keys[0]).decode()


def test_replay_miss_on_redis_never_calls_upstream(project: Project, redis_target: RedisTarget) -> None:
    project.pytester.makepyfile(test_r=TESTS)
    result = project.run(f"--llm-cache-store={redis_target.store_url}")
    result.assert_outcomes(failed=8)
    result.stdout.fnmatch_lines([f"E*looked in: {redis_target.store_url.split('?')[0]}/{redis_target.prefix}e:*"])
    assert project.server.count() == 0


def test_two_pytest_processes_share_one_redis(project: Project, redis_target: RedisTarget) -> None:
    project.pytester.makepyfile(test_r=TESTS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--llm-cache=record",
               f"--llm-cache-store={redis_target.store_url}"]
    procs = [subprocess.Popen(command, cwd=project.pytester.path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
    # 4 distinct requests, asked 4 times each across the two processes: each went upstream once
    assert project.server.count() == 4
    counts = [re.search(r"hits: (\d+)   misses: 0   recorded: (\d+)", out) for out in outputs]
    assert sum(int(m.group(2)) for m in counts if m) == 4
    assert sum(int(m.group(1)) for m in counts if m) == 12
    project.run(f"--llm-cache-store={redis_target.store_url}").assert_outcomes(passed=8)
    assert project.server.count() == 4


def test_unreachable_redis_fails_the_session_at_start(project: Project) -> None:
    from redis_server import free_port

    project.pytester.makepyfile(test_r=TESTS)
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0?timeout=1"
    started = time.monotonic()
    result = project.run(f"--llm-cache-store={url}")
    assert time.monotonic() - started < 10
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: cache store redis://:***@127.0.0.1:*/0?timeout=1 is unavailable within 1 s: *"])
    assert "hunter2" not in result.stderr.str()


def test_cap_and_eviction_on_redis(project: Project, redis_target: RedisTarget) -> None:
    store = f"--llm-cache-store={redis_target.store_url}"
    project.pytester.makepyfile(test_r=TESTS)
    project.run("--llm-cache=record", store).assert_outcomes(passed=8)
    project.pytester.makepyfile(test_r="from conftest import chat\ndef test_new(client, llm_cache):\n    chat(client, 'new one')\n")
    result = project.run("--llm-cache=record", store, "--llm-cache-max-entries=2", "--llm-cache-eviction=fifo")
    result.stdout.fnmatch_lines(["evicted: 3 (cap 2 entries, fifo)"])
    client = redis_target.client()
    assert len(list(client.scan_iter(match=f"{redis_target.prefix}e:*"))) == 2
    assert client.zcard(f"{redis_target.prefix}fifo") == 2
