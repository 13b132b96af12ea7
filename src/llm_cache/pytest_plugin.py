"""The pytest plugin: hooks, options, the marker and the ``llm_cache`` fixture, nothing else.

Everything these hooks do is delegated to the core: ``settings.resolve`` reads
the options, ``session.CacheSession`` runs the cache, ``intercept.intercept``
patches the clients, ``report`` builds the summary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from .errors import ConfigError, StoreUnavailable
from .intercept import intercept
from .modes import MODES
from .report import Report, report_json, summary_lines
from .session import CacheSession, Scope
from .settings import parse_marker, resolve

SESSION = pytest.StashKey[CacheSession]()

# (option, dest, ini name, ini type, help). Every option has an ini twin.
_OPTIONS: list[tuple[str, str, str, str | None, str]] = [
    ("--llm-cache", "mode", "llm_cache_mode", None,
     f"cache mode: {'|'.join(MODES)} (default replay; env LLM_CACHE_MODE)"),
    ("--llm-cache-dir", "dir", "llm_cache_dir", None, "cassette directory (default: cassettes/ under rootdir)"),
    ("--llm-cache-ttl", "ttl", "llm_cache_ttl", None,
     "age after which a cassette is expired: 90s, 12h, 30d, 2w or never (default 30d)"),
    ("--llm-cache-report", "report", "llm_cache_report", None, "write the session's cache figures as JSON to this path"),
    ("--llm-cache-max-size", "max_size", "llm_cache_max_size", None,
     "cap on the cassettes' total size, like 500KB, 50MB, 1GB; enforced after a session that recorded"),
    ("--llm-cache-max-entries", "max_entries", "llm_cache_max_entries", None, "cap on the number of cassettes"),
    ("--llm-cache-eviction", "eviction", "llm_cache_eviction", None,
     "what goes first once expired cassettes are gone: lru (default), lfu or fifo"),
    ("--llm-cache-store", "store", "llm_cache_store", None,
     "where entries live: file://PATH (default: the cassette dir), memory://, redis://host:port/db"),
    ("--llm-cache-warm", "warm", "llm_cache_warm", None,
     "load entries into memory at start: all, or model versions separated by commas"),
    ("--llm-cache-memory-entries", "memory_entries", "llm_cache_memory_entries", None,
     "how many parsed entries the memory tier keeps (default 4096)"),
]
_INI_ONLY: list[tuple[str, str, str, Any]] = [
    ("llm_cache_ignore_fields", "linelist", "request fields left out of the key: dotted paths, one a line", []),
    ("llm_cache_model_versions", "linelist", "pinned model versions: lines 'alias = version'", []),
    ("llm_cache_secret_allowlist", "linelist", "regexes of secret-looking values that may be written", []),
    ("llm_cache_log_every", "string", "log the hit rate at INFO every this many lookups", ""),
    ("llm_cache_record_empty", "string", "keep answers with no content (true/false)", ""),
    ("llm_cache_record_truncated", "string", "keep answers cut off by the token limit (true/false)", ""),
    ("llm_cache_prices", "linelist", "dollars per million tokens: lines 'model = input, output'", []),
    # booleans are read as strings so that a bad value gets our message, not pytest's
    ("llm_cache_match_host", "string", "put scheme, host and port in the key (true/false)", ""),
    ("llm_cache_record_errors", "string", "record non-2xx responses too (true/false)", ""),
    ("llm_cache_autouse", "string", "intercept every test, not only those using the fixture or marker (true/false)", ""),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llm-cache", "record and replay LLM API calls")
    for flag, dest, ini, _type, text in _OPTIONS:
        group.addoption(flag, action="store", dest=f"llm_cache_{dest}", default=None, help=text)
        parser.addini(ini, text)
    for ini, kind, text, default in _INI_ONLY:
        parser.addini(ini, text, type=kind, default=default)  # type: ignore[arg-type]


@pytest.hookimpl
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "llm_cache(mode=None, ttl=None, model_version=None, ignore_fields=(), sequence=False): "
        "record and replay this test's LLM API calls",
    )
    cli = {dest: config.getoption(f"llm_cache_{dest}") for _, dest, _, _, _ in _OPTIONS}
    ini: dict[str, Any] = {dest: config.getini(ini) or None for _, dest, ini, _, _ in _OPTIONS}
    for name, *_ in _INI_ONLY:
        ini[name.removeprefix("llm_cache_")] = config.getini(name)
    try:
        settings = resolve(cli, ini, os.environ, config.rootpath)
        config.stash[SESSION] = CacheSession(settings)
    except (ConfigError, StoreUnavailable, ImportError) as exc:
        raise pytest.UsageError(str(exc)) from None


def _scope(request: pytest.FixtureRequest) -> Scope:
    session = request.config.stash[SESSION]
    marker = request.node.get_closest_marker("llm_cache")
    try:
        options = parse_marker(marker.args, marker.kwargs) if marker else parse_marker((), {})
    except ConfigError as exc:
        pytest.fail(str(exc), pytrace=False)
    return session.scope(
        request.node.nodeid,
        mode=options.mode,
        ttl=options.ttl,
        model_version=options.model_version,
        ignore_fields=options.ignore_fields,
        sequence=options.sequence,
    )


@pytest.fixture
def llm_cache(request: pytest.FixtureRequest) -> Iterator[Scope]:
    """Record and replay this test's LLM API calls; yields the test's cache scope
    (``.mode``, ``.stats``, ``.cassettes``)."""
    with intercept(_scope(request)) as scope:
        yield scope


@pytest.fixture(autouse=True)
def _llm_cache_auto(request: pytest.FixtureRequest) -> None:
    """Brings in ``llm_cache`` for marked tests, and for every test under llm_cache_autouse."""
    if "llm_cache" in request.fixturenames:
        return
    if request.node.get_closest_marker("llm_cache") or request.config.stash[SESSION].settings.autouse:
        request.getfixturevalue("llm_cache")


def _report(config: pytest.Config) -> Report:
    session = config.stash[SESSION]
    entries, size = session.size() if session.stats.tests_used else (0, 0)
    settings = session.settings
    location = settings.store_url or str(settings.cassette_dir)
    return Report(session.stats, settings.mode.value, location, entries, size, settings.cap, settings.prices)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if SESSION not in config.stash:
        return
    cache = config.stash[SESSION]
    if _is_worker(config):
        config.workeroutput["llm_cache"] = cache.stats.to_dict()  # type: ignore[attr-defined]
        cache.close()
        return
    cache.finish()
    report = config.stash[REPORT] = _report(config)
    cache.close()
    path = cache.settings.report_path
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report_json(report), indent=2) + "\n", encoding="utf-8")


REPORT = pytest.StashKey[Report]()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """On the pytest-xdist controller: add a finished worker's figures."""
    data = getattr(node, "workeroutput", {}).get("llm_cache")
    if data:
        node.config.stash[SESSION].stats.merge(data)


@pytest.hookimpl
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if SESSION not in config.stash or _is_worker(config):
        return
    report = config.stash.get(REPORT, None)
    if report is None:
        return
    lines = summary_lines(report)
    if not lines:
        return
    terminalreporter.write_sep("-", "llm-cache")
    for line in lines:
        terminalreporter.write_line(line)
