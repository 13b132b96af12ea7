"""llm_cache_parsed_copies: parsed copies of the cassettes read are written for the next
run, which reads them instead of parsing the YAML: by default (auto) of every cassette, and
none in CI (a clone thrown away after its run would pay to write them for nothing); of
every cassette in CI too (on); or never (off). Copies already there are read either way.
The first two tests run under no xdist, -n 0 and -n 2; the rest only choose the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Project

# A long prompt: the answer echoes it, so its cassette holds it twice (over 16 KiB).
LONG = "a long question " * 700

TESTS = f"""
from conftest import chat
def test_one(client, llm_cache, save):
    save("one", chat(client, "first question").choices[0].message.content)
def test_two(client, llm_cache, save):
    save("two", chat(client, "second question").choices[0].message.content)
def test_long(client, llm_cache, save):
    save("long", chat(client, {LONG!r}).choices[0].message.content)
"""


def _copies(project: Project) -> list[Path]:
    parsed = project.cassettes / ".llm-cache" / "parsed"
    return sorted(p for p in parsed.rglob("*") if p.is_file()) if parsed.exists() else []


def _recorded(project: Project) -> None:
    project.pytester.makepyfile(test_pc=TESTS)
    project.run("--llm-cache=record").assert_outcomes(passed=3)


def _stems(paths: list[Path]) -> list[str]:
    return sorted(p.stem for p in paths)


@pytest.mark.all_xdist_modes
def test_written_by_default_outside_ci_for_every_cassette(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    _recorded(project)
    sizes = sorted(p.stat().st_size for p in project.files())
    assert sizes[-1] >= 16 * 1024 > sizes[1]  # small cassettes get theirs as a large one does
    assert _stems(_copies(project)) == _stems(project.files())
    for copy in _copies(project):
        copy.unlink()
    project.run().assert_outcomes(passed=3)  # replay writes them again
    assert _stems(_copies(project)) == _stems(project.files())
    assert project.result("long") == "echo: " + LONG


@pytest.mark.all_xdist_modes
@pytest.mark.parametrize("value", ["true"])  # the other spellings: tests/unit/test_settings.py
def test_not_written_in_ci_by_default_and_replay_still_passes(
    project: Project, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CI", value)
    _recorded(project)
    assert _copies(project) == []
    calls = project.server.count()
    project.run().assert_outcomes(passed=3)
    assert _copies(project) == []
    assert project.server.count() == calls  # replayed from the YAML, nothing reached the API
    assert project.result("two") == "echo: second question"


def test_ci_false_is_not_ci(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    _recorded(project)
    assert len(_copies(project)) == 3


def test_on_writes_them_in_ci_and_off_never(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    project.pytester.makeini("[pytest]\nllm_cache_parsed_copies = on\n")
    _recorded(project)
    assert len(_copies(project)) == 3  # the small cassettes' too
    monkeypatch.delenv("CI")
    project.pytester.makeini("[pytest]\nllm_cache_parsed_copies = off\n")
    for copy in _copies(project):
        copy.unlink()
    project.run().assert_outcomes(passed=3)
    assert _copies(project) == []


@pytest.mark.parametrize("name, value", [("BUILD_NUMBER", "12"), ("TF_BUILD", "True")])
def test_ci_services_that_do_not_set_ci_are_known(
    project: Project, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    _recorded(project)
    assert _copies(project) == []


def test_a_bad_value_is_a_usage_error(project: Project) -> None:
    project.pytester.makepyfile(test_pc=TESTS)
    project.pytester.makeini("[pytest]\nllm_cache_parsed_copies = sometimes\n")
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*llm_cache_parsed_copies must be one of auto|on|off, got 'sometimes'*"])
