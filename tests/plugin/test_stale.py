"""llm_cache_stale: in replay an expired cassette is served (serve), served and listed with
its age and test (warn), or fails its test with StaleCassette (fail)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import Project

pytestmark = pytest.mark.all_xdist_modes

TESTS = """
from conftest import chat
def test_old(client, llm_cache, save):
    save("old", chat(client, "old question").choices[0].message.content)
def test_new(client, llm_cache, save):
    save("new", chat(client, "new question").choices[0].message.content)
"""


def _aged(project: Project, days: float | None = None) -> Path:
    """The cassette of test_old, recorded in 2020 (or ``days`` ago)."""
    project.pytester.makepyfile(test_st=TESTS)
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    [old] = [p for p in project.files() if "old question" in p.read_text()]
    when = "2020-01-01T00:00:00Z"
    if days is not None:
        when = (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old.write_text(re.sub(r"recorded_at: .*", f"recorded_at: '{when}'", old.read_text(), count=1))
    return old


def test_serve_is_the_default_and_lists_nothing(project: Project) -> None:
    _aged(project)
    result = project.run()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["1 cassette past the TTL served; re-record with --llm-cache=refresh"])
    assert "stale (1)" not in result.stdout.str()


def test_the_re_record_hint_carries_the_ttl_and_does_what_it_says(project: Project) -> None:
    _aged(project, days=3)  # fresh under the default 30d, stale under 1d
    result = project.run("--llm-cache-ttl=1d", "--llm-cache-stale=warn")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["re-record them with --llm-cache=refresh --llm-cache-ttl=1d"])
    served = project.run("--llm-cache-ttl=1d")
    served.stdout.fnmatch_lines(["1 cassette past the TTL served; re-record with --llm-cache=refresh --llm-cache-ttl=1d"])
    calls = project.server.count()
    again = project.run("--llm-cache=refresh", "--llm-cache-ttl=1d")  # as the hint says
    again.assert_outcomes(passed=2)
    again.stdout.fnmatch_lines(["hits: 1   misses: 0   recorded: 0   refreshed: 1*"])
    assert project.server.count() == calls + 1


def test_warn_lists_each_stale_cassette_with_its_age_and_test(project: Project) -> None:
    old = _aged(project)
    report = project.pytester.path / "report.json"
    result = project.run("--llm-cache-stale=warn", f"--llm-cache-report={report}")
    result.assert_outcomes(passed=2)
    assert project.result("old") == "echo: old question"  # served
    result.stdout.fnmatch_lines([
        "stale (1): cassettes past the TTL of 30d, served (llm_cache_stale = warn)",
        f"  {old.relative_to(project.pytester.path)}  *d old  test_st.py::test_old",
        "re-record them with --llm-cache=refresh",
    ])
    [stale] = json.loads(report.read_text())["stale_cassettes"]
    assert stale["path"] == str(old) and stale["test_id"] == "test_st.py::test_old"
    assert stale["age_seconds"] > 365 * 86400 and stale["ttl_seconds"] == 30 * 86400 and not stale["failed"]


def test_fail_fails_the_test_naming_cassette_age_ttl_and_command(project: Project) -> None:
    old = _aged(project)
    result = project.run("--llm-cache-stale=fail")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert f"stale cassette {old}: recorded " in out
    assert "past the TTL of 30d" in out
    assert "fix:  re-record it with: pytest --llm-cache=refresh --llm-cache-ttl=30d test_st.py::test_old" in out
    result.stdout.fnmatch_lines(["stale (1): cassettes past the TTL of 30d, 1 failed*", "FAILED test_st.py::test_old*"])
    # counted stale, not a hit: the other test's cassette is the one hit, one request of two
    result.stdout.fnmatch_lines(["hits: 1   misses: 0   recorded: 0   refreshed: 0   stale: 1   hit rate: 50%"])
    summary = out.split("unused:")[-1].split("short test summary info")[0]
    assert old.name not in summary  # the cassette refused is its test's own, not unused
    assert project.server.count() == 2  # nothing reached the API


def test_the_suggested_command_refreshes_a_cassette_stale_under_a_ttl_given_on_the_command_line(project: Project) -> None:
    # `--llm-cache-ttl=1h` made it stale; the refresh without it (TTL 30d) would serve it again
    old = _aged(project, days=1)
    result = project.run("--llm-cache-stale=fail", "--llm-cache-ttl=1h")
    result.assert_outcomes(passed=1, failed=1)
    suggested = re.search(r"fix:  re-record it with: pytest (.+)", result.stdout.str())
    assert suggested is not None
    before = old.read_bytes()
    rerun = project.run(*suggested.group(1).split())
    rerun.assert_outcomes(passed=1)
    rerun.stdout.fnmatch_lines(["*refreshed: 1*"])
    assert old.read_bytes() != before


def test_a_marker_ttl_is_the_one_the_summary_and_the_error_name(project: Project) -> None:
    old = _aged(project, days=1)  # fresh under the default 30d, stale under the marker's 1h
    (project.pytester.path / "test_st.py").write_text(
        TESTS.replace("def test_old", "import pytest\n@pytest.mark.llm_cache(ttl='1h')\ndef test_old"))
    warned = project.run("--llm-cache-stale=warn")
    warned.assert_outcomes(passed=2)
    warned.stdout.fnmatch_lines([
        "stale (1): cassettes past their TTL, served (llm_cache_stale = warn)",
        f"  {old.relative_to(project.pytester.path)}  1d old (TTL 1h)  test_st.py::test_old",
    ])
    assert "past the TTL of 30d" not in warned.stdout.str()
    failed = project.run("--llm-cache-stale=fail")
    failed.assert_outcomes(passed=1, failed=1)
    out = failed.stdout.str()
    assert "past the TTL of 1h (the test's own, from its marker)" in out
    assert "a longer ttl in the test's @pytest.mark.llm_cache(ttl=...)" in out
    assert "a longer --llm-cache-ttl" not in out  # the command line does not change a marker's TTL
    suggested = re.search(r"fix:  re-record it with: pytest (.+)", out)
    assert suggested is not None and "--llm-cache-ttl" not in suggested.group(1)
    project.run(*suggested.group(1).split()).stdout.fnmatch_lines(["*refreshed: 1*"])


def test_fail_from_the_ini_and_refresh_mends_it(project: Project) -> None:
    _aged(project)
    project.pytester.makeini("[pytest]\nllm_cache_stale = fail\n")
    project.run().assert_outcomes(passed=1, failed=1)
    project.run("--llm-cache=refresh").assert_outcomes(passed=2)  # refresh re-records, never refuses
    project.run().assert_outcomes(passed=2)


def test_stale_cassette_is_importable_and_pickles() -> None:
    import pickle

    from llm_cache import StaleCassette

    error = StaleCassette(path="c/x.yaml", age_seconds=40 * 86400, ttl_seconds=30 * 86400, test_id="t.py::test_x")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error)
    assert "recorded 40d ago, past the TTL of 30d" in str(error)


def test_a_bad_value_is_a_usage_error(project: Project) -> None:
    project.pytester.makepyfile(test_st=TESTS)
    result = project.run("--llm-cache-stale=loud")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llm-cache-stale must be one of serve|warn|fail, got 'loud'*"])
