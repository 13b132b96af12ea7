"""Exceptions raised by llm_cache.

Each carries its data as attributes, builds its message from them, and
pickles (pytest-xdist sends exceptions between processes).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno as errnos
import inspect
import os
import sys
import warnings
from collections.abc import Iterator
from functools import cache as functools_cache
from typing import Any

__all__ = [
    "CacheMiss",
    "CassetteError",
    "ConfigError",
    "ControlError",
    "LLMCacheError",
    "LLMCacheWarning",
    "NetworkBlocked",
    "NotStoredWarning",
    "StaleCassette",
    "StoreError",
    "StoreUnavailable",
    "warn",
]


class LLMCacheError(Exception):
    """Base class of every error raised by llm_cache."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the constructor's keyword arguments (kept as attributes),
        # then restore anything else set later, such as PEP 678 notes.
        names = inspect.signature(type(self).__init__).parameters
        state = dict(self.__dict__)
        kwargs = {name: state.pop(name) for name in list(state) if name in names}
        return (_rebuild, (_plain(self), kwargs, state))


def _plain(error: LLMCacheError) -> type[LLMCacheError]:
    """The error's own class: not the twin that also makes it an SDK's error (adapters.sdkerrors)."""
    return getattr(type(error), "_plain", type(error))


def _rebuild(cls: type[LLMCacheError], kwargs: dict[str, Any], extra: dict[str, Any]) -> LLMCacheError:
    error = cls(**kwargs)
    error.__dict__.update(extra)
    return error


class ConfigError(LLMCacheError, ValueError):
    """A setting has a value of the wrong form.

    ``setting`` names where it came from (``--llm-cache-ttl``, ``llm_cache_ttl``,
    ``@pytest.mark.llm_cache(ttl=...)``), ``expected`` the form it must take.
    """

    def __init__(self, *, setting: str, value: object, expected: str) -> None:
        self.setting = setting
        self.value = value
        self.expected = expected
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.setting} must be {self.expected}, got {self.value!r}"


class ControlError(LLMCacheError, ValueError):
    """A per-request control (the ``x-llm-cache`` header, ``cache.options()``, ``@cached``)
    of a form the cache does not take; the message names the accepted forms, and shows a
    value that could be a secret by its length only."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class CassetteError(LLMCacheError):
    """A cassette file cannot be read, parsed or validated."""

    def __init__(self, *, path: str, reason: str) -> None:
        from .redact import masked

        self.path = path
        # a field's value quoted in the reason may be what a hand edit pasted: a key is redacted
        self.reason = masked(reason)
        super().__init__(str(self))

    def __str__(self) -> str:
        return (
            f"cassette {self.path} is unusable: {self.reason}\n"
            "Delete it, or re-record it with --llm-cache=record "
            "(record and refresh move a corrupt cassette aside to <name>.corrupt)."
        )


class OversizeCassette(CassetteError):
    """A cassette larger than ``llm_cache_max_cassette_size`` allows: not corrupt, so never
    moved aside, and not re-recorded (the same limit would refuse the new answer)."""

    def __init__(self, *, path: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(path=path, reason=f"it is {size} bytes, more than the {limit} a cassette may hold")

    def __str__(self) -> str:
        return (
            f"cassette {self.path} is {self.size} bytes, more than llm_cache_max_cassette_size "
            f"allows ({self.limit} bytes); it is left as it is.\n"
            "Raise the ini setting llm_cache_max_cassette_size (or -o llm_cache_max_cassette_size=SIZE) "
            "above its size to read it."
        )


# What a failed write means (None: the system's words), and how to fix it, by errno.
_CAUSES: dict[int, tuple[str | None, str]] = {
    errnos.ENOSPC: ("the disk is full", "free space on it, or point --llm-cache-dir at a disk that has some"),
    errnos.EDQUOT: ("the disk quota is exceeded", "free space in the quota, or point --llm-cache-dir elsewhere"),
    errnos.EROFS: (
        "the file system is read-only",
        "record on a writable checkout (replay needs no writes), or point --llm-cache-dir at a writable directory",
    ),
    errnos.EACCES: ("permission denied", "make the cassette directory writable by this user (chmod, chown)"),
    errnos.EPERM: ("permission denied", "make the cassette directory writable by this user (chmod, chown)"),
    errnos.ELOOP: (None, "replace the symlink with a real directory or file: the cache writes nothing through one"),
}


def describe_os_error(exc: OSError) -> str:
    """What an OSError of a write means, in words: ``the disk is full (ENOSPC)``."""
    words = _CAUSES.get(exc.errno or -1, (None, ""))[0]
    name = errnos.errorcode.get(exc.errno or -1)
    text = words or exc.strerror or str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else text


class StoreError(LLMCacheError, OSError):
    """A cassette could not be written (or removed): the disk is full, the file system is
    read-only, permission is denied. ``path`` is the file, ``cause`` what went wrong in
    words, ``errno`` the system's code (None when there is none), ``action`` what was being
    done. Nothing half-written is left behind.

    An ``OSError``, so that code catching those keeps working."""

    def __init__(self, *, path: str, cause: str, errno: int | None = None, action: str = "write the cassette") -> None:
        self.path = path
        self.cause = cause
        self.action = action
        super().__init__(str(self))
        # OSError's own attributes, set after its __init__ (which would clear them)
        self.errno = errno
        self.filename = path

    @classmethod
    def from_os_error(cls, path: str, exc: OSError, action: str = "write the cassette") -> StoreError:
        return cls(path=path, cause=describe_os_error(exc), errno=exc.errno, action=action)

    def __str__(self) -> str:
        fix = _CAUSES.get(getattr(self, "errno", None) or -1, (None, ""))[1]
        fix = fix or "check that the cassette directory exists and this user can write it"
        return f"cannot {self.action} {self.path}: {self.cause}\nFix: {fix}."

    def __reduce__(self) -> tuple[Any, ...]:
        # errno lives in OSError's slot, not in __dict__: passed on explicitly
        mine = ("path", "cause", "action")
        state = {k: v for k, v in self.__dict__.items() if k not in mine}
        kwargs = {k: self.__dict__[k] for k in mine} | {"errno": self.errno}
        return (_rebuild, (_plain(self), kwargs, state))


class CacheMiss(LLMCacheError):
    """A request has no cassette and the mode does not allow recording it."""

    def __init__(
        self,
        *,
        method: str,
        endpoint: str,
        model: str | None,
        key: str,
        path: str,
        mode: str,
        test_id: str | None = None,
        closest_path: str | None = None,
        differences: list[str] | None = None,
        host: str | None = None,
        port: int | None = None,
        refused: tuple[str, str] | None = None,
        empty_store: str | None = None,
    ) -> None:
        self.method = method
        self.endpoint = endpoint
        self.model = model
        self.key = key
        self.path = path
        self.mode = mode
        self.test_id = test_id
        self.closest_path = closest_path
        self.differences = list(differences or [])
        # where the request was going: its URL's host name and port
        self.host = host
        self.port = port
        # why a recording did not keep this request's answer, and the setting that keeps such answers
        self.refused = refused
        # the store's directory when it holds no cassette at all: the wrong one, most likely
        self.empty_store = empty_store
        super().__init__(str(self))

    @property
    def not_llm(self) -> str | None:
        """Why the request does not look like an LLM API call, or None when it does."""
        if self.method.upper() == "GET":
            last = self.endpoint.rstrip("/").rsplit("/", 1)[-1]
            return "it is a GET of a file" if "." in last else "it is a GET"
        if self.model is None:
            return "it has no JSON body naming a model"
        return None

    def __str__(self) -> str:
        lines = [
            f"no cassette for {self.method} {self.endpoint} (model {self.model or '-'}) in {self.mode} mode"
        ]
        if self.host:
            where = self.host if self.port is None else _host_port(self.host, self.port)
            lines.append(f"  host:      {where}")
        lines += [
            f"  key:       {self.key}",
            f"  looked in: {self.path}",
        ]
        if self.empty_store is not None:
            lines.append(f"  closest:   none: {self.empty_store} holds no cassette at all")
            if self.refused is None and self.not_llm is None:  # else that is the cause to tell
                lines.append(f"  check:     {EMPTY_STORE_HINT}")
        elif self.closest_path is None:
            lines.append("  closest:   no stored request for this model and endpoint")
        else:
            lines.append(f"  closest:   {self.closest_path}")
            shown = self.differences[:10]
            more = len(self.differences) - len(shown)
            lines.append(
                "  differs in: " + ", ".join(shown) + (f" (+{more} more)" if more > 0 else "")
            )
        record = "record it with --llm-cache=record (or LLM_CACHE_MODE=record)"
        why = self.not_llm
        if self.refused is not None:  # recording it again would refuse it again
            reason, keep = self.refused
            lines.append(f"  recorded, not kept: {reason}")
            lines.append(f"  fix: {keep}, then {record}")
        elif why is None:
            lines.append(f"  fix: {record}")
        else:
            # Recording a price list or a tokenizer file would store megabytes as a cassette.
            lines.append(f"  not an LLM API call? {why}")
            lines.append(
                f"  fix: let its host through with llm_cache_ignore_hosts = {self.host or 'HOST'} "
                '(README "Non-LLM requests")'
            )
            lines.append(f"   or: {record}")
        return "\n".join(lines)


EMPTY_STORE_HINT = (
    "is it the directory the cassettes were recorded into? The plugin's is under pytest's "
    "rootdir, which, with no pytest config file (pytest.ini, pyproject.toml's "
    "[tool.pytest.ini_options], tox.ini, setup.cfg), is the directory pytest was started in"
)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class NetworkBlocked(LLMCacheError):
    """A connection the cache could not see, refused while a test replays.

    Raised by the network guard from ``socket.connect``: ``host`` and ``port`` are
    where it was going (``address`` the IP it resolved to, when ``host`` is a name),
    ``test_id`` the test that made it. Not an ``OSError`` on purpose: HTTP clients
    and SDKs would wrap it in a connection error and retry.
    """

    def __init__(
        self, *, host: str, port: int, test_id: str, mode: str = "replay", address: str | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.test_id = test_id
        self.mode = mode
        self.address = address
        super().__init__(str(self))

    def __str__(self) -> str:
        resolved = f" ({self.address})" if self.address and self.address != self.host else ""
        lines = [
            f"connection to {_host_port(self.host, self.port)}{resolved} blocked in {self.mode} mode",
            f"  test: {self.test_id}",
            (
                "  why:  it was not made through a client the cache can see: the cache cannot replay it,"
                " and a replay never reaches the network"
            ),
            (
                "  fix:  record it through a client the cache can see (openai, anthropic, httpx, httpx2,"
                ' requests, aiohttp; README "How requests are intercepted")'
            ),
            (
                f"   or:  allow the host with --llm-cache-allow-host={self.host} or llm_cache_allowed_hosts"
                ' (README "Network guard")'
            ),
        ]
        return "\n".join(lines)


class StaleCassette(LLMCacheError):
    """A cassette older than the TTL, refused under ``llm_cache_stale = fail``.

    ``path`` is the cassette, ``age_seconds`` its age, ``ttl_seconds`` the TTL it passed,
    ``test_id`` the test that asked for it.
    """

    def __init__(self, *, path: str, age_seconds: float, ttl_seconds: float, test_id: str,
                 own_ttl: bool = False) -> None:
        self.path = path
        self.age_seconds = age_seconds
        self.ttl_seconds = ttl_seconds
        self.test_id = test_id
        self.own_ttl = own_ttl  # the TTL is the test's (its marker's), which the command line does not change
        super().__init__(str(self))

    def __str__(self) -> str:
        from datetime import timedelta

        from .values import format_age, format_duration

        ttl = format_duration(timedelta(seconds=self.ttl_seconds))
        if self.own_ttl:
            return "\n".join([
                (f"stale cassette {self.path}: recorded {format_age(self.age_seconds)} ago, past the TTL of {ttl} "
                 "(the test's own, from its marker)"),
                f"  test: {self.test_id}",
                f"  fix:  re-record it with: pytest --llm-cache=refresh {_quoted(self.test_id)}",
                ("   or:  serve it anyway with llm_cache_stale = serve (or warn), or a longer ttl in the test's "
                 "@pytest.mark.llm_cache(ttl=...)"),
            ])
        return "\n".join([
            f"stale cassette {self.path}: recorded {format_age(self.age_seconds)} ago, past the TTL of {ttl}",
            f"  test: {self.test_id}",
            # the TTL in effect: a TTL given on the command line must come with the refresh too
            f"  fix:  re-record it with: pytest --llm-cache=refresh --llm-cache-ttl={ttl} {_quoted(self.test_id)}",
            "   or:  serve it anyway with llm_cache_stale = serve (or warn), or a longer --llm-cache-ttl",
        ])


def _quoted(test_id: str) -> str:
    return test_id if all(c.isalnum() or c in "/_.:-" for c in test_id) else "'" + test_id.replace("'", "'\\''") + "'"


class StoreUnavailable(LLMCacheError):
    """The store cannot be reached (a Redis server down, slow, or refusing)."""

    def __init__(self, *, url: str, reason: str, timeout: float | None = None) -> None:
        self.url = url
        self.reason = reason
        self.timeout = timeout
        super().__init__(str(self))

    @property
    def fix(self) -> str:
        """What to do: a server that refused the credentials is running; one that did not answer may not be."""
        reason = self.reason.lower()
        if any(word in reason for word in ("auth", "password", "noperm", "wrongpass")):
            first = "Check the user name and password in its URL"
        else:
            first = "Start it (or check its address)"
        return (f"{first}, or choose another store: --llm-cache-store in a test run (file://cassettes, memory://), "
                "LLMCache(store=...) in an application.")

    def __str__(self) -> str:
        within = f" within {self.timeout:g} s" if self.timeout is not None else ""
        return f"cache store {self.url} is unavailable{within}: {self.reason}\n{self.fix}"


class LLMCacheWarning(UserWarning):
    """Something was recovered from, and the user should know (a corrupt cassette moved aside)."""


class NotStoredWarning(LLMCacheWarning):
    """A response was not written (an error status, empty, truncated, secret-looking, ...):
    a class of its own, so that a suite run with ``-W error`` can let it pass
    (``filterwarnings = ignore::llm_cache.NotStoredWarning``) and still fail on the others."""


_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep


@functools_cache
def _installed() -> tuple[str, ...]:
    """Where the standard library and installed packages live: not the user's code."""
    import site
    import sysconfig  # on the first warning only

    paths = sysconfig.get_paths()
    found = [paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths]
    found += getattr(site, "getsitepackages", list)()
    if site.ENABLE_USER_SITE:
        found.append(site.getusersitepackages())
    return tuple({os.path.join(os.path.abspath(path), "") for path in found})


def _caller_level() -> int:
    """``warnings.warn``'s stacklevel, from ``warn``, of the frame that made the call the
    warning is about: the first outside this package, the standard library and installed
    packages (a test's line, not an SDK's or ours); else the first outside this package
    (a thread the cache started, a call made from an installed package only)."""
    frame: Any = sys._getframe(2)
    level, fallback = 2, None
    installed = _installed()
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_HERE):
            if fallback is None:
                fallback = level
            if not filename.startswith(installed) and not filename.startswith("<frozen "):
                return level
        frame, level = frame.f_back, level + 1
    return fallback or 2


def warn(warning: Warning) -> None:
    """Issue ``warning`` at the user's line that led to it, where pytest's summary, and
    Python's once-per-location filter, place it: not at the line of the cache that noticed."""
    if _at_end.get():
        # no test's line led to it: said as the cache's session end, not at pluggy's or a runner's line
        warnings.warn_explicit(warning, type(warning), "llm-cache (session end)", 0)
        return
    warnings.warn(warning, stacklevel=_caller_level())


_at_end: contextvars.ContextVar[bool] = contextvars.ContextVar("llm_cache_at_end", default=False)


@contextlib.contextmanager
def at_session_end() -> Iterator[None]:
    """The test session's end (usage, eviction, reports): warnings issued inside have no
    line of the user's to be placed at."""
    token = _at_end.set(True)
    try:
        yield
    finally:
        _at_end.reset(token)
