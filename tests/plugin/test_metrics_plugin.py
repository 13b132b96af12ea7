"""--llm-cache-metrics: the run's cache metrics as a Prometheus text file, merged across xdist workers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import Project
from prometheus_client.parser import text_string_to_metric_families

TESTS = """
import openai
import pytest
from conftest import chat
def test_usage(client, llm_cache):
    chat(client, "count my tokens please")
def test_again(client, llm_cache):
    chat(client, "count my tokens please")
    chat(client, "another one")
def test_an_error_status_is_not_stored(client, llm_cache):
    with pytest.raises(openai.InternalServerError):
        chat(client, "boom", model="error-500")
"""
MISSING = """
from conftest import chat
def test_miss(client, llm_cache):
    chat(client, "never recorded")
"""
SUMMARY = re.compile(r"hits: (\d+)   misses: (\d+)   recorded: (\d+)   refreshed: (\d+)   stale: (\d+)")


def totals(path: Path) -> dict[str, Any]:
    """The metrics file parsed by prometheus_client: {sample name: sum over its series}, and
    the label sets seen, by sample name."""
    sums: dict[str, float] = {}
    labels: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                continue
            sums[sample.name] = sums.get(sample.name, 0) + sample.value
            labels.setdefault(sample.name, []).append(sample.labels)
    return {"sums": sums, "labels": labels}


def summary(result: pytest.RunResult) -> tuple[int, ...]:
    match = SUMMARY.search(result.stdout.str())
    assert match, result.stdout.str()
    return tuple(int(n) for n in match.groups())


@pytest.mark.parametrize("xdist_mode", ["no-xdist", "n2"], indirect=True)
def test_the_metrics_file_counts_what_the_summary_counts(project: Project) -> None:
    project.pytester.makepyfile(test_sum=TESTS)
    metrics, report = project.pytester.path / "out" / "llm-cache.prom", project.pytester.path / "report.json"
    result = project.run("--llm-cache=record", f"--llm-cache-metrics={metrics}", f"--llm-cache-report={report}")
    result.assert_outcomes(passed=3)
    figures = totals(metrics)["sums"]
    hits, misses, recorded, refreshed, stale = summary(result)
    assert (hits, misses, recorded) == (1, 0, 2)
    assert figures["llm_cache_hits_total"] == hits
    assert figures["llm_cache_misses_total"] == misses
    assert figures["llm_cache_recorded_total"] == recorded
    assert figures["llm_cache_refreshed_total"] == refreshed
    assert figures["llm_cache_stale_served_total"] == stale
    data = json.loads(report.read_text())
    assert figures["llm_cache_not_stored_total"] == data["not_stored"] == 1
    assert totals(metrics)["labels"]["llm_cache_not_stored_total"] == [
        # the cassette dir relative to the rootdir: one series whatever the checkout's path
        {"model_version": "error-500", "store": "cassettes", "reason": "error status"}
    ]
    assert figures["llm_cache_lookup_seconds_count"] == hits + misses + recorded + refreshed + data["not_stored"]
    assert figures["llm_cache_entries"] == data["entries"] == 2
    assert figures["llm_cache_bytes"] == data["bytes"] == sum(p.stat().st_size for p in project.files())

    project.pytester.makepyfile(test_missing=MISSING)
    result = project.run(f"--llm-cache-metrics={metrics}")
    result.assert_outcomes(passed=2, failed=2)  # the miss, and the error status asked again in replay
    seen = totals(metrics)
    hits, misses, *_ = summary(result)
    assert (seen["sums"]["llm_cache_hits_total"], seen["sums"]["llm_cache_misses_total"]) == (hits, misses) == (3, 2)
    assert seen["sums"]["llm_cache_recorded_total"] == 0
    assert {labels["model_version"] for labels in seen["labels"]["llm_cache_hits_total"]} == {"gpt-4o", "error-500"}
    assert {labels["store"] for labels in seen["labels"]["llm_cache_lookup_seconds_count"]} == {"cassettes"}


def test_the_path_from_the_ini_and_a_run_that_used_no_cache(project: Project) -> None:
    project.pytester.makeini("[pytest]\nllm_cache_metrics = metrics/run.prom\n")
    project.pytester.makepyfile(test_none="def test_it():\n    pass\n")
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    written = project.pytester.path / "metrics" / "run.prom"
    families = list(text_string_to_metric_families(written.read_text()))
    assert {f.name for f in families} >= {"llm_cache_hits", "llm_cache_lookup_seconds", "llm_cache_entries"}
    assert not any(f.samples for f in families)


def test_no_metrics_file_without_the_option(project: Project) -> None:
    project.pytester.makepyfile(test_sum=TESTS)
    project.run("--llm-cache=record").assert_outcomes(passed=3)
    assert not list(project.pytester.path.rglob("*.prom"))


def test_a_path_that_cannot_be_a_file_is_a_usage_error(project: Project) -> None:
    (project.pytester.path / "notes.txt").write_text("a file\n")
    project.pytester.makepyfile(test_sum=TESTS)
    for given, why in ((".", "it names a directory"), ("notes.txt/m.prom", "*notes.txt is a file")):
        result = project.run(f"--llm-cache-metrics={given}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            [f"ERROR: --llm-cache-metrics must be a path where a Prometheus text file can be written ({why})*"]
        )


def test_a_file_that_cannot_be_written_at_the_end_is_a_warning(project: Project) -> None:
    # the path is good when the run starts; a test makes it a directory
    project.pytester.makepyfile(test_sum=TESTS + "\ndef test_spoil():\n    import os\n    os.makedirs('m.prom')\n")
    result = project.run("--llm-cache=record", "--llm-cache-metrics=m.prom")
    result.assert_outcomes(passed=4, warnings=2)  # the other: the error answer TESTS make is not stored
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*LLMCacheWarning: the metrics file *m.prom was not written: *"])
    result.stdout.fnmatch_lines(["*NotStoredWarning: not storing *: the API answered HTTP 500; *"])
    result.stdout.no_fnmatch_line("*Traceback*")
