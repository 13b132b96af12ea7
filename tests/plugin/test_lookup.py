"""Lookup by key: a hit reads its own cassette only; error statuses are not recorded unless asked."""

from __future__ import annotations

import pytest

from conftest import Project

TEST = """
from conftest import chat
def test_it(client, llm_cache, save):
    save("answer", chat(client, "needle").choices[0].message.content)
"""


def test_a_hit_never_reads_the_other_cassettes(project: Project) -> None:
    project.pytester.makepyfile(test_l=TEST)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    [path] = project.files()
    # 3,000 unreadable neighbours: a scan over stored interactions would trip on them or crawl
    for i in range(3000):
        (path.parent / f"{i:016x}.yaml").write_text("{broken: [")
    project.clear_results()
    project.run().assert_outcomes(passed=1)
    assert project.result("answer") == "echo: needle"


ERROR_TEST = """
import openai, pytest
from conftest import chat
def test_it(client, llm_cache, save):
    with pytest.raises(openai.InternalServerError):
        chat(client, "boom", model="error-500")
    save("stats", [llm_cache.stats.recorded, llm_cache.stats.hits])
"""


def test_error_responses_are_not_recorded_by_default(project: Project) -> None:
    project.pytester.makepyfile(test_err=ERROR_TEST)
    result = project.run("--llm-cache=record")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["not stored: 1 (error status 1)"])
    assert project.files() == []
    assert project.result("stats") == [0, 0]


def test_record_errors_ini_records_and_replays_them(project: Project) -> None:
    project.pytester.makepyfile(test_err=ERROR_TEST)
    project.pytester.makeini("[pytest]\nllm_cache_record_errors = true\n")
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    assert len(project.files()) == 1
    assert project.result("stats") == [1, 0]
    project.run().assert_outcomes(passed=1)
    assert project.result("stats") == [0, 1]
    assert project.server.count() == 1
