"""Disks that refuse writes: a replay session writes nothing it needs, so a read-only or full
cassette directory still passes, with its summary, its report and one warning; a cassette
that cannot be recorded fails its test with ``llm_cache.StoreError`` naming the file and the
cause, and leaves nothing half-written.

A read-only directory is made three ways: a read-only bind mount and a small tmpfs filled to
the last byte (both in a mount namespace of their own, ``unshare --mount``, so nothing
outlives the test), and ``chmod a-w``, which binds only a user who is not root (as root, the
run is made as ``nobody`` with ``setpriv``). Each is skipped, with the reason, where the
machine cannot.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import Project

from llm_cache.cassette import Body, Entry
from llm_cache.errors import LLMCacheError
from llm_cache.key import make_key

INNER = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:anyio"]

KEPT = """
from conftest import chat

def test_kept_one(client, llm_cache):
    assert chat(client, "kept one").choices[0].message.content == "echo: kept one"

def test_kept_two(client, llm_cache):
    assert chat(client, "kept two").choices[0].message.content == "echo: kept two"
"""

NEW = """
from conftest import chat

def test_new(client, llm_cache):
    chat(client, "never recorded " + "x" * 4000)
"""


def _probe_namespace() -> str | None:
    """Why mounts in a private namespace cannot be made here, or None when they can."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    with tempfile.TemporaryDirectory() as scratch:
        script = 'mount -t tmpfs -o size=64k tmpfs "$1" && mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1"'
        try:
            done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", scratch],
                                  capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unshare failed: {exc}"
    if done.returncode != 0:
        return f"cannot mount in a private mount namespace (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}"
    return None


NAMESPACE = _probe_namespace()
needs_mounts = pytest.mark.skipif(NAMESPACE is not None, reason=str(NAMESPACE))


def _in_namespace(setup: str, *command: str) -> list[str]:
    """``command`` run after the shell lines ``setup``, in a mount namespace of its own;
    then the hidden temporary files and cassettes left under ``$DIR`` are listed."""
    script = f"""set -eu
{setup}
set +e
"$@"
rc=$?
echo "--- left under $DIR:"
find "$DIR" -path "$DIR/.llm-cache" -prune -o \\( -name '*.yaml' -o -name '*.tmp' \\) -print | sort
exit $rc
"""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *command]


def _left(result: pytest.RunResult) -> list[str]:
    lines = result.outlines
    return lines[lines.index(next(line for line in lines if line.startswith("--- left under"))) + 1:]


def _recorded(project: Project) -> list[str]:
    project.pytester.makepyfile(test_kept=KEPT)
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    return sorted(str(p) for p in project.files())


def _expect_replay(result: pytest.RunResult, report: Path, cause: str) -> None:
    result.assert_outcomes(passed=2, warnings=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        f"*LLMCacheWarning: usage index not written: *: {cause}. The cache works without it;*",
        "*- llm-cache -*",
        "mode: replay   store: *",
        "hits: 2   misses: 0   recorded: 0*",
    ])
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
    assert json.loads(report.read_text())["hits"] == 2


@needs_mounts
@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["no-xdist", "n2"])
def test_replay_on_a_read_only_mount_passes_with_summary_report_and_one_warning(
    project: Project, xdist: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = _recorded(project)
    shutil.rmtree(project.cassettes / ".llm-cache")  # as in a fresh checkout: nothing derived yet
    project.pytester.makepyfile(test_kept=KEPT)
    report = project.pytester.path / "report.json"
    setup = 'mount --bind "$DIR" "$DIR" && mount -o remount,ro,bind "$DIR" "$DIR"'
    monkeypatch.setenv("DIR", str(project.cassettes))
    result = project.pytester.run(*_in_namespace(setup, *INNER, *xdist, f"--llm-cache-report={report}"), timeout=120)
    _expect_replay(result, report, "the file system is read-only (EROFS)")
    assert _left(result) == kept
    assert not (project.cassettes / ".llm-cache").exists()  # nothing was written


@needs_mounts
def test_recording_on_a_read_only_mount_fails_that_test_with_store_error(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = _recorded(project)
    project.pytester.makepyfile(test_kept=KEPT, test_new=NEW)
    setup = 'mount --bind "$DIR" "$DIR" && mount -o remount,ro,bind "$DIR" "$DIR"'
    monkeypatch.setenv("DIR", str(project.cassettes))
    result = project.pytester.run(*_in_namespace(setup, *INNER, "--llm-cache=record"), timeout=120)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        f"E *llm_cache.errors.StoreError: cannot * {project.cassettes}/*: the file system is read-only (EROFS)",
        "E *Fix: record on a writable checkout (replay needs no writes), or point --llm-cache-dir at a writable*",
    ])
    result.stdout.fnmatch_lines(["*- llm-cache -*", "mode: record   store: *"])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
    assert _left(result) == kept


FILL = """mount -t tmpfs -o size=256k tmpfs "$DIR"
cp -a "$SRC"/. "$DIR"/
cat /dev/zero > "$DIR/.filler" 2>/dev/null || true"""


@needs_mounts
def test_a_full_disk_replay_passes_and_recording_fails_with_store_error_leaving_nothing(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = _recorded(project)  # the tmpfs gets these cassettes, their locks and parsed copies
    project.pytester.makepyfile(test_kept=KEPT, test_new=NEW)
    full = project.pytester.path / "full"
    full.mkdir()
    report = project.pytester.path / "report.json"
    monkeypatch.setenv("DIR", str(full))
    monkeypatch.setenv("SRC", str(project.cassettes))
    replay = project.pytester.run(*_in_namespace(
        FILL, *INNER, "test_kept.py", f"--llm-cache-dir={full}", f"--llm-cache-report={report}"), timeout=120)
    record = project.pytester.run(*_in_namespace(
        FILL, *INNER, "--llm-cache=record", f"--llm-cache-dir={full}"), timeout=120)
    _expect_replay(replay, report, "the disk is full (ENOSPC)")

    record.assert_outcomes(passed=2, failed=1)
    cassette = f"{full}/gpt-4o/*.yaml"
    record.stdout.fnmatch_lines([
        f"E *llm_cache.errors.StoreError: cannot write the cassette {cassette}: the disk is full (ENOSPC)",
        "E *Fix: free space on it, or point --llm-cache-dir at a disk that has some.",
    ])
    record.stdout.fnmatch_lines(["*- llm-cache -*", "mode: record   store: *"])
    record.stdout.no_fnmatch_line("*INTERNALERROR*")
    # the same cassettes as before: no temporary file, nothing half-written
    assert _left(record) == [path.replace(str(project.cassettes), str(full)) for path in kept]


def _unwritable_run(project: Project, *args: str) -> tuple[pytest.RunResult, Path]:
    """A replay in a cassette dir this user cannot write (chmod a-w): in process for a user
    who is not root; as root, whom chmod does not stop, as ``nobody`` through ``setpriv``,
    in a copy of the project that ``nobody`` can read."""
    if os.geteuid() != 0:
        _chmod_tree(project.cassettes, writable=False)
        report = project.pytester.path / "report.json"
        try:
            return project.run(f"--llm-cache-report={report}", *args), report
        finally:
            _chmod_tree(project.cassettes, writable=True)
    if shutil.which("setpriv") is None:
        pytest.skip("running as root, and no setpriv to run the session as an unprivileged user")
    base = Path(tempfile.mkdtemp(prefix="llm-cache-unwritable-", dir="/tmp"))
    try:
        base.chmod(0o755)
        for name in ("conftest.py", "test_kept.py"):
            shutil.copy(project.pytester.path / name, base / name)
        shutil.copytree(project.cassettes, base / "cassettes", symlinks=True)
        out = base / "out"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        _chmod_tree(base / "cassettes", writable=False)
        report = out / "report.json"
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", *INNER,
                   f"--llm-cache-report={report}", *args]
        done = subprocess.run(command, check=False, cwd=base, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(out)})
        result = pytest.RunResult(done.returncode, done.stdout.splitlines(), done.stderr.splitlines(), 0.0)
        kept = project.pytester.path / "report.json"
        if report.exists():
            shutil.copy(report, kept)
        assert not (base / "cassettes" / ".llm-cache").exists()
        return result, kept
    finally:
        _chmod_tree(base, writable=True)
        shutil.rmtree(base, ignore_errors=True)


def _chmod_tree(top: Path, writable: bool) -> None:
    for path in [top, *top.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_replay_in_a_directory_this_user_cannot_write_passes_with_one_warning(project: Project) -> None:
    _recorded(project)
    shutil.rmtree(project.cassettes / ".llm-cache")
    project.pytester.makepyfile(test_kept=KEPT)
    result, report = _unwritable_run(project)
    _expect_replay(result, report, "permission denied (EACCES)")


@pytest.mark.parametrize("name", ["usage.json", "usage.lock"])
def test_a_usage_index_or_lock_that_is_a_directory_is_a_warning_not_a_traceback(project: Project, name: str) -> None:
    _recorded(project)
    (project.cassettes / ".llm-cache" / name).unlink(missing_ok=True)
    (project.cassettes / ".llm-cache" / name).mkdir()
    project.pytester.makepyfile(test_kept=KEPT)
    report = project.pytester.path / "report.json"
    result = project.run(f"--llm-cache-report={report}")
    result.assert_outcomes(passed=2, warnings=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines([f"*LLMCacheWarning: usage index not written: *{name}: *directory*"])
    result.stdout.no_fnmatch_line("*Traceback*")
    assert json.loads(report.read_text())["hits"] == 2


def _block(path: Path, as_dir: bool) -> None:
    """Put a directory (or a file) where the store wants to write a file (or a directory)."""
    if path.is_dir() and not as_dir:
        shutil.rmtree(path)
    elif path.exists() and as_dir:
        path.unlink()
    if as_dir:
        path.mkdir(exist_ok=True)
    else:
        path.write_text("in the way\n")


def test_parsed_copies_and_indexes_that_cannot_be_written_are_warnings_never_a_failed_session(
    project: Project,
) -> None:
    project.pytester.makeini("[pytest]\nllm_cache_parsed_copies = on\n")  # copies of small cassettes too
    _recorded(project)
    meta = project.cassettes / ".llm-cache"
    _block(meta / "parsed", as_dir=False)  # the copies' directory is a file
    _block(meta / "digests", as_dir=False)
    project.pytester.makepyfile(test_kept=KEPT, test_unrecorded="""
import pytest
from llm_cache import CacheMiss
from conftest import chat

def test_miss(client, llm_cache):
    with pytest.raises(CacheMiss):
        chat(client, "not recorded")
""")
    result = project.run()
    result.assert_outcomes(passed=3, warnings=2)
    assert result.ret == 0
    result.stdout.fnmatch_lines_random([
        "*LLMCacheWarning: parsed copies not written: *parsed: is a file, not a directory*",
        "*LLMCacheWarning: digest index not written: *digests: is a file, not a directory*",
    ])
    # the scan index, written after a session that recorded with a cap
    _block(meta / "scan.json", as_dir=True)
    project.pytester.makepyfile(test_new="from conftest import chat\ndef test_new(client, llm_cache):\n"
                                "    chat(client, 'one more')\n")
    result = project.run("--llm-cache=record", "--llm-cache-max-entries=10", "test_new.py")
    result.assert_outcomes(passed=1, warnings=2)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*LLMCacheWarning: scan index not written: *scan.json: *directory*"])


class _HalfWriter:
    """A file handle that writes half of what it is given, then finds the disk full."""

    def __init__(self, handle: object) -> None:
        self.handle = handle

    def __enter__(self) -> object:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()  # type: ignore[attr-defined]

    def write(self, data: bytes) -> int:
        self.handle.write(data[: len(data) // 2])  # type: ignore[attr-defined]
        self.handle.flush()  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_cassette_write_cut_short_by_a_full_disk_leaves_the_old_file_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llm_cache
    from llm_cache import atomic
    from llm_cache.stores.files import FileStore

    store = FileStore(tmp_path / "cassettes")
    entry = _entry()
    path = Path(store.put(entry))
    before = path.read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, *a, **k: _HalfWriter(real_fdopen(fd, *a, **k)))
    with pytest.raises(llm_cache.StoreError) as failure:
        store.put(entry)
    assert failure.value.path == str(path)
    assert failure.value.errno == errno.ENOSPC
    assert str(failure.value).splitlines() == [
        f"cannot write the cassette {path}: the disk is full (ENOSPC)",
        "Fix: free space on it, or point --llm-cache-dir at a disk that has some.",
    ]
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == [path.name]


@pytest.mark.parametrize(("code", "cause", "fix"), [
    (errno.ENOSPC, "the disk is full (ENOSPC)", "free space on it"),
    (errno.EROFS, "the file system is read-only (EROFS)", "record on a writable checkout"),
    (errno.EACCES, "permission denied (EACCES)", "make the cassette directory writable by this user"),
    (errno.EIO, "Input/output error (EIO)", "check that the cassette directory exists and this user can write it"),
])
def test_store_error_names_path_cause_and_fix_and_pickles(code: int, cause: str, fix: str) -> None:
    import llm_cache

    error = llm_cache.StoreError.from_os_error("cassettes/gpt-4o/0123456789abcdef.yaml", OSError(code, os.strerror(code)))
    assert isinstance(error, OSError) and isinstance(error, LLMCacheError)
    assert (error.path, error.cause, error.errno) == ("cassettes/gpt-4o/0123456789abcdef.yaml", cause, code)
    first, second = str(error).splitlines()
    assert first == f"cannot write the cassette cassettes/gpt-4o/0123456789abcdef.yaml: {cause}"
    assert second.startswith(f"Fix: {fix}")
    error.add_note("while recording tests/test_x.py::test_a")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and vars(back) == vars(error) and str(back) == str(error)
    assert back.errno == code


def _entry() -> Entry:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    rk = make_key("POST", "https://api.openai.com/v1/chat/completions", json.dumps(body).encode(), {})
    return Entry(key=rk.key, recorded_at=datetime.now(timezone.utc), model="gpt-4o", model_version="gpt-4o",
                 method="POST", path=rk.path, query=[], request_headers={}, request_body=Body("json", body),
                 status=200, response_headers={"content-type": "application/json"},
                 response_body=Body("json", {"choices": [{"message": {"content": "hello"}}]}))
