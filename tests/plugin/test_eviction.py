"""The size cap: eviction after a session that recorded, by policy, sparing what the session used."""

from __future__ import annotations

import json

import pytest

from conftest import Project


def _test_file(calls: dict[str, int]) -> str:
    lines = ["from conftest import chat"]
    for name, times in calls.items():
        lines.append(f"def test_{name}(client, llm_cache):")
        lines.extend(f"    chat(client, 'prompt {name}')" for _ in range(times))
    return "\n".join(lines) + "\n"


def _prompts(project: Project) -> set[str]:
    found = set()
    for path in project.files():
        text = path.read_text()
        found |= {name for name in "abcdefgh" if f"content: prompt {name}\n" in text}
    return found


@pytest.mark.parametrize(("policy", "evicted"), [("fifo", "a"), ("lru", "b"), ("lfu", "c")])
def test_each_policy_evicts_in_its_order(project: Project, policy: str, evicted: str) -> None:
    project.pytester.makepyfile(test_s1=_test_file({"a": 1, "b": 1, "c": 1}))
    project.run("--llm-cache=record", "test_s1.py").assert_outcomes(passed=3)  # recorded a, then b, then c
    # used in this order: b three times, then c once, then a twice
    project.pytester.makepyfile(test_s2=_test_file({"b": 3, "c": 1, "a": 2}))
    project.run("test_s2.py").assert_outcomes(passed=3)
    usage = json.loads((project.cassettes / ".llm-cache" / "usage.json").read_text())["keys"]
    assert sorted(hits for _, hits in usage.values()) == [1, 2, 3]

    project.pytester.makepyfile(test_s3=_test_file({"d": 1}))
    result = project.run("--llm-cache=record", "--llm-cache-max-entries=3", f"--llm-cache-eviction={policy}", "test_s3.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"evicted: 1 (cap 3 entries, {policy})"])
    assert _prompts(project) == set("abcd") - {evicted}


@pytest.mark.all_xdist_modes
def test_expired_entries_go_first_whatever_the_policy(project: Project) -> None:
    project.pytester.makepyfile(test_s1=_test_file({"a": 1, "b": 1, "c": 1}))
    project.run("--llm-cache=record", "test_s1.py").assert_outcomes(passed=3)
    [c_file] = [p for p in project.files() if "prompt c" in p.read_text()]
    text = c_file.read_text()
    c_file.write_text(text.replace(text.split("\n")[2], "recorded_at: '2001-01-01T00:00:00Z'"))
    project.pytester.makepyfile(test_s3=_test_file({"d": 1}))
    project.run("--llm-cache=record", "--llm-cache-max-entries=3", "--llm-cache-eviction=fifo", "test_s3.py")
    assert _prompts(project) == set("abd")


@pytest.mark.all_xdist_modes
def test_size_cap_in_bytes_and_report(project: Project) -> None:
    project.pytester.makepyfile(test_s1=_test_file({"a": 1, "b": 1, "c": 1}))
    project.run("--llm-cache=record", "test_s1.py").assert_outcomes(passed=3)
    one = max(p.stat().st_size for p in project.files())
    project.pytester.makepyfile(test_s3=_test_file({"d": 1}))
    report = project.pytester.path / "r.json"
    project.run(
        "--llm-cache=record", f"--llm-cache-max-size={2 * one + one // 2}B", "test_s3.py", f"--llm-cache-report={report}"
    ).assert_outcomes(passed=1)
    assert len(project.files()) == 2
    data = json.loads(report.read_text())
    assert data["evicted"] == 2
    assert data["cap"] == {"max_bytes": 2 * one + one // 2, "max_entries": None, "eviction": "lru"}
    assert data["entries"] == 2


@pytest.mark.all_xdist_modes
def test_what_the_session_used_is_never_evicted_and_a_warning_says_so(project: Project) -> None:
    project.pytester.makepyfile(test_s1=_test_file({"a": 1, "b": 1, "c": 1}))
    result = project.run("--llm-cache=record", "--llm-cache-max-entries=1")
    result.assert_outcomes(passed=3, warnings=1)
    assert _prompts(project) == set("abc")
    result.stdout.fnmatch_lines(
        [
            # no test's line led to it: placed as the cache's session end, not in pluggy's code
            "  llm-cache (session end):0: LLMCacheWarning: the cache cap (1 entry, lru) is smaller than what "
            "this session used*",
            "the cap is smaller than what this session used; nothing it used was evicted",
        ]
    )


def test_no_eviction_after_a_session_that_only_replayed(project: Project) -> None:
    project.pytester.makepyfile(test_s1=_test_file({"a": 1, "b": 1, "c": 1}))
    project.run("--llm-cache=record").assert_outcomes(passed=3)
    project.pytester.makepyfile(test_s1=_test_file({"a": 1}))
    project.run("--llm-cache-max-entries=1").assert_outcomes(passed=1)
    assert _prompts(project) == set("abc")


@pytest.mark.all_xdist_modes
def test_a_damaged_usage_index_is_rebuilt(project: Project) -> None:
    project.pytester.makepyfile(test_s1=_test_file({"a": 2}))
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    index = project.cassettes / ".llm-cache" / "usage.json"
    index.write_text("{not json")
    project.run().assert_outcomes(passed=1)
    [(_, hits)] = json.loads(index.read_text())["keys"].values()
    assert hits == 2
    assert (project.cassettes / ".llm-cache" / ".gitignore").read_text().strip().endswith("*")


def test_cap_under_xdist_runs_once_on_the_controller(project: Project) -> None:
    project.pytester.makepyfile(test_s1=_test_file({name: 1 for name in "abcdef"}))
    project.run("--llm-cache=record", "test_s1.py").assert_outcomes(passed=6)
    project.pytester.makepyfile(test_s3=_test_file({"g": 1, "h": 1}))
    result = project.run("-n", "2", "--llm-cache=record", "--llm-cache-max-entries=4", "test_s3.py")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["evicted: 4 (cap 4 entries, lru)"])
    assert len(project.files()) == 4
    assert {"g", "h"} <= _prompts(project)
