"""Secrets never reach a report, a message or the CLI's output from what no recording
redacted: a test id, an old cassette's answer, a hand-edited cassette."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import Project

SECRET = "Zq8vXk3mPw7rTn2sLb9yHd4f"  # an environment secret of no known shape
SHAPED = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz012345"  # a key by its shape alone


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("llm-cache")
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=60, check=False)


def _shown(project: Project, result: pytest.RunResult, *reports: str) -> str:
    """The cache's summary section of the terminal (pytest's own lines show a test id as
    they do), stderr and the reports."""
    out = result.stdout.str()
    section = out[out.index("- llm-cache -"):]
    section = section[:section.index("short test summary")] if "short test summary" in section else section
    return "\n".join([section, result.stderr.str(), *((project.pytester.path / r).read_text() for r in reports)])


def test_a_secret_in_a_test_id_is_redacted_in_reports_and_messages(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    project.pytester.makepyfile(test_ids=f"""
import os, pytest
from conftest import chat
@pytest.mark.parametrize("api_key", [os.environ["OPENAI_API_KEY"], "{SHAPED}"])
def test_with_key(client, llm_cache, api_key):
    chat(client, "a question")
    print(repr(llm_cache))
""")
    reports = ("--llm-cache-report=out/r.json", "--llm-cache-html=out/r.html")
    recorded = project.run("--llm-cache=record", "-s", *reports)
    recorded.assert_outcomes(passed=2)
    written = _shown(project, recorded, "out/r.json", "out/r.html")
    assert "test_with_key[" in written and "<redacted>" in written
    assert recorded.stdout.str().count("<llm_cache record test_ids.py::test_with_key[<redacted>]") == 2
    assert SECRET not in written and SHAPED not in written
    # a miss in replay: the summary's misses and the error name the test, redacted
    (project.pytester.path / "test_ids.py").write_text(
        (project.pytester.path / "test_ids.py").read_text().replace("a question", "another question"))
    missed = project.run("--llm-cache=replay", *reports)
    missed.assert_outcomes(failed=2)
    shown = _shown(project, missed, "out/r.json", "out/r.html")
    assert "misses (2)" in shown
    assert SECRET not in shown and SHAPED not in shown


def test_an_old_cassettes_secret_is_redacted_in_the_drift(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.pytester.makepyfile(test_d="from conftest import chat\ndef test_it(client, llm_cache):\n"
                                       "    chat(client, 'drift')\n")
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    [path] = project.files()
    doc = yaml.safe_load(path.read_text())
    doc["response"]["json"]["choices"][0]["message"]["content"] = f"old answer {SECRET} and {SHAPED}"
    doc["recorded_at"] = "2020-01-01T00:00:00Z"  # older than the TTL: refreshed
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    result = project.run("--llm-cache=refresh", "--llm-cache-report=out/d.json",
                         "--llm-cache-html=out/d.html")
    result.assert_outcomes(passed=1)
    shown = _shown(project, result, "out/d.json", "out/d.html")
    assert "drift (1)" in shown and "old answer <redacted> and <redacted>" in shown
    assert SECRET not in shown and SHAPED not in shown


def test_the_cli_and_cassette_errors_redact_a_hand_edited_secret(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.pytester.makepyfile(test_c="from conftest import chat\ndef test_it(client, llm_cache):\n"
                                       "    chat(client, 'one')\n    chat(client, 'two')\n")
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    first, second = project.files()
    doc = yaml.safe_load(first.read_text())
    doc["request"]["json"]["messages"][0]["content"] = f"my key is {SECRET} and\n{SHAPED}"
    first.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    where = str(project.cassettes)
    outputs = [
        _cli("ls", "--dir", where), _cli("ls", "--dir", where, "--json"),
        _cli("show", "--dir", where, doc["key"][:12]), _cli("show", "--dir", where, doc["key"][:12], "--json"),
        _cli("diff", str(first), str(second)), _cli("diff", str(first), str(second), "--json"),
    ]
    for out in outputs:
        assert out.returncode in (0, 1), out.stderr
        assert "<redacted>" in out.stdout, out.stdout
        assert SECRET not in out.stdout + out.stderr and SHAPED not in out.stdout + out.stderr
    # a key pasted into a field whose value the error quotes: the error, verify and ls redact it
    doc["recorded_at"] = SECRET
    first.write_text(yaml.safe_dump(doc, sort_keys=False))
    verify = _cli("verify", "--dir", where)
    listing = _cli("ls", "--dir", where)
    replay = project.run("--llm-cache=replay")
    replay.assert_outcomes(failed=1)
    for shown in (verify.stdout + verify.stderr, listing.stdout + listing.stderr, replay.stdout.str()):
        assert "recorded_at" in shown and "<redacted>" in shown, shown
        assert SECRET not in shown
