"""Under pytest-xdist, workers send their figures to the controller, which prints one merged summary."""

from __future__ import annotations

import json

import pytest

from conftest import Project

TESTS = "from conftest import chat\n" + "\n".join(
    f"def test_{i}(client, llm_cache):\n    chat(client, 'question {i % 6}')\n" for i in range(12)
)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_merged_counts_equal_a_run_without_xdist(project: Project, workers: str) -> None:
    project.pytester.makepyfile(test_par=TESTS)
    project.run("--llm-cache=record").assert_outcomes(passed=12)
    assert len(project.files()) == 6

    serial = project.pytester.path / "serial.json"
    parallel = project.pytester.path / "parallel.json"
    project.run(f"--llm-cache-report={serial}").assert_outcomes(passed=12)
    result = project.run("-n", workers, f"--llm-cache-report={parallel}")
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines(["hits: 12   misses: 0   recorded: 0   refreshed: 0   stale: 0   hit rate: 100%"])
    assert len([line for line in result.outlines if line.startswith("hits: ")]) == 1
    merged, alone = json.loads(parallel.read_text()), json.loads(serial.read_text())
    assert merged == alone
    assert project.server.count() == 6


def test_misses_from_workers_are_listed(project: Project) -> None:
    project.pytester.makepyfile(test_par=TESTS)
    result = project.run("-n", "2")
    result.assert_outcomes(failed=12)
    result.stdout.fnmatch_lines(["hits: 0   misses: 12*", "misses (12):", "  ... and 2 more"])
    assert project.server.count() == 0
