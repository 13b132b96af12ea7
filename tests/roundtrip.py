"""Record, then replay with the server unreachable: the provider tests' one scenario.

Importable by name from any test module (``tests/`` is on ``sys.path``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from conftest import Project

# nothing listens on the discard port: a request that is not served from a cassette fails
DEAD_URL = "http://127.0.0.1:9"

__all__ = ["DEAD_URL", "docs", "everything_under", "record_then_replay"]


def _results(project: Project) -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(project.out.iterdir())}


def _report(project: Project) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project.pytester.path / "report.json").read_text())
    return data


def docs(project: Project) -> list[dict[str, Any]]:
    """Every cassette written, parsed, in path order (``project.files()``)."""
    return [yaml.safe_load(p.read_text()) for p in project.files()]


def everything_under(project: Project) -> bytes:
    """The bytes of every file under the cassette directory, hidden ones included."""
    return b"\n".join(p.read_bytes() for p in sorted(project.cassettes.rglob("*")) if p.is_file())


def record_then_replay(
    project: Project, monkeypatch: pytest.MonkeyPatch, *, passed: int, requests: int, upstream: int,
    **modules: str,
) -> dict[str, Any]:
    """Record ``modules`` (``requests`` intercepted calls, ``upstream`` reaching the server),
    replay them with the server unreachable; the saved results must be equal. Returns them."""
    project.pytester.makepyfile(**modules)
    project.run("--llm-cache=record", "--llm-cache-report=report.json").assert_outcomes(passed=passed)
    first = _results(project)
    assert first, "the inner tests saved nothing"
    calls = project.server.count()
    assert calls == upstream
    report = _report(project)
    assert (report["hits"] + report["recorded"], report["misses"]) == (requests, 0)
    assert report["recorded"] == upstream == len(project.files())

    monkeypatch.setenv("FAKE_LLM_URL", DEAD_URL)
    project.clear_results()
    project.run("--llm-cache-report=report.json").assert_outcomes(passed=passed)  # default: replay
    assert project.server.count() == calls, "replay reached the server"
    report = _report(project)
    assert (report["mode"], report["hits"], report["misses"], report["recorded"]) == (
        "replay", requests, 0, 0,
    )
    assert _results(project) == first
    monkeypatch.setenv("FAKE_LLM_URL", project.server.url)
    return first
