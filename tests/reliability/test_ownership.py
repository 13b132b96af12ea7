"""Only cassettes are touched: prune, eviction, ls, stats and verify act on files that prove
to be cassettes, and list the rest; nothing is read, written, renamed or deleted through a
symlink under the cassette directory (one rule everywhere: no symlink below the root is
followed, so what replay refuses, ls and verify show as refused); every read is of a
regular file whose size was checked first.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project

SCRIPT = shutil.which("llm-cache", path=os.path.dirname(sys.executable)) or "llm-cache"
INNER = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:anyio"]
MEMORY = 3 << 30  # address space for a child: a read of /dev/zero fails instead of filling the machine

THREE = """
from conftest import chat

def test_a(client, llm_cache):
    assert chat(client, "prompt a").choices[0].message.content == "echo: prompt a"

def test_b(client, llm_cache):
    assert chat(client, "prompt b").choices[0].message.content == "echo: prompt b"

def test_c(client, llm_cache):
    assert chat(client, "prompt c").choices[0].message.content == "echo: prompt c"
"""

ONE_MORE = """
from conftest import chat

def test_d(client, llm_cache):
    chat(client, "prompt d")
"""


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def run(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A command in a child with bounded memory and time: a regression fails, it cannot hang
    or exhaust the machine."""
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          preexec_fn=_limited, check=False)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run(SCRIPT, *args)


def replay(project: Project, *args: str) -> pytest.RunResult:
    done = run(*INNER, *args, cwd=project.pytester.path, timeout=120)
    return pytest.RunResult(done.returncode, done.stdout.splitlines(), done.stderr.splitlines(), 0.0)


def _record_three(project: Project) -> None:
    project.pytester.makepyfile(test_three=THREE)
    project.run("--llm-cache=record").assert_outcomes(passed=3)


def _not_cassettes(root: Path) -> dict[Path, bytes]:
    """Files a careless --dir would put under the cassette dir's model-directory level."""
    made = {
        root / "conf" / "config.yaml": b"database: postgres://localhost/app\nretries: 3\n",
        root / "conf" / "llm.yaml": b"llm_cache: 1\nmodels: [gpt-4o]\n",
        root / "gpt-4o" / "notes.yaml": b"- remember to re-record after the model upgrade\n",
        root / "docs.yaml": b"title: not in a model directory\n",
    }
    for path, data in made.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return made


def test_eviction_and_prune_remove_cassettes_only(project: Project) -> None:
    _record_three(project)
    kept = _not_cassettes(project.cassettes)
    project.pytester.makepyfile(test_more=ONE_MORE)
    result = project.run("--llm-cache=record", "--llm-cache-max-entries=1", "test_more.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["evicted: 3 (cap 1 entr*, lru)"])
    assert {p: p.read_bytes() for p in kept} == kept
    assert len(project.files()) == 1 + len(kept)

    out = cli("prune", "--model", "gpt-4o", "--dir", str(project.cassettes))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].startswith("removed 1 of 1 cassettes")
    assert {p: p.read_bytes() for p in kept} == kept
    assert sorted(project.files()) == sorted(kept)


def test_verify_lists_what_is_not_a_cassette_and_ls_and_stats_leave_it_out(project: Project) -> None:
    _record_three(project)
    kept = _not_cassettes(project.cassettes)
    out = cli("verify", "--dir", str(project.cassettes))
    assert out.returncode == 0, out.stdout
    lines = out.stdout.splitlines()
    listed = sorted(p for p in kept if p.parent != project.cassettes)  # docs.yaml lies where no cassette can
    assert sorted(line for line in lines if line.endswith("not a cassette; left alone")) == [
        f"{p}: not a cassette; left alone" for p in listed]
    assert lines[-1] == "3 cassettes checked, all sound; 3 files not cassettes"
    data = json.loads(cli("ls", "--dir", str(project.cassettes), "--json").stdout)
    assert len(data) == 3 and all("error" not in row for row in data)
    assert cli("ls", "--dir", str(project.cassettes)).stdout.splitlines()[-1] == (
        "(3 files under it not cassettes, left alone: llm-cache verify lists them)")
    stats = json.loads(cli("stats", "--dir", str(project.cassettes), "--json").stdout)
    assert stats["total"]["entries"] == 3 and stats["total"]["unreadable"] == 0
    assert {p: p.read_bytes() for p in kept} == kept


def test_a_forged_scan_index_cannot_make_prune_remove_what_is_not_a_cassette(project: Project) -> None:
    _record_three(project)
    config = project.cassettes / "gpt-4o" / "config.yaml"
    config.write_text("database: postgres://localhost/app\n")
    cli("ls", "--dir", str(project.cassettes))  # writes the scan index
    index = project.cassettes / ".llm-cache" / "scan.json"
    data = json.loads(index.read_text())
    info = config.stat()
    data["files"]["gpt-4o/config.yaml"] = [info.st_size, info.st_mtime_ns, "c", "ab" * 32, 0.0]
    index.write_text(json.dumps(data))
    out = cli("prune", "--model", "gpt-4o", "--dir", str(project.cassettes))
    assert out.returncode == 0, out.stderr
    assert config.read_text() == "database: postgres://localhost/app\n"
    assert project.files() == [config]


def _relink(project: Project, how: str, outside: Path) -> Path:
    """Move a recorded cassette (or its model directory) away and leave a symlink to it;
    returns the link."""
    model = project.cassettes / "gpt-4o"
    if how == "model dir, outside":
        shutil.move(str(model), outside / "gpt-4o")
        model.symlink_to(outside / "gpt-4o", target_is_directory=True)
        return model
    if how == "model dir, inside":
        (project.cassettes / "archive").mkdir()
        shutil.move(str(model), project.cassettes / "archive" / "gpt-4o")
        model.symlink_to(Path("archive") / "gpt-4o", target_is_directory=True)
        return model
    cassette = next(p for p in sorted(model.iterdir()) if "prompt a" in p.read_text())
    shutil.move(str(cassette), outside / cassette.name)
    cassette.symlink_to(outside / cassette.name)
    return cassette


@pytest.mark.parametrize("how", ["model dir, outside", "model dir, inside", "cassette, outside"])
def test_a_symlink_under_the_cassette_dir_is_refused_by_replay_and_shown_by_ls_and_verify(
    project: Project, tmp_path_factory: pytest.TempPathFactory, how: str
) -> None:
    _record_three(project)
    outside = tmp_path_factory.mktemp("outside")
    link = _relink(project, how, outside)
    before = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}

    result = replay(project, "test_three.py::test_a")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        ("E *llm_cache.errors.CassetteError: cassette *.yaml is unusable: *symlink (to *), not followed: "
         "the cache follows no symlink under the cassette dir; replace the link with the *"),
    ])
    ls = cli("ls", "--dir", str(project.cassettes), "--json")
    assert ls.returncode == 0, ls.stderr
    refused = [row for row in json.loads(ls.stdout) if "error" in row]
    assert [row["path"] for row in refused] == [str(link)]
    assert "is a symlink (to " in refused[0]["error"]
    verify = cli("verify", "--dir", str(project.cassettes))
    assert verify.returncode == 1
    assert any(line.startswith(f"{link}: it is a symlink (to ") and "not followed" in line
               for line in verify.stdout.splitlines()), verify.stdout
    stats = json.loads(cli("stats", "--dir", str(project.cassettes), "--json").stdout)
    assert stats["total"]["unreadable"] == 1
    # nothing of it is pruned: not the link, not what it points to
    assert cli("prune", "--model", "gpt-4o", "--dir", str(project.cassettes)).returncode == 0
    assert link.is_symlink()
    assert {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before


def test_recording_through_a_symlinked_model_dir_moves_nothing_outside_aside(
    project: Project, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _record_three(project)
    outside = tmp_path_factory.mktemp("outside")
    link = _relink(project, "model dir, outside", outside)
    for path in (outside / "gpt-4o").iterdir():
        path.write_text("key: [damaged\n")  # unusable: record mode would move it aside
    before = sorted(p.name for p in (outside / "gpt-4o").iterdir())
    result = project.run("--llm-cache=record", "test_three.py::test_a")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E *CassetteError: cassette *.yaml is unusable: its directory is a symlink (to *), not followed*"])
    assert sorted(p.name for p in (outside / "gpt-4o").iterdir()) == before
    assert link.is_symlink()


@pytest.mark.parametrize("which", [".llm-cache", ".llm-cache/locks", ".llm-cache/parsed"])
def test_nothing_is_written_or_read_through_a_symlinked_llm_cache_dir(
    project: Project, tmp_path_factory: pytest.TempPathFactory, which: str
) -> None:
    project.pytester.makeini("[pytest]\nllm_cache_parsed_copies = on\n")  # copies of small cassettes too
    _record_three(project)
    outside = tmp_path_factory.mktemp("outside")
    place = project.cassettes / which
    shutil.copytree(place, outside, dirs_exist_ok=True)
    if which != ".llm-cache/locks":  # copies there that answer otherwise than the YAML
        for copy in outside.rglob("*.json"):
            copy.write_text(copy.read_text().replace("echo: prompt", "forged: prompt"))
    shutil.rmtree(place)
    place.symlink_to(outside, target_is_directory=True)
    before = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}

    result = project.run()  # replay: the YAML answers, whatever the copies over there say
    if which == ".llm-cache/locks":  # replay takes no lock
        result.assert_outcomes(passed=3)
    else:
        result.assert_outcomes(passed=3, warnings=1)
        result.stdout.fnmatch_lines([f"*LLMCacheWarning: * not written: *: is a symlink (to {outside}), not followed*"])
    project.pytester.makepyfile(test_more=ONE_MORE)
    result = project.run("--llm-cache=record", "test_more.py")
    if which == ".llm-cache/parsed":
        result.assert_outcomes(passed=1, warnings=1)
    else:  # the recording lock lives there: the test fails, saying where and why
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines([
            "E *llm_cache.errors.StoreError: cannot make the recording lock in *: is a symlink (to *), not followed",
            "E *Fix: replace the symlink with a real directory or file: the cache writes nothing through one.",
        ])
    assert place.is_symlink()
    assert {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before


def _plant(project: Project, where: str, kind: str) -> Path:
    """A symlink to /dev/zero, or a FIFO, where the cache reads a file."""
    meta = project.cassettes / ".llm-cache"
    cassette = next(p for p in project.files() if "prompt a" in p.read_text())
    path = {
        "cassette": cassette,
        "usage index": meta / "usage.json",
        "scan index": meta / "scan.json",
        "parsed copy": meta / "parsed" / "gpt-4o" / (cassette.stem + ".json"),
        "digest index": meta / "digests" / "gpt-4o.json",
    }[where]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    if kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    else:
        os.mkfifo(path)
    return path


MISS = """
import pytest
from llm_cache import CacheMiss
from conftest import chat

def test_miss(client, llm_cache):
    with pytest.raises(CacheMiss):
        chat(client, "never recorded")
"""


@pytest.mark.skipif(not os.path.exists("/dev/zero") or not hasattr(os, "mkfifo"), reason="needs /dev/zero and FIFOs")
@pytest.mark.parametrize("kind", ["link to /dev/zero", "FIFO"])
@pytest.mark.parametrize("where", ["cassette", "usage index", "scan index", "parsed copy", "digest index"])
def test_reads_are_bounded_no_link_to_dev_zero_or_fifo_is_read(project: Project, where: str, kind: str) -> None:
    _record_three(project)
    cli("ls", "--dir", str(project.cassettes))  # the scan index exists
    project.pytester.makepyfile(test_miss=MISS)
    replay(project, "test_miss.py").assert_outcomes(passed=1)  # and the digest index
    planted = _plant(project, where, kind)

    result = replay(project)
    if where == "cassette":
        result.assert_outcomes(passed=3, failed=1)
        shown = "is a symlink (to /dev/zero), not followed" if kind != "FIFO" else "is a named pipe (FIFO), not a regular file"
        result.stdout.fnmatch_lines([f"E *CassetteError: cassette {planted} is unusable: it {shown}*"])
    else:
        result.assert_outcomes(passed=4)
        assert result.ret == 0
    result.stdout.no_fnmatch_line("*MemoryError*")
    for command in ("ls", "stats", "verify"):
        out = cli(command, "--dir", str(project.cassettes))
        assert "Traceback" not in out.stderr, out.stderr
        assert out.returncode == (1 if command == "verify" and where == "cassette" else 0), (command, out.stdout)
    if where == "cassette":
        assert planted.is_symlink() or planted.is_fifo()  # left as it was: not ours to change


def test_a_damaged_cassette_is_moved_aside_without_overwriting_what_is_there(tmp_path: Path) -> None:
    """Quarantine names a file that is free: an earlier ``.corrupt``, or a user's file of
    that name, is kept."""
    from datetime import datetime, timezone

    from llm_cache.cassette import Body, Entry
    from llm_cache.errors import CassetteError
    from llm_cache.stores.files import FileStore

    store = FileStore(tmp_path)
    entry = Entry(key="ab" * 32, recorded_at=datetime.now(timezone.utc), model="gpt-4o", model_version="gpt-4o",
                  method="POST", path="/v1/chat/completions", query=[], request_headers={},
                  request_body=Body("json", {"model": "gpt-4o"}), status=200,
                  response_headers={"content-type": "application/json"}, response_body=Body("json", {"ok": 1}))
    path = Path(store.put(entry))
    notes = path.with_name(path.name + ".corrupt")
    notes.write_text("MY NOTES: do not delete\n")
    moved = []
    for damage in ("garbage: [\n", "more garbage: [\n"):
        path.write_text(damage)
        with pytest.raises(CassetteError):
            store.get(entry.key, "gpt-4o")
        moved.append(store.quarantine(entry.key, "gpt-4o"))
    assert notes.read_text() == "MY NOTES: do not delete\n"
    assert moved == [f"{notes}.2", f"{notes}.3"]
    assert [Path(m).read_text() for m in moved] == ["garbage: [\n", "more garbage: [\n"]
