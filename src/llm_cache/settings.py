"""The session's settings, resolved once from the command line, the ini and the environment.

The value parsers live in ``values`` (re-exported here); every one raises ``ConfigError`` naming the setting and the expected form;
the pytest plugin turns that into ``pytest.UsageError``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .atomic import nearest_existing
from .errors import ConfigError
from .hosts import DEFAULT_ALLOWED, HOSTS_FORM, HostPattern, parse_host, parse_hosts
from .keyrules import KeyRules
from .modes import MODES, Mode
from .policy import EVICTIONS, Cap, Eviction
from .values import (  # noqa: F401 - re-exported: settings is where users look
    DEFAULT_MAX_CASSETTE_BYTES,
    DEFAULT_TTL,
    DURATION_FORM,
    SIZE_FORM,
    STORE_FORM,
    STORE_URL,
    format_duration,
    parse_bool,
    parse_choice,
    parse_count,
    parse_duration,
    parse_lines,
    parse_mapping,
    parse_prices,
    parse_regexes,
    parse_seconds,
    parse_size,
    parse_warm,
)

__all__ = [
    "DEFAULT_TTL",
    "Settings",
    "check_paths",
    "format_duration",
    "parse_allowed_hosts",
    "parse_bool",
    "parse_count",
    "parse_duration",
    "parse_eviction",
    "parse_lines",
    "parse_mapping",
    "parse_mode",
    "parse_prices",
    "parse_size",
    "parse_warm",
    "resolve",
]


def parse_mode(value: object, setting: str) -> Mode:
    """A mode name, case-insensitive."""
    if isinstance(value, Mode):
        return value
    text = str(value).strip().lower()
    try:
        return Mode(text)
    except ValueError:
        raise ConfigError(setting=setting, value=value, expected="one of " + "|".join(MODES)) from None


def parse_eviction(value: object, setting: str) -> Eviction:
    text = str(value).strip().lower()
    try:
        return Eviction(text)
    except ValueError:
        raise ConfigError(setting=setting, value=value, expected="one of " + "|".join(EVICTIONS)) from None


REPLAY_TIMINGS = ("none", "recorded")
# cassettes no test used, after a whole run; cassettes past the TTL met in replay
UNUSED_POLICIES = ("report", "fail", "off")
STALE_POLICIES = ("serve", "warn", "fail")
PARSED_COPIES = ("auto", "on", "off")


# Set by CI services that do not set CI: Jenkins and others (BUILD_NUMBER, which pytest
# also reads), Azure Pipelines, TeamCity, AWS CodeBuild.
CI_VARIABLES = ("BUILD_NUMBER", "JENKINS_URL", "TF_BUILD", "TEAMCITY_VERSION", "CODEBUILD_BUILD_ID")


def in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this runs in CI: ``CI`` set to anything but 0, false, no or off (GitHub,
    GitLab, CircleCI, Buildkite, Travis...), or one of ``CI_VARIABLES`` set."""
    if environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off"):
        return True
    return any(environ.get(name, "").strip() for name in CI_VARIABLES)


def parse_allowed_hosts(ini: object, cli: object) -> tuple[HostPattern, ...]:
    """The hosts the network guard lets through: the ini's list (localhost, 127.0.0.1 and ::1
    when it is not set; none at all for the single word ``none``), plus every
    ``--llm-cache-allow-host``. ``--llm-cache-allow-host=none`` drops the ini's list."""
    setting = "llm_cache_allowed_hosts"
    lines = ini if isinstance(ini, (list, tuple)) else str(ini or "").splitlines()
    words = [str(line).strip() for line in lines if str(line).strip() and not str(line).strip().startswith("#")]
    if not words:
        base: tuple[HostPattern, ...] = DEFAULT_ALLOWED
    elif [w.lower() for w in words] == ["none"]:
        base = ()
    elif "none" in (w.lower() for w in words):
        raise ConfigError(setting=setting, value="\n".join(words), expected=f"{HOSTS_FORM}, or the single word none")
    else:
        base = parse_hosts(words, setting)
    items: Iterable[object] = cli if isinstance(cli, (list, tuple)) else [] if cli is None else [cli]
    given = [str(v).strip() for v in items]
    if "" in given:  # --llm-cache-allow-host= with nothing after it: said, not ignored
        raise ConfigError(setting="--llm-cache-allow-host", value="", expected=f"{HOSTS_FORM}, or none")
    if any(g.lower() == "none" for g in given):
        base = ()
    added = tuple(parse_host(g, "--llm-cache-allow-host") for g in given if g.lower() != "none")
    return base + tuple(h for h in added if h not in base)


@dataclass(frozen=True)
class Settings:
    """Session-wide settings, resolved once when pytest configures (or by LLMCache)."""

    mode: Mode = Mode.REPLAY
    # True when the mode came from the command line, which beats a marker.
    mode_from_cli: bool = False
    cassette_dir: Path = Path("cassettes")
    ttl: timedelta | None = DEFAULT_TTL
    rules: KeyRules = field(default_factory=KeyRules)
    record_errors: bool = False
    autouse: bool = False
    report_path: Path | None = None
    cap: Cap = field(default_factory=Cap)
    # regexes of secret-looking values that are not secrets
    secret_allow: tuple[str, ...] = ()
    # None: the file store at cassette_dir; else a store URL (file://, memory://, redis://)
    store_url: str | None = None
    # where the store URL was set, for its errors: --llm-cache-store or llm_cache_store
    store_setting: str = "--llm-cache-store"
    # the directory relative paths are taken from (pytest's rootdir)
    root: Path = Path(".")
    # bound of the memory tier in front of the file and Redis stores
    memory_entries: int = 4096
    # None: no warming; (): every model version; else the model versions to load at start
    warm: tuple[str, ...] | None = None
    # log an INFO line with the hit rate every this many lookups (None: never)
    log_every: int | None = None
    # keep answers that are empty, or cut off by the token limit (refused by default)
    record_empty: bool = False
    record_truncated: bool = False
    # model (version) -> (dollars per million input tokens, per million output tokens)
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # the longest a recorder waits for another recorder of the same key (less when the
    # request's own timeout is shorter)
    lock_timeout: float = 120.0
    # none: a replayed stream's events arrive at once; recorded: at their recorded offsets
    replay_timing: str = "none"
    # the network guard (replay): connections to these hosts are let through
    allowed_hosts: tuple[HostPattern, ...] = DEFAULT_ALLOWED
    # False: in replay the guard lets every connection through and reports it as unseen
    block_network: bool = True
    # requests to these hosts are never intercepted nor recorded, and pass the guard
    ignore_hosts: tuple[HostPattern, ...] = ()
    # when set, only requests to these hosts are intercepted; others pass through
    hosts: tuple[HostPattern, ...] = ()
    # an answer whose cassette would be larger is not recorded; the loader reads up to this
    max_cassette_bytes: int = DEFAULT_MAX_CASSETTE_BYTES
    # after a run of the whole collection: list the cassettes no test used, or fail on them
    unused: str = "report"
    # the smallest cassette whose parsed copy is written (under .llm-cache/parsed/), None
    # for none: auto is every one (0), none in CI; on is every one, off none
    parsed_copies: int | None = 0
    # an expired cassette in replay: served, served and listed, or a failed test
    stale: str = "serve"
    # the self-contained HTML report, written at session end
    html_path: Path | None = None
    # the session's metrics in the Prometheus text format, written at session end
    metrics_path: Path | None = None
    # where the paths came from, for messages: {"dir": "--llm-cache-dir", "report": ...}
    origins: Mapping[str, str] = field(default_factory=dict)
    # Cassettes for tests: an answer not kept (an error status, empty, truncated) is said with
    # the setting that keeps it, since replay will miss it. An application's cache says nothing:
    # its caller has the answer, and an API's errors are not the cache's.
    warn_refusals: bool = False


def _first(*layers: tuple[str, object]) -> tuple[str, object] | None:
    for name, value in layers:
        if value is not None and value != "":
            return name, value
    return None


def resolve(
    cli: Mapping[str, object],
    ini: Mapping[str, object],
    environ: Mapping[str, str],
    rootdir: Path,
) -> Settings:
    """Settings from their sources. Raises ConfigError naming the setting at fault.

    Precedence, highest first:
      mode: command line > marker (per test) > LLM_CACHE_MODE > ini > replay
      ttl:  marker (per test) > command line > ini > 30d
      everything else (dir, report, cap, eviction): command line > ini > default
      allowed hosts: the ini's (or the default) list, plus every --llm-cache-allow-host
    """
    mode_source = _first(
        ("--llm-cache", cli.get("mode")),
        ("LLM_CACHE_MODE", environ.get("LLM_CACHE_MODE")),
        ("llm_cache_mode", ini.get("mode")),
    )
    mode = parse_mode(mode_source[1], mode_source[0]) if mode_source else Mode.REPLAY
    ttl_source = _first(("--llm-cache-ttl", cli.get("ttl")), ("llm_cache_ttl", ini.get("ttl")))
    ttl = parse_duration(ttl_source[1], ttl_source[0]) if ttl_source else DEFAULT_TTL
    dir_source = _first(("--llm-cache-dir", cli.get("dir")), ("llm_cache_dir", ini.get("dir")))
    cassette_dir = rootdir / str(dir_source[1]) if dir_source else rootdir / "cassettes"
    report_source = _first(("--llm-cache-report", cli.get("report")), ("llm_cache_report", ini.get("report")))
    size_source = _first(("--llm-cache-max-size", cli.get("max_size")), ("llm_cache_max_size", ini.get("max_size")))
    entries_source = _first(
        ("--llm-cache-max-entries", cli.get("max_entries")), ("llm_cache_max_entries", ini.get("max_entries"))
    )
    eviction_source = _first(
        ("--llm-cache-eviction", cli.get("eviction")), ("llm_cache_eviction", ini.get("eviction"))
    )
    cap = Cap(
        max_bytes=parse_size(size_source[1], size_source[0]) if size_source else None,
        max_entries=parse_count(entries_source[1], entries_source[0]) if entries_source else None,
        policy=parse_eviction(eviction_source[1], eviction_source[0]) if eviction_source else Eviction.LRU,
    )
    rules = KeyRules(
        ignore_fields=parse_lines(ini.get("ignore_fields"), "llm_cache_ignore_fields"),
        match_host=parse_bool(ini.get("match_host", False), "llm_cache_match_host"),
        model_versions=parse_mapping(ini.get("model_versions"), "llm_cache_model_versions"),
    )
    store_source = _first(("--llm-cache-store", cli.get("store")), ("llm_cache_store", ini.get("store")))
    store_url = str(store_source[1]).strip() if store_source else None
    if store_url is not None and not STORE_URL.match(store_url):
        from .redact import mask_url  # only for this message: redaction is not loaded at start-up

        raise ConfigError(setting=store_source[0], value=mask_url(store_url), expected=STORE_FORM)  # type: ignore[index]
    warm_source = _first(("--llm-cache-warm", cli.get("warm")), ("llm_cache_warm", ini.get("warm")))
    memory_source = _first(
        ("--llm-cache-memory-entries", cli.get("memory_entries")), ("llm_cache_memory_entries", ini.get("memory_entries"))
    )
    log_source = _first(("llm_cache_log_every", ini.get("log_every")),)
    unused_source = _first(("--llm-cache-unused", cli.get("unused")), ("llm_cache_unused", ini.get("unused")))
    stale_source = _first(("--llm-cache-stale", cli.get("stale")), ("llm_cache_stale", ini.get("stale")))
    html_source = _first(("--llm-cache-html", cli.get("html")), ("llm_cache_html", ini.get("html")))
    metrics_source = _first(("--llm-cache-metrics", cli.get("metrics")), ("llm_cache_metrics", ini.get("metrics")))
    return Settings(
        mode=mode,
        mode_from_cli=mode_source is not None and mode_source[0] == "--llm-cache",
        cassette_dir=cassette_dir,
        ttl=ttl,
        rules=rules,
        record_errors=parse_bool(ini.get("record_errors", False), "llm_cache_record_errors"),
        autouse=parse_bool(ini.get("autouse", False), "llm_cache_autouse"),
        report_path=rootdir / str(report_source[1]) if report_source else None,
        cap=cap,
        secret_allow=parse_regexes(ini.get("secret_allowlist"), "llm_cache_secret_allowlist"),
        store_url=store_url,
        store_setting=store_source[0] if store_source else "--llm-cache-store",
        root=rootdir,
        memory_entries=parse_count(memory_source[1], memory_source[0]) or 4096 if memory_source else 4096,
        warm=parse_warm(warm_source[1], warm_source[0]) if warm_source else None,
        log_every=parse_count(log_source[1], log_source[0]) if log_source else None,
        record_empty=parse_bool(ini.get("record_empty", False), "llm_cache_record_empty"),
        record_truncated=parse_bool(ini.get("record_truncated", False), "llm_cache_record_truncated"),
        prices=parse_prices(ini.get("prices"), "llm_cache_prices"),
        lock_timeout=parse_seconds(ini.get("lock_timeout") or 120.0, "llm_cache_lock_timeout"),
        replay_timing=parse_choice(ini.get("replay_timing") or "none", "llm_cache_replay_timing", REPLAY_TIMINGS),
        allowed_hosts=parse_allowed_hosts(ini.get("allowed_hosts"), cli.get("allow_host")),
        block_network=parse_bool(ini.get("block_network") or True, "llm_cache_block_network"),
        ignore_hosts=parse_hosts(ini.get("ignore_hosts"), "llm_cache_ignore_hosts"),
        hosts=parse_hosts(ini.get("hosts"), "llm_cache_hosts"),
        max_cassette_bytes=parse_size(ini.get("max_cassette_size"), "llm_cache_max_cassette_size")
        or DEFAULT_MAX_CASSETTE_BYTES,
        unused=parse_choice(unused_source[1], unused_source[0], UNUSED_POLICIES) if unused_source else "report",
        parsed_copies=_parsed_copies(ini.get("parsed_copies"), environ),
        stale=parse_choice(stale_source[1], stale_source[0], STALE_POLICIES) if stale_source else "serve",
        html_path=rootdir / str(html_source[1]) if html_source else None,
        metrics_path=rootdir / str(metrics_source[1]) if metrics_source else None,
        warn_refusals=True,
        origins={name: source[0] for name, source in
                 (("dir", dir_source), ("report", report_source), ("html", html_source),
                  ("metrics", metrics_source)) if source is not None},
    )


def _parsed_copies(value: object, environ: Mapping[str, str]) -> int | None:
    """The smallest cassette copied: on, every one; off, none; auto, none in CI (a clone
    thrown away after its run), else every one."""
    choice = parse_choice(value or "auto", "llm_cache_parsed_copies", PARSED_COPIES)
    if choice == "on":
        return 0
    if choice == "off" or in_ci(environ):
        return None
    return 0


def check_paths(settings: Settings) -> None:
    """Check what the filesystem says of the settings' paths, before any test runs.

    The cassette directory must be one, or a path where one can be made (it need not
    be writable: replay writes nothing). The report must be a file that can be
    written, or a path where one can be. Raises ConfigError naming the setting.
    """
    if settings.store_url is None:
        _check_dir(settings.cassette_dir, settings.origins.get("dir", "llm_cache_dir"))
    if settings.report_path is not None:
        _check_report(settings.report_path, settings.origins.get("report", "llm_cache_report"))
    if settings.html_path is not None:
        _check_report(settings.html_path, settings.origins.get("html", "llm_cache_html"), _HTML_FORM)
    if settings.metrics_path is not None:
        _check_report(settings.metrics_path, settings.origins.get("metrics", "llm_cache_metrics"), _METRICS_FORM)


_DIR_FORM = "a directory, or a path where one can be made"
_REPORT_FORM = "a path where a JSON file can be written"
_HTML_FORM = "a path where an HTML file can be written"
_METRICS_FORM = "a path where a Prometheus text file can be written"


def _nearest(path: Path, setting: str, form: str) -> Path:
    """``path`` or its nearest ancestor that exists; a path the system refuses to look
    up (a name too long, a loop of links) is a ConfigError."""
    try:
        return nearest_existing(path)
    except OSError as exc:
        raise ConfigError(
            setting=setting, value=str(path), expected=f"{form} ({exc.strerror or type(exc).__name__})"
        ) from None


def _check_dir(path: Path, setting: str) -> None:
    found = _nearest(path, setting, _DIR_FORM)
    if not found.is_dir():
        what = "it names a file" if found == path else f"{found} is a file"
        raise ConfigError(setting=setting, value=str(path), expected=f"{_DIR_FORM} ({what})")


def _check_report(path: Path, setting: str, form: str = _REPORT_FORM) -> None:
    found = _nearest(path, setting, form)
    if found == path:
        if path.is_dir():
            raise ConfigError(setting=setting, value=str(path), expected=f"{form} (it names a directory)")
        found = path.parent
    if not found.is_dir():
        raise ConfigError(setting=setting, value=str(path), expected=f"{form} ({found} is a file)")
    try:
        if os.path.lexists(path):  # opened to append nothing: only asks (a FIFO does not block)
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NONBLOCK", 0)))
        else:
            with tempfile.TemporaryFile(dir=found):
                pass
    except OSError as exc:
        where = path if os.path.lexists(path) else found
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            setting=setting, value=str(path), expected=f"{form} (cannot write in {where}: {reason})"
        ) from None
