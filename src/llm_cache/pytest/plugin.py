"""The pytest plugin: hooks, options, the marker and the ``llm_cache`` fixture, nothing else.

Loading it costs a run almost nothing: the settings are checked when pytest
configures, but the engine, vcrpy and the HTTP clients are imported only when the
first test asks for the cache. The transports are patched then, once for the
session, and each test makes its scope the active one for its duration.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import pytest

from ..errors import ConfigError, StoreUnavailable
from ..modes import MODES, Mode
from ..settings import Settings, check_paths, resolve
from .run import RunFacts, has_cassettes, partial_reason, uses_cache, write_report

if TYPE_CHECKING:
    from ..engine.scope import Scope
    from ..engine.session import CacheSession
    from ..metrics import Metrics
    from ..report import Report

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
     ("where entries live: file://PATH (default: the cassette dir), memory://, redis://host:port/db, "
      "redis+cluster://host:port,host:port/")),
    ("--llm-cache-warm", "warm", "llm_cache_warm", None,
     "load entries into memory at start: all, or model versions separated by commas"),
    ("--llm-cache-memory-entries", "memory_entries", "llm_cache_memory_entries", None,
     "how many parsed entries the memory tier keeps (default 4096)"),
    ("--llm-cache-unused", "unused", "llm_cache_unused", None,
     "after a run of the whole collection, cassettes no test used: report (default), fail or off"),
    ("--llm-cache-stale", "stale", "llm_cache_stale", None,
     "a cassette past the TTL in replay: serve (default), warn (listed in the summary) or fail (its test fails)"),
    ("--llm-cache-html", "html", "llm_cache_html", None,
     "write the session's cache report as one self-contained HTML file to this path"),
    ("--llm-cache-metrics", "metrics", "llm_cache_metrics", None,
     "write the session's cache metrics in the Prometheus text format to this path"),
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
    ("llm_cache_lock_timeout", "string",
     "longest wait for another recorder of the same request, like 120s (default 120s)", ""),
    ("llm_cache_replay_timing", "string",
     "none (default): replayed stream events arrive at once; recorded: at their recorded offsets", ""),
    ("llm_cache_block_network", "string",
     "in replay, refuse connections the cache cannot see to hosts not allowed (true/false, default true)", ""),
    ("llm_cache_ignore_hosts", "linelist",
     "hosts never intercepted nor recorded, one a line (*.example.com allowed)", []),
    ("llm_cache_hosts", "linelist", "when set, only requests to these hosts are intercepted, one a line", []),
    ("llm_cache_parsed_copies", "string",
     ("write parsed copies of the cassettes read, for a faster next run: auto (default: of every one, "
      "of none when CI is set), on (every one, in CI too), off"),
     ""),
    ("llm_cache_max_cassette_size", "string",
     "largest cassette recorded or read, like 200MiB (default 64MiB); a larger answer is not stored", ""),
]


class _Plugin:
    """The session's cache state: settings now, the engine when the first test needs it."""

    def __init__(self, settings: Settings, session: CacheSession | None) -> None:
        self.settings = settings
        self._session = session
        self.patched = False
        self.report: Report | None = None
        # what makes a run less than its whole collection (see run.partial_reason)
        self.run = RunFacts()
        # --llm-cache-metrics: this process's metrics, told of its session's events
        self.metrics: Metrics | None = None
        if settings.metrics_path is not None:
            from ..metrics import Metrics

            self.metrics = Metrics()

    @property
    def started(self) -> bool:
        return self._session is not None

    @property
    def session(self) -> CacheSession:
        if self._session is None:
            from ..engine.session import CacheSession

            self._session = CacheSession(self.settings)
            if self.metrics is not None:
                self.metrics.attach(self._session)
        return self._session


STATE = pytest.StashKey[_Plugin]()


_ALLOW_HELP = (
    "a host (or host:port) the network guard lets through in replay; repeatable, added to "
    "llm_cache_allowed_hosts (default localhost, 127.0.0.1, ::1; 'none' for no host)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llm-cache", "record and replay LLM API calls")
    for flag, dest, ini, _type, text in _OPTIONS:
        group.addoption(flag, action="store", dest=f"llm_cache_{dest}", default=None, help=text)
        parser.addini(ini, text)
    group.addoption(
        "--llm-cache-allow-host", action="append", dest="llm_cache_allow_host", default=None,
        metavar="HOST", help=_ALLOW_HELP,
    )
    parser.addini("llm_cache_allowed_hosts", _ALLOW_HELP, type="linelist", default=[])
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
    cli["allow_host"] = config.getoption("llm_cache_allow_host")
    ini["allowed_hosts"] = config.getini("llm_cache_allowed_hosts")
    try:
        settings = resolve(cli, ini, os.environ, config.rootpath)
        check_paths(settings)
        _loader_limit(config, settings.max_cassette_bytes)
        state = _Plugin(settings, None)
        if settings.store_url is not None:
            # a store URL is opened now, so that one that cannot be reached stops the run
            state.session  # noqa: B018
        config.stash[STATE] = state
    except (ConfigError, StoreUnavailable, ImportError) as exc:
        raise pytest.UsageError(str(exc)) from None


def _loader_limit(config: pytest.Config, limit: int) -> None:
    """Let the loader read the cassettes that llm_cache_max_cassette_size lets us record,
    for this run only (the limit is the cassette module's, read on every load)."""
    from ..values import DEFAULT_MAX_CASSETTE_BYTES

    if limit == DEFAULT_MAX_CASSETTE_BYTES:  # nothing to change: the cassette format is not even loaded
        return
    from .. import cassette

    before = cassette.MAX_CASSETTE_BYTES
    cassette.MAX_CASSETTE_BYTES = limit

    def restore() -> None:
        cassette.MAX_CASSETTE_BYTES = before

    config.add_cleanup(restore)


def _marker_kwargs(node: pytest.Item) -> tuple[tuple[object, ...], dict[str, object]]:
    """The marker's arguments merged over module, class and function: the closest level
    wins per argument, ``ignore_fields`` of every level are combined."""
    args: tuple[object, ...] = ()
    merged: dict[str, object] = {}
    fields: list[object] = []
    for marker in reversed(list(node.iter_markers("llm_cache"))):  # farthest first
        args = args or tuple(marker.args)
        merged.update(marker.kwargs)
        given = marker.kwargs.get("ignore_fields")
        if given is not None:
            fields.extend([given] if isinstance(given, str) else list(given))
    if fields:
        merged["ignore_fields"] = fields
    return args, merged


def _scope(request: pytest.FixtureRequest) -> Scope:
    from ..marker import parse_marker

    session = request.config.stash[STATE].session
    refused: str | None = None
    try:
        options = parse_marker(*_marker_kwargs(request.node))
    except ConfigError as exc:
        refused = str(exc)
    if refused is not None:  # failed outside the except: pytest would print the ConfigError too
        pytest.fail(refused, pytrace=False)
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
    state = request.config.stash[STATE]
    scope = _scope(request)
    if scope.mode is Mode.OFF:
        yield scope
        return
    from ..adapters import patches
    from ..engine import active, guard

    if not state.patched:  # once per session; removed at session end
        patches.hold()
        state.patched = True
    policy = guard.for_scope(scope)
    try:
        # the network guard, for this test only: a test without the cache never meets it
        with active.activated(scope), (guard.guarding(policy) if policy else nullcontext()):
            yield scope
    finally:
        scope.close()
        state.session.stats.add_test(scope.test_id, scope.stats)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Brings in ``llm_cache`` for marked tests, and for every test under llm_cache_autouse,
    as the first fixture they set up. Not an autouse fixture: pytest would resolve one for
    every test of every project the plugin is installed in (about 0.2 ms a test, measured)."""
    if not items:
        return
    state = items[0].config.stash.get(STATE, None)
    every = state is not None and state.settings.autouse
    for item in items:
        names = getattr(item, "fixturenames", None)
        if names is None or "llm_cache" in names:
            continue
        if every or item.get_closest_marker("llm_cache") is not None:
            names.insert(0, "llm_cache")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl
def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        state = items[0].config.stash.get(STATE, None)
        if state is not None:
            state.run.deselected += len(items)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Shows a failure the cache raised down to the test's own line (not the SDK's frames);
    notes a skipped (or xfailed) test that uses the cache: its cassettes would look unused."""
    if call.excinfo is not None:
        from .failures import trim

        option = item.config.option
        keep_all = bool(getattr(option, "fulltrace", False) or getattr(option, "usepdb", False))
        trim(call.excinfo, keep_all, item.config.rootpath)
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped:  # an xfailed test too: it stopped where it failed
        state = item.config.stash.get(STATE, None)
        if state is not None and uses_cache(item, state.settings.autouse):
            state.run.skipped.add(item.nodeid)


@pytest.hookimpl
def pytest_sessionfinish(session: pytest.Session) -> None:
    from ..errors import at_session_end

    with at_session_end():  # a warning here has no test's line to be placed at
        _finish_session(session)


def _finish_session(session: pytest.Session) -> None:
    config = session.config
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if state.patched:
        from ..adapters import patches

        patches.let_go()
        state.patched = False
    if _is_worker(config):
        config.workeroutput["llm_cache_run"] = state.run.to_dict()  # type: ignore[attr-defined]
        if state.metrics is not None:
            config.workeroutput["llm_cache_metrics"] = state.metrics.to_dict()  # type: ignore[attr-defined]
        if state.started:
            config.workeroutput["llm_cache"] = state.session.stats.to_dict()  # type: ignore[attr-defined]
            state.session.close()
        return
    settings = state.settings
    partial = partial_reason(session, state.run)
    if not state.started and not (partial is None and settings.unused != "off" and has_cassettes(settings)):
        _write_metrics(state)
        return
    from ..report.model import Run, build_report

    cache = state.session
    cache.finish()
    report = state.report = build_report(
        cache, Run(partial, inventory=bool(settings.report_path or settings.html_path),
                   shown_from=str(config.invocation_params.dir))
    )
    cache.close()
    if report.unused_failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if settings.report_path is not None:
        from ..report.json import report_json

        write_report(settings.report_path, "report", lambda: json.dumps(report_json(report), indent=2) + "\n")
    if settings.html_path is not None:
        from ..report.html import report_html

        write_report(settings.html_path, "HTML report", lambda: report_html(report))
    _write_metrics(state)  # after finish(): the gauges are the store's size after eviction


def _write_metrics(state: _Plugin) -> None:
    if state.metrics is not None and state.settings.metrics_path is not None:
        write_report(state.settings.metrics_path, "metrics file", state.metrics.prometheus_text)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """On the pytest-xdist controller: add a finished worker's figures."""
    output = getattr(node, "workeroutput", {})
    state = node.config.stash[STATE]
    state.run.merge(output.get("llm_cache_run"), crashed=error is not None)
    data = output.get("llm_cache")
    if data:
        state.session.stats.merge(data)
    metrics = output.get("llm_cache_metrics")
    if metrics and state.metrics is not None:
        state.metrics.merge(metrics)


@pytest.hookimpl
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or _is_worker(config) or state.report is None:
        return
    from ..report import summary_lines

    lines = summary_lines(state.report)
    if not lines:
        return
    terminalreporter.write_sep("-", "llm-cache")
    for line in lines:
        terminalreporter.write_line(line)
