"""What the plugin knows of a run beyond the cache: whether its whole collection ran.

Cassettes no test used can be told only after a run of the whole collection: a
test that did not run would have used its own. ``partial_reason`` says why a run
was less than that, or None when it was the whole collection:

- a selection: ``-k``, ``-m``, ``--deselect``, ``--lf``, ``--sw``, or a test any plugin deselected;
- test paths or node ids on the command line that are not the rootdir, one of the
  ``testpaths``, or a directory holding them;
- a test that uses the cache (its fixture, its marker, or every test under
  ``llm_cache_autouse``) skipped or xfailed, or any test failed: what it did not reach
  would look unused;
- a run stopped early (``-x``, ``--maxfail``, an interruption, a collection error), a
  pytest-xdist worker that crashed, or no test run at all (``--collect-only``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..atomic import holds_subdirectory, write_atomic
from ..settings import Settings

__all__ = ["RunFacts", "has_cassettes", "partial_reason", "uses_cache", "write_report"]


@dataclass
class RunFacts:
    """Counted while the run goes; on pytest-xdist each worker counts its own and sends them."""

    deselected: int = 0
    skipped: set[str] = field(default_factory=set)
    crashed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"deselected": self.deselected, "skipped": sorted(self.skipped)}

    def merge(self, data: dict[str, Any] | None, crashed: bool = False) -> None:
        """Add what a worker counted (pytest-xdist)."""
        self.crashed += crashed
        if data:
            # every worker collects (and deselects) the whole collection: the largest, not the sum
            self.deselected = max(self.deselected, int(data.get("deselected", 0)))
            self.skipped.update(data.get("skipped", ()))


def uses_cache(item: pytest.Item, autouse: bool) -> bool:
    """Whether a test uses the cache: asks for the fixture, carries the marker, or every test does."""
    return autouse or "llm_cache" in getattr(item, "fixturenames", ()) or item.get_closest_marker("llm_cache") is not None


def _selection(config: pytest.Config) -> str | None:
    option = config.option
    for given, flag in (
        (getattr(option, "keyword", ""), "-k"),
        (getattr(option, "markexpr", ""), "-m"),
        (getattr(option, "deselect", None), "--deselect"),
        (getattr(option, "lf", False), "--lf"),
        (getattr(option, "stepwise", False) or getattr(option, "stepwise_skip", False), "--sw"),
    ):
        if given:
            return f"{flag} selected part of the tests"
    return None


def _paths(config: pytest.Config) -> str | None:
    """Why the command line's test paths are less than the whole collection, if they are."""
    if getattr(config, "args_source", None) is not pytest.Config.ArgsSource.ARGS:
        return None
    root = config.rootpath.resolve()
    testpaths = [(root / p).resolve() for p in config.getini("testpaths")]
    narrow = []
    for arg in config.args:
        if "::" in arg:
            narrow.append(arg)
            continue
        path = (config.invocation_params.dir / arg).resolve()
        whole = path == root or root.is_relative_to(path) or any(
            tp.is_relative_to(path) for tp in testpaths
        )
        if not whole:
            narrow.append(arg)
    if not narrow:
        return None
    shown = ", ".join(narrow[:3]) + (f" and {len(narrow) - 3} more" if len(narrow) > 3 else "")
    return f"only {shown} ran"


def partial_reason(session: pytest.Session, facts: RunFacts) -> str | None:
    """Why the run was not the whole collection, or None when it was."""
    config = session.config
    option = config.option
    if getattr(option, "collectonly", False) or getattr(option, "setuponly", False) or getattr(
        option, "setupplan", False
    ):
        return "no test ran (--collect-only, --setup-only or --setup-plan)"
    if session.shouldstop or session.shouldfail or session.exitstatus == pytest.ExitCode.INTERRUPTED:
        return "the run stopped early"
    maxfail = getattr(config.option, "maxfail", 0)
    if maxfail and session.testsfailed >= maxfail:
        return "the run stopped at --maxfail"
    if facts.crashed:
        return "a pytest-xdist worker crashed"
    if session.testsfailed:
        n = session.testsfailed
        # pytest counts a test whose setup raised (an error, not a failure) here too
        return (f"{n} {'test' if n == 1 else 'tests'} failed or errored: "
                "what a test that stopped early did not reach would look unused")
    reason = _selection(config) or _paths(config)
    if reason:
        return reason
    if facts.deselected:
        return f"{facts.deselected} tests were deselected"
    if facts.skipped:
        n = len(facts.skipped)
        return f"{n} {'test' if n == 1 else 'tests'} using the cache skipped or xfailed"
    return None


def has_cassettes(settings: Settings) -> bool:
    """Whether the file store's directory holds a model-version directory: a run whose
    tests never used the cache lists its cassettes only then (and costs nothing else)."""
    return settings.store_url is None and holds_subdirectory(settings.cassette_dir)


def write_report(path: Path, what: str, text: Callable[[], str]) -> None:
    """Write a report file; one that cannot be written is a warning (the tests have their results)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # whole or not at all (a metrics collector reads it any time), and a symlink at the
        # path is replaced, not followed
        write_atomic(path, text())
    except OSError as exc:
        from ..errors import LLMCacheWarning, describe_os_error

        warnings.warn(LLMCacheWarning(f"the {what} {path} was not written: {describe_os_error(exc)}"), stacklevel=1)
