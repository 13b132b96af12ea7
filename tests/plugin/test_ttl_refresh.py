"""TTL: expired cassettes are served (stale) in replay, re-recorded in refresh, fresh ones kept."""

from __future__ import annotations

import re
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


def _age(path: Path, when: str = "2020-01-01T00:00:00Z") -> None:
    text = path.read_text()
    path.write_text(re.sub(r"recorded_at: .*", f"recorded_at: '{when}'", text, count=1))


def _file_for(project: Project, text: str) -> Path:
    [path] = [p for p in project.files() if text in p.read_text()]
    return path


def test_refresh_rerecords_only_expired_cassettes(project: Project) -> None:
    project.pytester.makepyfile(test_ttl=TESTS)
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    old, new = _file_for(project, "old question"), _file_for(project, "new question")
    _age(old)
    new_before = new.read_text()
    project.server.generation = 2  # the API now answers differently

    result = project.run("--llm-cache=refresh")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["hits: 1   misses: 0   recorded: 0   refreshed: 1   stale: 0*"])
    assert project.server.count() == 3  # 2 recorded + 1 refreshed
    assert project.result("old") == "echo: old question (gen 2)"
    assert project.result("new") == "echo: new question"
    assert "2020-01-01" not in old.read_text()
    assert "(gen 2)" in old.read_text()
    assert new.read_text() == new_before  # fresh cassette untouched


def test_replay_serves_expired_cassettes_and_counts_them_stale(project: Project) -> None:
    project.pytester.makepyfile(test_ttl=TESTS)
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    _age(_file_for(project, "old question"))
    result = project.run()
    result.assert_outcomes(passed=2)
    assert project.server.count() == 2
    result.stdout.fnmatch_lines(
        [
            "hits: 2   misses: 0   recorded: 0   refreshed: 0   stale: 1*",
            "1 cassette past the TTL served; re-record with --llm-cache=refresh",
        ]
    )


def test_ttl_option_and_marker(project: Project) -> None:
    project.pytester.makepyfile(
        test_ttl="""
import pytest
from conftest import chat
def test_default(client, llm_cache):
    chat(client, "a")
@pytest.mark.llm_cache(ttl="2h")
def test_short(client, llm_cache):
    chat(client, "b")
"""
    )
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    one_day_ago = __import__("datetime").datetime.now(__import__("datetime").timezone.utc) - __import__(
        "datetime"
    ).timedelta(days=1)
    stamp = one_day_ago.strftime("%Y-%m-%dT%H:%M:%SZ")
    for path in project.files():
        _age(path, stamp)
    # default ttl 30d: only the marked test (2h) is expired
    project.run("--llm-cache=refresh").stdout.fnmatch_lines(["*refreshed: 1*"])
    for path in project.files():
        _age(path, stamp)
    # the marker beats the command line's ttl
    project.run("--llm-cache=refresh", "--llm-cache-ttl=12h").stdout.fnmatch_lines(["*hits: 0*refreshed: 2*"])
    for path in project.files():
        _age(path, "2001-01-01T00:00:00Z")
    # never: nothing expires, except by the marker
    project.run("--llm-cache=refresh", "--llm-cache-ttl=never").stdout.fnmatch_lines(["*hits: 1*refreshed: 1*"])
