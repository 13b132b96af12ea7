"""``llm-cache upgrade``, run through its console script: format 1 rewritten as format 2 in place."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llm_cache.cassette import load_entry

SCRIPT = shutil.which("llm-cache", path=os.path.dirname(sys.executable)) or "llm-cache"
FORMAT1 = Path(__file__).parent.parent / "data" / "format1"
NAMES = sorted(str(p.relative_to(FORMAT1)) for p in FORMAT1.rglob("*.yaml"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], check=False, capture_output=True, text=True, timeout=60)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the committed format-1 cassettes."""
    return Path(shutil.copytree(FORMAT1, tmp_path / "cassettes"))


def snapshot(top: Path) -> dict[str, bytes]:
    """Every file under ``top`` (hidden ones too) and its bytes."""
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file()}


def test_upgrade_rewrites_format_1_in_place_with_the_same_keys(root: Path) -> None:
    before = {name: load_entry((root / name).read_bytes(), name) for name in NAMES}
    (root / NAMES[0]).chmod(0o644)
    noted = run("verify", "--dir", str(root))
    assert noted.returncode == 0, noted.stdout
    assert sum(": note: format 1: run llm-cache upgrade" in line for line in noted.stdout.splitlines()) == 3
    assert noted.stdout.splitlines()[-1] == "3 cassettes checked, all sound"

    out = run("upgrade", "--dir", str(root))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "upgraded 3 cassettes to format 2 (0 already current, 0 unreadable)"
    assert sorted(lines[:-1]) == sorted(f"upgraded {root / name}" for name in NAMES)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml")) == NAMES
    for name in NAMES:
        text = (root / name).read_text()
        assert text.startswith("llm_cache: 2\n")
        assert load_entry(text, name, expected_key=before[name].key) == before[name]
    assert (root / NAMES[0]).stat().st_mode & 0o777 == 0o644

    verified = run("verify", "--dir", str(root))
    assert verified.returncode == 0, verified.stdout
    assert verified.stdout.splitlines() == ["3 cassettes checked, all sound"]


def test_a_second_run_upgrades_nothing_and_writes_nothing(root: Path) -> None:
    assert run("upgrade", "--dir", str(root)).returncode == 0
    files = snapshot(root)
    stamps = {name: (root / name).stat().st_mtime_ns for name in NAMES}
    again = run("upgrade", "--dir", str(root))
    assert again.returncode == 0
    assert again.stdout.splitlines() == ["upgraded 0 cassettes to format 2 (3 already current, 0 unreadable)"]
    assert snapshot(root) == files
    assert {name: (root / name).stat().st_mtime_ns for name in NAMES} == stamps


def test_unreadable_files_are_reported_left_alone_and_exit_1(root: Path) -> None:
    corrupt = root / "gpt-4o" / "0000000000000000.yaml"
    corrupt.write_text("llm_cache: 1\nkey: [unclosed\n")
    other = root / "gpt-4o" / "settings.yaml"
    other.write_text("retries: 3\nmodels: [gpt-4o]\n")
    newer = root / "gpt-4o" / "1111111111111111.yaml"
    newer.write_text((root / NAMES[-1]).read_text().replace("llm_cache: 1\n", "llm_cache: 3\n"))
    untouched = {p: p.read_bytes() for p in (corrupt, other, newer)}

    out = run("upgrade", "--dir", str(root))
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert any(line.startswith(f"{corrupt}: not valid YAML") for line in lines), lines
    assert f"{other}: not a cassette; left alone" in lines  # as verify says it: never a failure
    assert any(line.startswith(f"{newer}: unknown format version 3") and "upgrade pytest-llm-cache" in line
               for line in lines), lines
    assert lines[-1] == "upgraded 3 cassettes to format 2 (0 already current, 2 unreadable)"
    assert {p: p.read_bytes() for p in untouched} == untouched
    assert all((root / name).read_text().startswith("llm_cache: 2\n") for name in NAMES)


def test_files_that_are_no_cassettes_are_left_alone_and_do_not_fail_the_run(root: Path) -> None:
    vcr = root / "test_app" / "test_x.yaml"  # a vcrpy cassette beside ours
    vcr.parent.mkdir()
    vcr.write_text("interactions:\n- request: {method: GET, uri: 'http://x'}\nversion: 1\n")
    handmade = root / "gpt-4o" / "handmade.yaml"
    handmade.write_text("retries: 3\n")
    untouched = {p: p.read_bytes() for p in (vcr, handmade)}
    for args in (["--dry-run"], []):
        out = run("upgrade", "--dir", str(root), *args)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"{vcr}: not a cassette; left alone" in out.stdout.splitlines()
        assert f"{handmade}: not a cassette; left alone" in out.stdout.splitlines()
    assert {p: p.read_bytes() for p in untouched} == untouched
    assert all((root / name).read_text().startswith("llm_cache: 2\n") for name in NAMES)


def test_files_outside_model_version_directories_are_never_touched(root: Path, tmp_path: Path) -> None:
    (root / "config.yaml").write_text("llm_cache: 1\nmodels: [gpt-4o]\n")
    (root / ".llm-cache").mkdir()
    shutil.copy(root / NAMES[0], root / ".llm-cache" / "copy.yaml")
    shutil.copy(root / NAMES[0], root / "gpt-4o" / ".hidden.yaml")
    shutil.copy(root / NAMES[0], root / "gpt-4o" / "notes.txt")
    outside = Path(shutil.copytree(FORMAT1 / "gpt-4o", tmp_path / "elsewhere"))
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    (root / "gpt-4o" / "2222222222222222.yaml").symlink_to(outside / Path(NAMES[-1]).name)
    kept = {p: p.read_bytes() for p in [root / "config.yaml", *(root / ".llm-cache").iterdir(),
                                        root / "gpt-4o" / ".hidden.yaml", root / "gpt-4o" / "notes.txt"]}
    elsewhere = snapshot(outside)

    out = run("upgrade", "--dir", str(root))
    assert out.returncode == 0, out.stdout
    assert out.stdout.splitlines()[-1] == "upgraded 3 cassettes to format 2 (0 already current, 0 unreadable)"
    assert {p: p.read_bytes() for p in kept} == kept
    assert snapshot(outside) == elsewhere
    assert (root / "gpt-4o" / "2222222222222222.yaml").is_symlink()


def test_dry_run_says_what_it_would_do_and_writes_nothing(root: Path) -> None:
    files = snapshot(root)
    out = run("upgrade", "--dir", str(root), "--dry-run")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert sorted(lines[:-1]) == sorted(f"would upgrade {root / name}" for name in NAMES)
    assert lines[-1] == "would upgrade 3 cassettes to format 2 (0 already current, 0 unreadable)"
    assert snapshot(root) == files
    assert sorted(p.name for p in root.iterdir()) == sorted({Path(n).parts[0] for n in NAMES})


def test_json_output(root: Path) -> None:
    (root / "gpt-4o" / "0000000000000000.yaml").write_text("{broken")
    out = run("upgrade", "--dir", str(root), "--json", "--dry-run")
    assert out.returncode == 1
    data = json.loads(out.stdout)
    assert data["dry_run"] is True and data["format"] == 2 and data["current"] == 0
    assert sorted(data["upgraded"]) == sorted(str(root / name) for name in NAMES)
    assert [u["path"] for u in data["unreadable"]] == [str(root / "gpt-4o" / "0000000000000000.yaml")]
    assert "not valid YAML" in data["unreadable"][0]["reason"]
    assert run("upgrade", "--dir", str(root), "--json").returncode == 1
    after = json.loads(run("upgrade", "--dir", str(root), "--json").stdout)
    assert after["upgraded"] == [] and after["current"] == 3


def test_an_upgraded_file_is_the_same_yaml_but_for_the_version(root: Path) -> None:
    before = {name: yaml.safe_load((root / name).read_text()) for name in NAMES}
    run("upgrade", "--dir", str(root))
    for name in NAMES:
        after = yaml.safe_load((root / name).read_text())
        assert after.pop("llm_cache") == 2 and before[name].pop("llm_cache") == 1
        assert after == before[name]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["extra"], "unrecognized arguments: extra"),
        (["--dir"], "argument --dir: expected one argument"),
    ],
)
def test_bad_usage_exits_2_with_the_usage(root: Path, args: list[str], message: str) -> None:
    files = snapshot(root)
    out = run("upgrade", *args) if args == ["--dir"] else run("upgrade", "--dir", str(root), *args)
    assert out.returncode == 2
    assert out.stderr.startswith("usage: llm-cache") and message in out.stderr
    assert snapshot(root) == files


@pytest.mark.parametrize("store", ["memory://", "redis://127.0.0.1:1/0"])
def test_a_store_upgrade_cannot_rewrite_says_what_it_can(store: str) -> None:
    out = run("upgrade", "--store", store)
    assert out.returncode == 2
    assert "file://PATH" in out.stderr and "redis://host" not in out.stderr  # no form it would refuse


def test_a_missing_directory_exits_1(tmp_path: Path) -> None:
    out = run("upgrade", "--dir", str(tmp_path / "nope"))
    assert out.returncode == 1 and "no cassette directory at" in out.stderr


def test_help_lists_upgrade() -> None:
    out = run("--help")
    assert out.returncode == 0 and "upgrade" in out.stdout
