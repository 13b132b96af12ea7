"""--llm-cache-store and --llm-cache-warm in the plugin (the Redis store has its own module)."""

from __future__ import annotations

import json

import pytest

from conftest import Project

TESTS = """
from conftest import chat
def test_one(client, llm_cache):
    chat(client, "stored")
def test_two(client, llm_cache):
    chat(client, "stored")
"""


def test_memory_store_serves_within_a_session_and_keeps_nothing(project: Project) -> None:
    project.pytester.makepyfile(test_mem=TESTS)
    result = project.run("--llm-cache=record", "--llm-cache-store=memory://")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["mode: record   store: memory:// (1 entry, * B)", "hits: 1   misses: 0   recorded: 1*"])
    assert project.files() == []
    project.run("--llm-cache-store=memory://").assert_outcomes(failed=2)  # nothing kept: replay misses
    assert project.server.count() == 1


def test_file_store_url_from_ini(project: Project) -> None:
    project.pytester.makepyfile(test_mem=TESTS)
    project.pytester.makeini("[pytest]\nllm_cache_store = file://elsewhere\n")
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    assert len(list((project.pytester.path / "elsewhere").rglob("*.yaml"))) == 1
    project.run().assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ftp://host/x", "--llm-cache-store must be a store URL: file://PATH, memory://, redis://host:port/db or redis+cluster://host:port,host:port/, got 'ftp://host/x'"),
        ("memory://?max_entries=lots", "--llm-cache-store max_entries must be a whole number above 0, like 1000, got 'lots'"),
        ("memory://?colour=blue", "--llm-cache-store must be memory:// with max_entries= and max_bytes= only, got*"),
    ],
)
def test_bad_store_urls_are_usage_errors(project: Project, value: str, message: str) -> None:
    project.pytester.makepyfile(test_mem=TESTS)
    result = project.run(f"--llm-cache-store={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


@pytest.mark.all_xdist_modes
def test_warm_loads_entries_at_start_and_says_so(project: Project) -> None:
    project.pytester.makepyfile(
        test_warm="""
from conftest import chat
def test_a(client, llm_cache):
    chat(client, "a")
def test_b(client, llm_cache):
    chat(client, "b", model="gpt-4o-mini")
"""
    )
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    result = project.run("--llm-cache-warm=all")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["warmed: 2 entries in *.** s"])
    result = project.run("--llm-cache-warm=gpt-4o-mini")
    result.stdout.fnmatch_lines(["warmed: 1 entry in *.** s"])
    project.run().stdout.no_fnmatch_line("warmed:*")
    # a model version with nothing stored (a typo) is said, not warmed silently as nothing
    report = project.pytester.path / "r.json"
    result = project.run("--llm-cache-warm=gpt-4o-mini,gtp-4o", f"--llm-cache-report={report}")
    result.assert_outcomes(passed=2)
    said = "warmed: 1 entry in *.** s; none of gtp-4o: no entries of that model version (llm-cache stats lists those stored)"
    result.stdout.fnmatch_lines([said])
    assert json.loads(report.read_text())["warm_none"] == ["gtp-4o"]
    result = project.run("--llm-cache-warm=gtp-4o", "-n", "2")
    result.stdout.fnmatch_lines(["warmed: 0 entries in *.** s; none of gtp-4o: *"])


def test_warmed_entries_are_served_from_memory(project: Project) -> None:
    project.pytester.makepyfile(test_warm="from conftest import chat\ndef test_a(client, llm_cache):\n    chat(client, 'a')\n")
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    project.pytester.makepyfile(
        test_warm="""
import pathlib
from conftest import chat
def test_0_remove_the_files(llm_cache):
    # warming ran when this first scope opened; now the disk has nothing
    for path in pathlib.Path("cassettes").rglob("*.yaml"):
        path.unlink()
def test_a(client, llm_cache):
    chat(client, 'a')
"""
    )
    project.run("--llm-cache-warm=all").assert_outcomes(passed=2)
    assert project.files() == []
    project.run().assert_outcomes(passed=1, failed=1)  # without warming the miss shows
