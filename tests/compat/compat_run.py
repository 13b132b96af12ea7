"""What the compatibility tests share: record a pytester project's calls through a client
library against the local server, then replay them with nothing listening, results equal."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from typing import Any

import pytest

from conftest import Project

# nothing listens on the discard port: a request not served from a cassette fails
DEAD_URL = "http://127.0.0.1:9"


def needs(*modules: str) -> pytest.MarkDecorator:
    """Skip when a library is not installed (pip install -e '.[compat]'), unless
    LLM_CACHE_REQUIRE_COMPAT is set (CI), where its absence fails the tests instead."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    skip = bool(missing) and not os.environ.get("LLM_CACHE_REQUIRE_COMPAT")
    return pytest.mark.skipif(skip, reason=f"not installed: {', '.join(missing)} (the compat extra)")


def preload(*modules: str) -> None:
    """Import the libraries in this process once: pytester's in-process runs drop what they
    import themselves, and these take seconds to import."""
    # litellm fetches a model price list over the network at import time otherwise
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    for name in modules:
        importlib.import_module(name)


def _results(project: Project) -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(project.out.iterdir())}


def record_then_replay(
    project: Project, monkeypatch: pytest.MonkeyPatch, source: str, *, passed: int, calls: int
) -> dict[str, Any]:
    """Record the tests in ``source`` (``calls`` requests reaching the server, one cassette
    each), replay them in the default mode with the server unreachable; the saved results
    must be equal and no request may reach the server. Returns the results."""
    project.pytester.makepyfile(test_through_library=source)
    recorded = project.run("--llm-cache=record")
    recorded.assert_outcomes(passed=passed)
    first = _results(project)
    assert first, "the inner tests saved nothing"
    assert project.server.count() == calls
    assert len(project.files()) == calls

    monkeypatch.setenv("FAKE_LLM_URL", DEAD_URL)
    project.clear_results()
    replayed = project.run()  # default mode: replay
    replayed.assert_outcomes(passed=passed)
    replayed.stdout.fnmatch_lines([f"*hits: {calls}   misses: 0   recorded: 0*"])
    assert project.server.count() == calls, "replay reached the server"
    assert _results(project) == first
    return first
