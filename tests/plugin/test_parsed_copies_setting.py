"""llm_cache_parsed_copies: parsed copies of the cassettes read are written for the next
run (auto, on), except in CI by default (auto: a clone thrown away after its run would pay
to write them for nothing), or never (off). Copies already there are read either way.
The first two tests run under no xdist, -n 0 and -n 2; the rest only choose the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Project

TESTS = """
from conftest import chat
def test_one(client, llm_cache, save):
    save("one", chat(client, "first question").choices[0].message.content)
def test_two(client, llm_cache, save):
    save("two", chat(client, "second question").choices[0].message.content)
"""


def _copies(project: Project) -> list[Path]:
    parsed = project.cassettes / ".llm-cache" / "parsed"
    return sorted(p for p in parsed.rglob("*") if p.is_file()) if parsed.exists() else []


def _recorded(project: Project) -> None:
    project.pytester.makepyfile(test_pc=TESTS)
    project.run("--llm-cache=record").assert_outcomes(passed=2)


@pytest.mark.all_xdist_modes
def test_written_by_default_outside_ci(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    _recorded(project)
    assert len(_copies(project)) == 2
    project.run().assert_outcomes(passed=2)
    assert len(_copies(project)) == 2


@pytest.mark.all_xdist_modes
@pytest.mark.parametrize("value", ["true"])  # the other spellings: tests/unit/test_settings.py
def test_not_written_in_ci_by_default_and_replay_still_passes(
    project: Project, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CI", value)
    _recorded(project)
    assert _copies(project) == []
    calls = project.server.count()
    project.run().assert_outcomes(passed=2)
    assert _copies(project) == []
    assert project.server.count() == calls  # replayed from the YAML, nothing reached the API
    assert project.result("two") == "echo: second question"


def test_ci_false_is_not_ci(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    _recorded(project)
    assert len(_copies(project)) == 2


def test_on_writes_them_in_ci_and_off_never(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    project.pytester.makeini("[pytest]\nllm_cache_parsed_copies = on\n")
    _recorded(project)
    assert len(_copies(project)) == 2
    monkeypatch.delenv("CI")
    project.pytester.makeini("[pytest]\nllm_cache_parsed_copies = off\n")
    for copy in _copies(project):
        copy.unlink()
    project.run().assert_outcomes(passed=2)
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
