"""The cache for application code: ``LLMCache``.

The same keys, entries, stores and modes as the pytest plugin, used three ways:

- ``cache.transport()`` / ``cache.async_transport()``: an httpx (or httpx2) transport
  that caches through it, for production use without global patching;
- ``cache.intercept()``: vcrpy's patches, as the plugin uses them;
- ``@cache.cached()``: any function whose result is JSON-serialisable.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from .engine.scope import Scope
from .engine.session import CacheSession, utcnow
from .errors import ConfigError, StoreUnavailable
from .key import KeyRules
from .metrics import Metrics
from .modes import Mode
from .policy import Cap, Eviction
from .redact import mask_url
from .report import build_report, report_json
from .settings import (
    DEFAULT_TTL,
    REPLAY_TIMINGS,
    Settings,
    parse_bool,
    parse_count,
    parse_duration,
    parse_eviction,
    parse_mode,
    parse_size,
)
from .stores import MemoryStore, Store, open_store
from .values import parse_choice, parse_lines, parse_mapping, parse_seconds
from .warming import WarmReport

__all__ = ["LLMCache", "WarmReport"]

log = logging.getLogger("llm_cache")

F = TypeVar("F", bound=Callable[..., Any])
FALLBACKS = ("error", "passthrough")


def _load_request_path(store: Store) -> None:
    """Import now what the first recording and the first read of a stored cassette would:
    on an event loop, an import is 10 to 20 ms during which no other task runs. PyYAML
    comes too for a file or Redis store, even if its answers would all come from parsed
    copies: 15 ms at start-up rather than in the middle of serving."""
    from . import yaml_emit  # noqa: F401
    from .engine import record  # noqa: F401  (and the readers of an answer)

    if not isinstance(store, MemoryStore):  # a file or Redis store reads cassettes' YAML
        from .cassette import _yaml

        _yaml()


def _default_httpx() -> ModuleType:
    try:
        import httpx2

        return httpx2
    except ImportError:
        import httpx

        return httpx


def _module_of(transport: object) -> ModuleType:
    """The httpx or httpx2 module a transport is of: a subclass of the user's own
    (``class Logged(httpx2.HTTPTransport)``, defined in any module) included."""
    for name in ("httpx2", "httpx"):
        module = sys.modules.get(name)
        bases = tuple(getattr(module, b) for b in ("BaseTransport", "AsyncBaseTransport") if hasattr(module, b))
        if bases and isinstance(transport, bases):
            return module  # type: ignore[return-value]
    name = type(transport).__module__.split(".")[0]
    if name in ("httpx", "httpx2"):
        return importlib.import_module(name)
    raise TypeError(f"cache.transport() and async_transport() wrap an httpx or httpx2 transport (httpx2.HTTPTransport(), a "
                    f"subclass of httpx2.BaseTransport), got {transport!r}")


def _whole(value: object, setting: str, expected: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(setting=setting, value=value, expected=expected)
    return value


# The JSON report's fields that only a pytest run fills: an application's figures leave them out.
_TEST_RUN_ONLY = (
    "tests", "per_test", "unseen", "stale_policy", "stale_cassettes", "unused_policy", "unused",
    "unused_entries", "unused_why_not", "inventory",
)


class LLMCache:
    """An LLM response cache for application code.

    ``store`` is a URL (``memory://``, ``file://cassettes``, ``redis://host:6379/0``) or a
    ``Store``. ``mode`` defaults to ``refresh``: serve what is cached and fresh, fetch and
    keep what is not or has expired (past ``ttl``). ``stale_while_revalidate="10m"`` serves
    an entry expired for less than that at once and refreshes it behind;
    ``stale_if_error="1d"`` serves one expired for less than that when its refresh fails
    (an error, a timeout, 429 or 5xx), with a warning. Both are also read from the store
    URL's query (``?stale_while_revalidate=10m&stale_if_error=1d``).
    ``fallback="passthrough"`` sends calls to the API, with a warning, when the store is
    unavailable, instead of raising ``StoreUnavailable``.
    """

    def __init__(
        self,
        store: str | Store = "memory://",
        *,
        ttl: str | timedelta | None = DEFAULT_TTL,
        max_size: str | int | None = None,
        max_entries: int | None = None,
        eviction: str = "lru",
        mode: str | Mode = Mode.REFRESH,
        memory_entries: int = 4096,
        log_every: int | None = 1000,
        fallback: str = "error",
        ignore_fields: str | Sequence[str] = (),
        model_versions: str | Mapping[str, str] | None = None,
        record_errors: bool = False,
        lock_timeout: str | float | timedelta = 120.0,
        replay_timing: str = "none",
        root: str | os.PathLike[str] = ".",
        clock: Callable[[], datetime] = utcnow,
        stale_while_revalidate: str | timedelta | None = None,
        stale_if_error: str | timedelta | None = None,
    ) -> None:
        if isinstance(store, str):
            store, from_url = _stale_params(store)
            stale_while_revalidate = stale_while_revalidate or from_url.get("stale_while_revalidate")
            stale_if_error = stale_if_error or from_url.get("stale_if_error")
        if fallback not in FALLBACKS:
            raise ConfigError(setting="fallback", value=fallback, expected="'error' or 'passthrough'")
        self.fallback = fallback
        ttl_value = parse_duration(ttl, "ttl")
        settings = Settings(
            mode=parse_mode(mode, "mode"),
            cassette_dir=Path(root) / "cassettes",
            ttl=ttl_value,
            # a string is one field (or lines of them), not its characters; a bad value says its form
            rules=KeyRules(ignore_fields=parse_lines(ignore_fields, "ignore_fields"),
                           model_versions=parse_mapping(model_versions, "model_versions")),
            record_errors=parse_bool(record_errors, "record_errors"),  # "false" from a variable is false
            cap=Cap(
                max_bytes=parse_size(max_size, "max_size"),
                max_entries=parse_count(max_entries, "max_entries"),
                policy=Eviction(parse_eviction(eviction, "eviction")),
            ),
            store_url=store if isinstance(store, str) else None,
            root=Path(root),
            memory_entries=_whole(memory_entries, "memory_entries", "a whole number, 0 for no memory tier"),
            log_every=parse_count(log_every, "log_every") if log_every else None,
            lock_timeout=parse_seconds(lock_timeout, "lock_timeout"),
            replay_timing=parse_choice(replay_timing, "replay_timing", REPLAY_TIMINGS),
        )
        if isinstance(store, str):
            try:
                resolved = open_store(store, Path(root), ttl_value, setting="store")
            except StoreUnavailable as exc:
                if fallback != "passthrough":
                    raise
                # calls go to the API while it is away, and it is tried again every few seconds
                # (an application and its Redis started together): the cache is not off for good
                log.warning("llm_cache: store %s unavailable; passing calls through until it is reached",
                            mask_url(store))
                from .stores.later import Later

                url = store
                resolved = Later(lambda: open_store(url, Path(root), ttl_value, setting="store"), exc)
        else:
            resolved = store
        self.session = CacheSession(settings, store=resolved, clock=clock, passthrough=fallback == "passthrough",
                                    long_lived=True)
        self.session.stale_while_revalidate = _grace(stale_while_revalidate, "stale_while_revalidate")
        self.session.stale_if_error = _grace(stale_if_error, "stale_if_error")
        # counting from the start: an exporter registered late (the first scrape) still sees
        # what came before; a few microseconds a call
        Metrics.of(self.session)
        self._scope = self.session.scope("llm_cache.transport")

    # -- transports --------------------------------------------------------------

    def transport(self, wrapped: Any = None, *, httpx: ModuleType | None = None) -> Any:
        """A transport that answers from the cache and sends misses to ``wrapped``.

        ``wrapped`` defaults to the HTTP transport of ``httpx`` (httpx2 when installed,
        else httpx; the client's own, httpx or httpx2, once it sends through it), so
        retries, proxies and timeouts of the client keep working::

            OpenAI(http_client=httpx2.Client(transport=cache.transport()))
        """
        module = httpx or (_module_of(wrapped) if wrapped is not None else _default_httpx())
        inner = wrapped if wrapped is not None else module.HTTPTransport()
        return _sync_transport_class(module)(self, inner, module, chosen=wrapped is None and httpx is None)

    def async_transport(self, wrapped: Any = None, *, httpx: ModuleType | None = None) -> Any:
        """The asynchronous twin of ``transport()``, for ``AsyncOpenAI``/``AsyncAnthropic``."""
        module = httpx or (_module_of(wrapped) if wrapped is not None else _default_httpx())
        inner = wrapped if wrapped is not None else module.AsyncHTTPTransport()
        _load_request_path(self.session.store)
        return _async_transport_class(module)(self, inner, module, chosen=wrapped is None and httpx is None)

    # -- interception and functions ----------------------------------------------

    def intercept(self, mode: str | Mode | None = None) -> AbstractContextManager[Scope]:
        """Answer the requests of every client the cache can see (as the pytest plugin does)
        from this cache for a ``with`` block; ``mode`` overrides the cache's for the block."""
        from .adapters.patches import intercept

        scope = self.session.scope("llm_cache.intercept", mode=parse_mode(mode, "mode") if mode else None)
        return intercept(scope)

    def cached(
        self, fn: F | None = None, *, ttl: str | timedelta | None | object = ..., model_version: str | None = None,
        no_cache: bool = False, no_store: bool = False, namespace: str | None = None, key_self: bool = True,
    ) -> Any:
        """Cache a function's JSON-serialisable result, keyed by its qualified name, its
        arguments and ``model_version``. Works on sync and async functions, and on methods:
        the instance is keyed by its class and its attributes (which must be JSON), or, with
        ``key_self=False``, by its class alone (its answer does not depend on its state)::

            @cache.cached(ttl="7d", model_version="gpt-4o-2024-08-06")
            def summarize_document(document: str) -> str: ...

        ``no_cache``, ``no_store`` and ``namespace`` are the ``x-llm-cache`` directives, for
        every call of the function. ``summarize_document.cache_status`` is what the cache
        did for the last call (hit, stale, miss, refresh or bypass).
        """
        from .adapters.functions import cached_function
        from .engine.controls import make

        if not isinstance(key_self, bool):
            raise ConfigError(setting="cached(key_self=...)", value=key_self, expected="True or False")
        if model_version is not None and not (isinstance(model_version, str) and model_version.strip()):
            raise ConfigError(setting="cached(model_version=...)", value=model_version,
                              expected="a version label like 'gpt-4o-2024-08-06'")
        scope_ttl = ... if ttl is ... else parse_duration(ttl, "ttl")
        controls = make(no_cache=no_cache, no_store=no_store, namespace=namespace, where="cached")

        def decorate(func: F) -> F:
            scope = self.session.scope(f"{func.__module__}.{func.__qualname__}", ttl=scope_ttl)
            return cached_function(scope, func, model_version, controls, key_self=key_self)

        return decorate(fn) if fn is not None else decorate

    def options(
        self, *, no_cache: bool = False, no_store: bool = False, ttl: str | timedelta | None | object = ...,
        namespace: str | None = None,
    ) -> AbstractContextManager[Any]:
        """The ``x-llm-cache`` directives for every call made inside a ``with`` block, in its
        thread and the tasks it starts (give a thread them with ``llm_cache.carry(func)``)::

            with cache.options(namespace="tenant-a", ttl="1h", no_store=True):
                client.chat.completions.create(...)

        A bad value is a ``ValueError`` naming the accepted forms, raised here, before any call.
        """
        from .engine.controls import make, using

        return using(make(no_cache=no_cache, no_store=no_store, ttl=ttl, namespace=namespace))

    # -- warming, stats, life cycle --------------------------------------------------

    def warm(
        self,
        source: str | os.PathLike[str],
        *,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        transport: Any = None,
        progress: Callable[[int, int], None] | None = None,
        timeout: float | str = 60.0,
    ) -> WarmReport:
        """Make sure each request listed in ``source`` is cached and fresh.

        ``source`` is a YAML file (a list) or JSONL file (one object a line) of requests:
        ``{"url": ..., "json": {...}}`` or ``{"path": "/v1/chat/completions", "json": ...}``
        with ``base_url``; optional ``method`` (POST) and ``headers``. ``${VAR}`` in header
        values is read from the environment, so keys stay out of the file. Requests go
        through the cache: fresh ones are left alone, missing and expired ones are
        recorded through the real API when the mode allows. ``timeout``: each request's, in
        seconds (or ``"30s"``); a start-up that must not wait long on a hung API sets it low.
        """
        from .warming import warm

        return warm(self, source, base_url=base_url, headers=headers, transport=transport, progress=progress,
                    timeout=timeout)

    def stats(self) -> dict[str, Any]:
        """The cache's figures: hits, misses, recorded, hit_rate, tokens_saved, entries, bytes, ...

        The JSON report's figures, less those only a test run has (tests, per test,
        unused and stale cassettes, the store's inventory)."""
        from .engine.flight import settle_dropped

        settle_dropped()  # answers let go unclosed are counted as they end
        figures = report_json(build_report(self.session))
        for name in _TEST_RUN_ONLY:
            del figures[name]
        return figures

    @property
    def metrics(self) -> Metrics:
        """The cache's metrics (hits, misses, lookup latency, store size...) per model version
        and store, counted since the cache was made. ``prometheus_text()``,
        ``to_prometheus(registry)``, ``to_otel(meter_provider)``."""
        return Metrics.of(self.session)

    def evict(self) -> int:
        """Keep usage and evict down to the cap now; returns how many entries went."""
        before = self.session.stats.evicted
        self.session.finish(force=True)
        return self.session.stats.evicted - before

    def close(self) -> None:
        """Keep usage, evict down to the cap, release the store's connections."""
        from .engine.flight import settle_dropped

        settle_dropped()
        self.session.finish()
        self.session.close()

    def __enter__(self) -> LLMCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_STALE_PARAMS = ("stale_while_revalidate", "stale_if_error")


def _stale_params(url: str) -> tuple[str, dict[str, str]]:
    """A store URL without its ``stale_while_revalidate``/``stale_if_error`` parameters, and them."""
    from urllib.parse import parse_qsl, urlencode, urlsplit

    parts = urlsplit(url)
    if not any(name in parts.query for name in _STALE_PARAMS):
        return url, {}
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    found = {k: v for k, v in pairs if k in _STALE_PARAMS}
    rest = urlencode([(k, v) for k, v in pairs if k not in _STALE_PARAMS])
    # not urlunsplit: it writes memory://?x=1 without its query as "memory:"
    base = url.split("?", 1)[0]
    return base + (f"?{rest}" if rest else "") + (f"#{parts.fragment}" if parts.fragment else ""), found


def _grace(value: str | timedelta | None, setting: str) -> timedelta | None:
    """How long past its TTL an entry may still be served; None: not at all."""
    if value is None or value == "":
        return None
    return parse_duration(value, setting)


def _client_module(transport: Any, request: Any, factory: str) -> None:
    """A cache transport made for one httpx given to the other's client (httpx and httpx2
    each check that requests are their own): one whose wrapped transport the cache chose
    takes the client's module's instead; one given a transport says what to give it."""
    module = importlib.import_module(type(request).__module__.partition(".")[0])
    if not transport.chosen:
        name = module.__name__
        raise TypeError(
            f"this cache transport wraps a {transport.httpx.__name__} transport and a {name} client sends "
            f"through it: give it an {name} transport, cache.transport({name}.{factory}()), or use a "
            f"{transport.httpx.__name__} client"
        )
    transport.wrapped, transport.httpx, transport.chosen = getattr(module, factory)(), module, False


@functools.cache
def _sync_transport_class(httpx: ModuleType) -> type:
    from .adapters.httpx import handle

    class CachingTransport(httpx.BaseTransport):  # type: ignore[misc,name-defined]
        """Answers from an LLMCache; sends misses to the wrapped transport and records them
        as their stream is read, so the caller sees chunks as they arrive."""

        def __init__(self, cache: LLMCache, wrapped: Any, module: ModuleType, chosen: bool = False) -> None:
            self.cache, self.wrapped, self.httpx, self.chosen = cache, wrapped, module, chosen

        def handle_request(self, request: Any) -> Any:
            if type(request).__module__.partition(".")[0] != self.httpx.__name__:
                _client_module(self, request, "HTTPTransport")
            return handle(self.cache._scope, self.httpx, request, lambda: self.wrapped.handle_request(request))

        async def handle_async_request(self, request: Any) -> Any:  # an async client given it
            raise TypeError("cache.transport() is for a sync client (OpenAI, httpx2.Client); an async one "
                            "(AsyncOpenAI, httpx2.AsyncClient) takes cache.async_transport()")

        def close(self) -> None:
            self.wrapped.close()

    return CachingTransport


@functools.cache
def _async_transport_class(httpx: ModuleType) -> type:
    from .adapters.httpx import ahandle

    class AsyncCachingTransport(httpx.AsyncBaseTransport):  # type: ignore[misc,name-defined]
        """The asynchronous twin: concurrent identical requests wait for the first."""

        def __init__(self, cache: LLMCache, wrapped: Any, module: ModuleType, chosen: bool = False) -> None:
            self.cache, self.wrapped, self.httpx, self.chosen = cache, wrapped, module, chosen

        def handle_request(self, request: Any) -> Any:  # a sync client given it
            raise TypeError("cache.async_transport() is for an async client (AsyncOpenAI, httpx2.AsyncClient); "
                            "a sync one (OpenAI, httpx2.Client) takes cache.transport()")

        async def handle_async_request(self, request: Any) -> Any:
            if type(request).__module__.partition(".")[0] != self.httpx.__name__:
                _client_module(self, request, "AsyncHTTPTransport")
            return await ahandle(
                self.cache._scope, self.httpx, request, lambda: self.wrapped.handle_async_request(request)
            )

        async def aclose(self) -> None:
            await self.wrapped.aclose()

    return AsyncCachingTransport
