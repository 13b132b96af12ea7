"""The file store's per-key recording locks on every kind of system, each in its own processes.

``fcntl``: the system has POSIX record locks (a byte of one file per key). ``msvcrt``: it has
Windows byte-range locks instead; here ``import fcntl`` fails and an ``msvcrt`` made of
``lockf`` on the descriptor's position stands in, which checks our seek-and-lock code, not
Windows. ``filelock``: it has neither, and filelock's lock (its soft lock, then) takes over.
Whatever the kind, ``import llm_cache`` works, one holder at a time across processes and
threads, a killed holder never blocks the next, and a bounded wait ends in TimeoutError.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

KINDS = ["fcntl", "msvcrt", "filelock"]

# Run as a script: argv = kind, action, store root, then the action's arguments.
WORKER = r'''
import errno, json, os, sys, threading, time, warnings

kind, action, root, *args = sys.argv[1:]
if kind != "fcntl":
    import fcntl as _real
    sys.modules["fcntl"] = None  # `import fcntl` now raises ImportError, as on Windows
warnings.simplefilter("ignore")  # filelock says when only its soft lock is left

import llm_cache
from llm_cache.stores.files import FileStore, lock_kind

if kind == "msvcrt":
    # installed after the imports (the standard library takes msvcrt for a sign of Windows);
    # the lock kind is chosen at the first lock
    import types

    fake = types.ModuleType("msvcrt")
    fake.LK_UNLCK, fake.LK_LOCK, fake.LK_NBLCK, fake.LK_RLCK, fake.LK_NBRLCK = range(5)

    def locking(fd, mode, nbytes):
        # like the C runtime's _locking: nbytes from the descriptor's current position
        where = os.lseek(fd, 0, os.SEEK_CUR)
        if mode == fake.LK_UNLCK:
            _real.lockf(fd, _real.LOCK_UN, nbytes, where, os.SEEK_SET)
            return
        try:
            _real.lockf(fd, _real.LOCK_EX | _real.LOCK_NB, nbytes, where, os.SEEK_SET)
        except OSError:
            raise OSError(errno.EACCES, "Permission denied") from None

    fake.locking = locking
    sys.modules["msvcrt"] = fake

chosen = lock_kind()
assert chosen == kind, (chosen, kind)
KEY = "ab" * 32
store = FileStore(root)


def log_rounds(log, who, rounds):
    for _ in range(rounds):
        lock = store.lock(KEY)
        lock.acquire(timeout=60)
        try:
            for mark in ("start", "end"):
                with open(log, "a") as handle:
                    handle.write(f"{who} {mark}\n")
                time.sleep(0.002)  # widen the window an interleaving needs
        finally:
            lock.release()


if action == "kind":
    print(json.dumps({"kind": chosen, "version": llm_cache.__version__}))
elif action == "append":
    log, rounds = args[0], int(args[1])
    while not os.path.exists(os.path.join(root, "go")):
        time.sleep(0.001)
    log_rounds(log, f"p{os.getpid()}", rounds)
elif action == "threads":
    log, rounds, count = args[0], int(args[1]), int(args[2])
    workers = [threading.Thread(target=log_rounds, args=(log, f"t{i}", rounds)) for i in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
elif action == "hold":
    store.lock(KEY).acquire(timeout=10)
    print("held", flush=True)
    time.sleep(120)
elif action == "try":
    start = time.monotonic()
    lock = store.lock(KEY)
    try:
        lock.acquire(timeout=float(args[0]))
    except TimeoutError as exc:
        print(json.dumps({"ok": False, "error": type(exc).__name__, "waited": time.monotonic() - start}))
    else:
        waited = time.monotonic() - start
        lock.release()
        print(json.dumps({"ok": True, "waited": waited}))
'''


@pytest.fixture
def worker(tmp_path: Path) -> Path:
    script = tmp_path / "lock_worker.py"
    script.write_text(WORKER)
    return script


def _args(worker: Path, kind: str, action: str, root: Path, *rest: object) -> list[str]:
    return [sys.executable, str(worker), kind, action, str(root), *map(str, rest)]


def _run(worker: Path, kind: str, action: str, root: Path, *rest: object) -> str:
    args = _args(worker, kind, action, root, *rest)
    out = subprocess.run(args, check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _assert_one_at_a_time(log: Path, holders: int, rounds: int) -> None:
    lines = log.read_text().splitlines()
    assert len(lines) == 2 * holders * rounds
    pairs = list(zip(lines[::2], lines[1::2]))
    for start, end in pairs:
        who = start.split()[0]
        assert (start, end) == (f"{who} start", f"{who} end"), f"interleaved: {start!r} then {end!r}"
    assert len({start.split()[0] for start, _ in pairs}) == holders


def _hold(worker: Path, kind: str, root: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(_args(worker, kind, "hold", root), stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_import_works_where_there_is_no_fcntl(worker: Path, tmp_path: Path) -> None:
    out = json.loads(_run(worker, "filelock", "kind", tmp_path / "c"))
    assert out["kind"] == "filelock" and out["version"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_lock_in_use_is_the_systems_own(worker: Path, tmp_path: Path, kind: str) -> None:
    root = tmp_path / "c"
    out = json.loads(_run(worker, kind, "try", root, 1))
    assert out["ok"]
    locks = root / ".llm-cache" / "locks"
    if kind == "filelock":
        assert not (locks / "keys.lock").exists()
    else:
        assert (locks / "keys.lock").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_two_processes_hold_the_lock_one_at_a_time(worker: Path, tmp_path: Path, kind: str) -> None:
    root, log, rounds = tmp_path / "c", tmp_path / "log", 15
    procs = [subprocess.Popen(_args(worker, kind, "append", root, log, rounds)) for _ in range(2)]
    time.sleep(0.5)  # both imported and waiting
    root.mkdir(exist_ok=True)
    (root / "go").touch()
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    _assert_one_at_a_time(log, holders=2, rounds=rounds)


@pytest.mark.parametrize("kind", KINDS)
def test_eight_threads_hold_the_lock_one_at_a_time(worker: Path, tmp_path: Path, kind: str) -> None:
    log, rounds = tmp_path / "log", 5
    _run(worker, kind, "threads", tmp_path / "c", log, rounds, 8)
    _assert_one_at_a_time(log, holders=8, rounds=rounds)


@pytest.mark.parametrize("kind", KINDS)
def test_a_bounded_wait_ends_in_timeout_while_another_process_holds(
    worker: Path, tmp_path: Path, kind: str
) -> None:
    root = tmp_path / "c"
    holder = _hold(worker, kind, root)
    try:
        out = json.loads(_run(worker, kind, "try", root, 0.2))
    finally:
        holder.kill()
        holder.wait()
    assert out["ok"] is False and out["error"] == "TimeoutError"
    assert 0.15 <= out["waited"] < 2


@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_holder_does_not_block_the_next(worker: Path, tmp_path: Path, kind: str) -> None:
    root = tmp_path / "c"
    holder = _hold(worker, kind, root)
    holder.kill()  # SIGKILL: no release, no clean-up
    holder.wait()
    out = json.loads(_run(worker, kind, "try", root, 10))
    assert out["ok"], out
    assert out["waited"] < 2
