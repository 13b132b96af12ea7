"""Unused cassettes: after a run of the whole collection, the cassettes no request used are
listed (summary and JSON), fail the run under --llm-cache-unused=fail, and a partial run
says it cannot tell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Project

pytestmark = pytest.mark.all_xdist_modes

THREE = """
from conftest import chat
def test_a(client, llm_cache):
    chat(client, "question a")
def test_b(client, llm_cache):
    chat(client, "question b")
def test_c(client, llm_cache):
    chat(client, "question c")
"""

# test_c is gone: its cassette belongs to no test any more
TWO = THREE.split("def test_c")[0]


def _cassette_of(project: Project, text: str) -> Path:
    [path] = [p for p in project.files() if text in p.read_text()]
    return path


def _shown(project: Project, path: Path) -> str:
    """A path as the summary shows it: relative to where the run started (pytester's dir)."""
    return str(path.relative_to(project.pytester.path))


def _recorded(project: Project) -> Path:
    project.pytester.makepyfile(test_u=THREE)
    project.run("--llm-cache=record").assert_outcomes(passed=3)
    orphan = _cassette_of(project, "question c")
    project.pytester.makepyfile(test_u=TWO)
    return orphan


def test_a_whole_run_lists_the_cassettes_no_test_used(project: Project) -> None:
    orphan = _recorded(project)
    report = project.pytester.path / "report.json"
    result = project.run(f"--llm-cache-report={report}")
    result.assert_outcomes(passed=2)
    assert result.ret == 0  # report (the default) never fails a run
    result.stdout.fnmatch_lines([
        "unused: 1 (llm-cache prune --unused-in report.json or --llm-cache-unused=fail)",
        f"  {_shown(project, orphan)}",
    ])
    data = json.loads(report.read_text())
    assert data["unused"] == [str(orphan)]
    [entry] = data["unused_entries"]
    assert entry["path"] == str(orphan) and entry["model_version"] == orphan.parent.name
    assert data["unused_why_not"] is None


def test_fail_exits_1_after_the_summary(project: Project) -> None:
    orphan = _recorded(project)
    result = project.run("--llm-cache-unused=fail")
    result.assert_outcomes(passed=2)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*llm-cache*", "unused: 1 (failing the run, --llm-cache-unused=fail; remove them with llm-cache prune --unused-in *)", f"  {_shown(project, orphan)}"])


def test_fail_passes_when_every_cassette_is_used(project: Project) -> None:
    project.pytester.makepyfile(test_u=THREE)
    project.run("--llm-cache=record").assert_outcomes(passed=3)
    result = project.run("--llm-cache-unused=fail")
    result.assert_outcomes(passed=3)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["unused: none (every cassette was used)"])


def test_a_test_whose_setup_errors_is_said_so(project: Project) -> None:
    _recorded(project)
    project.pytester.makepyfile(test_u="import pytest\n" + TWO.replace(
        "def test_a(client, llm_cache):", "@pytest.mark.llm_cache(nonsense=1)\ndef test_a(client, llm_cache):"))
    result = project.run("--llm-cache-unused=fail")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["unused: cannot tell, 1 test failed or errored: *"])


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("-k", "test_a"), "-k selected part of the tests"),
        (("--deselect", "test_u.py::test_b"), "--deselect selected part of the tests"),
        (("test_u.py::test_a",), "only test_u.py::test_a ran"),
        (("-x",), "the run stopped early"),
        (("--fail-a",), "1 test failed or errored: what a test that stopped early did not reach would look unused"),
    ],
)
def test_a_partial_run_cannot_tell_and_does_not_fail(project: Project, args: tuple[str, ...], why: str) -> None:
    _recorded(project)
    failing = "-x" in args or "--fail-a" in args
    if failing:  # test_a fails before its request: its cassette would look unused
        project.pytester.makepyfile(test_u=TWO.replace('chat(client, "question a")', "assert False"))
        args = tuple(a for a in args if a != "--fail-a")
    report = project.pytester.path / "report.json"
    result = project.run("--llm-cache-unused=fail", f"--llm-cache-report={report}", *args)
    # the failed test (pytest-xdist reports -x as an interruption), never the unused check
    assert result.ret in ((1, 2) if failing else (0, 5))
    result.stdout.fnmatch_lines([f"unused: cannot tell, {why}"])
    data = json.loads(report.read_text())
    assert data["unused"] is None and data["unused_entries"] == [] and data["unused_why_not"] == why


def test_a_skipped_test_that_uses_the_cache_makes_it_partial(project: Project) -> None:
    _recorded(project)
    project.pytester.makepyfile(test_u="import pytest\n" + TWO.replace("def test_b", "@pytest.mark.skip\ndef test_b"))
    result = project.run("--llm-cache-unused=fail")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["unused: cannot tell, 1 test using the cache skipped or xfailed"])


@pytest.mark.parametrize("flag", ["--collect-only", "--setup-plan"])
def test_a_run_of_no_test_lists_nothing_unused(project: Project, flag: str) -> None:
    _recorded(project)
    report = project.pytester.path / "report.json"
    result = project.run("--llm-cache-unused=fail", f"--llm-cache-report={report}", flag)
    assert result.ret == 0
    assert "unused: " not in result.stdout.str().replace("unused: cannot tell", "")
    assert not report.exists() or json.loads(report.read_text())["unused"] is None


def test_an_xfailed_test_that_uses_the_cache_makes_it_partial(project: Project) -> None:
    _recorded(project)
    project.pytester.makepyfile(test_u="import pytest\n" + TWO.replace(
        "def test_b(client, llm_cache):\n", "@pytest.mark.xfail\ndef test_b(client, llm_cache):\n    assert False\n"))
    result = project.run("--llm-cache-unused=fail")
    result.assert_outcomes(passed=1, xfailed=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["unused: cannot tell, 1 test using the cache skipped or xfailed"])


def test_a_skipped_test_without_the_cache_does_not(project: Project) -> None:
    orphan = _recorded(project)
    project.pytester.makepyfile(test_u="import pytest\n" + TWO + "\n@pytest.mark.skip\ndef test_other():\n    pass\n")
    result = project.run("--llm-cache-unused=fail")
    result.assert_outcomes(passed=2, skipped=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines([f"  {_shown(project, orphan)}"])


def test_a_run_whose_tests_never_use_the_cache_lists_every_cassette(project: Project) -> None:
    _recorded(project)
    project.pytester.makepyfile(test_u="def test_plain():\n    pass\n")
    result = project.run("--llm-cache-unused=fail")
    result.assert_outcomes(passed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["unused: 3 (*"])


def test_off_looks_for_nothing(project: Project) -> None:
    _recorded(project)
    report = project.pytester.path / "report.json"
    result = project.run("--llm-cache-unused=off", f"--llm-cache-report={report}")
    result.assert_outcomes(passed=2)
    assert "unused" not in result.stdout.str()
    assert json.loads(report.read_text())["unused"] is None


def test_a_bad_value_is_a_usage_error(project: Project) -> None:
    project.pytester.makepyfile(test_u=TWO)
    result = project.run("--llm-cache-unused=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llm-cache-unused must be one of report|fail|off, got 'sometimes'*"])


def test_the_ini_sets_it(project: Project) -> None:
    _recorded(project)
    project.pytester.makeini("[pytest]\nllm_cache_unused = fail\n")
    result = project.run()
    assert result.ret == 1
    result.stdout.fnmatch_lines(["unused: 1 (*"])


def test_prune_unused_in_removes_exactly_what_the_report_listed(project: Project) -> None:
    orphan = _recorded(project)
    report = project.pytester.path / "report.json"
    project.run(f"--llm-cache-report={report}").assert_outcomes(passed=2)
    kept = [p for p in project.files() if p != orphan]
    done = subprocess.run(
        [sys.executable, "-m", "llm_cache.cli", "prune", "--unused-in", str(report), "--dir", str(project.cassettes)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not orphan.exists()
    assert project.files() == kept
    project.run("--llm-cache-unused=fail").assert_outcomes(passed=2)


def test_the_rootdir_or_a_testpath_on_the_command_line_is_the_whole_collection(project: Project) -> None:
    orphan = _recorded(project)
    sub = project.pytester.mkdir("suite")
    (project.pytester.path / "test_u.py").rename(sub / "test_u.py")
    project.pytester.makeini("[pytest]\ntestpaths = suite\n")
    for args in ((str(project.pytester.path),), ("suite",)):
        result = project.run("--llm-cache-unused=fail", *args)
        result.assert_outcomes(passed=2)
        assert result.ret == 1, args
        result.stdout.fnmatch_lines([f"  {_shown(project, orphan)}"])
    result = project.run("--llm-cache-unused=fail", "suite/test_u.py")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["unused: cannot tell, only suite/test_u.py ran"])


def test_an_expired_cassette_whose_refresh_is_not_kept_is_still_used(project: Project) -> None:
    import re

    orphan = _recorded(project)
    [kept] = [p for p in project.files() if "question a" in p.read_text()]
    kept.write_text(re.sub(r"recorded_at: .*", "recorded_at: '2020-01-01T00:00:00Z'", kept.read_text(), count=1))
    # the refresh is answered with an error, which test_a takes in its stride: nothing stored
    project.pytester.makepyfile(test_u=TWO.replace(
        '    chat(client, "question a")', '    try:\n        chat(client, "question a")\n    except Exception:\n        pass'))
    project.server.fail_status = 500
    result = project.run("--llm-cache=refresh", "--llm-cache-unused=fail")
    project.server.fail_status = None
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["not stored: 1 (error status 1)*", "unused: 1 (*", f"  {_shown(project, orphan)}"])
    unused_list = result.stdout.str().split("\nunused: 1 (", 1)[1]
    assert _shown(project, kept) not in unused_list and _shown(project, orphan) in unused_list
    # the refusal is said, and that the expired cassette stays
    result.stdout.fnmatch_lines([f"*NotStoredWarning: not storing {kept}: the API answered HTTP 500; "
                                 "the cassette recorded before stays. To keep such answers: "
                                 "set llm_cache_record_errors = true"])
