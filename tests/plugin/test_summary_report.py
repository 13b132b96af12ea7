"""The terminal summary, the JSON report and the DEBUG log lines."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import Project

TESTS = """
from conftest import chat
def test_usage(client, llm_cache):
    chat(client, "count my tokens please")
def test_again(client, llm_cache):
    chat(client, "count my tokens please")
    chat(client, "another one")
"""


@pytest.mark.all_xdist_modes
def test_summary_section_after_record_and_replay(project: Project) -> None:
    project.pytester.makepyfile(test_sum=TESTS)
    project.run("--llm-cache=record").stdout.fnmatch_lines(
        [
            "*- llm-cache -*",
            f"mode: record   store: {project.cassettes.relative_to(project.pytester.path)} (2 entries, * KB)",
            "hits: 1   misses: 0   recorded: 2   refreshed: 0   stale: 0   hit rate: 33%",
            "tokens served from cassettes: * (gpt-4o *)",
        ],
        consecutive=True,
    )


def test_a_store_outside_the_starting_directory_is_shown_whole(
    project: Project, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("shared") / "cassettes"
    project.pytester.makepyfile(test_sum=TESTS)
    result = project.run("--llm-cache=record", f"--llm-cache-dir={elsewhere}")
    result.stdout.fnmatch_lines([f"mode: record   store: {elsewhere} (2 entries, * KB)"])


@pytest.mark.all_xdist_modes
def test_nothing_printed_when_no_test_used_the_cache(project: Project) -> None:
    project.pytester.makepyfile(test_none="def test_it():\n    pass\n")
    result = project.run("--llm-cache=record")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*- llm-cache -*")
    result.stdout.no_fnmatch_line("hits:*")


@pytest.mark.all_xdist_modes
def test_json_report(project: Project) -> None:
    project.pytester.makepyfile(test_sum=TESTS)
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    project.pytester.makepyfile(test_sum2="from conftest import chat\ndef test_miss(client, llm_cache):\n    chat(client, 'unknown')\n")
    report_path = project.pytester.path / "out" / "llm-cache.json"
    project.run(f"--llm-cache-report={report_path}").assert_outcomes(passed=2, failed=1)
    report = json.loads(report_path.read_text())
    assert {k: report[k] for k in ("mode", "hits", "misses", "recorded", "refreshed", "stale", "entries")} == {
        "mode": "replay", "hits": 3, "misses": 1, "recorded": 0, "refreshed": 0, "stale": 0, "entries": 2,
    }
    assert report["hit_rate"] == 0.75
    usage = {
        doc["request"]["json"]["messages"][0]["content"]: sum(doc["usage"].values())
        for doc in (yaml.safe_load(p.read_text()) for p in project.files())
    }
    assert report["tokens_saved"] == 2 * usage["count my tokens please"] + usage["another one"] > 0
    assert report["tokens_saved_by_model"] == {"gpt-4o": report["tokens_saved"]}
    assert report["bytes"] == sum(p.stat().st_size for p in project.files())
    [miss] = report["misses_detail"]
    assert miss["test_id"] == "test_sum2.py::test_miss"
    assert miss["model"] == "gpt-4o" and miss["endpoint"] == "/v1/chat/completions" and len(miss["key"]) == 64


@pytest.mark.all_xdist_modes
def test_report_path_from_ini(project: Project) -> None:
    project.pytester.makepyfile(test_sum=TESTS)
    project.pytester.makeini("[pytest]\nllm_cache_report = r.json\n")
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    assert json.loads((project.pytester.path / "r.json").read_text())["recorded"] == 2


def test_reports_are_written_whole_and_replace_a_symlink_rather_than_follow_it(project: Project) -> None:
    project.pytester.makepyfile(test_sum=TESTS)
    outside = project.pytester.path / "elsewhere.txt"
    outside.write_text("a file of the user's\n")
    out = project.pytester.path / "out"
    out.mkdir()
    names = ("r.json", "r.html", "m.prom")
    for name in names:
        (out / name).symlink_to(outside)
    project.run("--llm-cache=record", f"--llm-cache-report={out / 'r.json'}", f"--llm-cache-html={out / 'r.html'}",
                f"--llm-cache-metrics={out / 'm.prom'}").assert_outcomes(passed=2)
    assert outside.read_text() == "a file of the user's\n"
    for name in names:
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "r.json").read_text())["recorded"] == 2
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []  # no temporary file left


def test_each_lookup_logs_at_debug(project: Project) -> None:
    project.pytester.makepyfile(test_sum=TESTS)
    result = project.run("--llm-cache=record", "--log-level=DEBUG", "-rA", "--log-format=%(name)s %(message)s")
    result.stdout.fnmatch_lines(
        [
            "llm_cache record * model=gpt-4o endpoint=/v1/chat/completions test=test_sum.py::test_usage",
            "llm_cache serve * model=gpt-4o endpoint=/v1/chat/completions test=test_sum.py::test_again",
        ]
    )
