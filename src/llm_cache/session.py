"""One cache session (a pytest run, or an application's cache) and the scopes inside it.

A ``Scope`` is what one test sees: its mode, TTL and key rules, its counts and
the cassettes it used. The interception layer asks it three things about each
request: can it be served, serve it, record its response.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NoReturn

from .cassette import Body, Entry, dump_entry, encode_body
from .encoding import decode_content
from .errors import CacheMiss, CassetteError, LLMCacheWarning, StoreUnavailable
from .key import KeyRules, RequestKey, canonical_body, flatten, make_key, sequenced
from .llm import completion_text, read_response, refusal_reason
from .modes import Action, Found, Mode, decide
from .policy import plan_eviction
from .redact import (
    REQUEST_HEADERS,
    RESPONSE_HEADERS,
    find_secrets,
    keep_headers,
    redact,
    secret_values,
)
from .settings import Settings
from .stats import Counts, Drift, Miss, SessionStats
from .stores import MemoryStore, Store
from .stores.protocol import Lock
from .stores.tier import MemoryTier

__all__ = ["CacheSession", "Scope", "Decision", "HTTPRequest", "utcnow"]

log = logging.getLogger("llm_cache")

# How many stored requests a miss compares itself with to name the closest one.
CLOSEST_SCAN_LIMIT = 2000
# A scope lists at most this many cassettes it used (a test uses a few; an application's many).
MAX_CASSETTES_LISTED = 1000
# How long a recorder waits for another process recording the same key.
LOCK_TIMEOUT = 120.0


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Decision:
    """What was found for one request, and what to do with it."""

    rk: RequestKey
    found: Found
    action: Action
    entry: Entry | None
    started: float
    scope: Scope
    lock: Lock | None = None

    @functools.cached_property
    def location(self) -> str:
        return self.scope.session.store.location(self.rk.key, self.rk.model_version)


class HTTPRequest:
    """A request as the session reads it: vcrpy's Request has the same four attributes.

    ``headers`` is any mapping whose ``get`` ignores case (httpx's Headers, vcrpy's
    HeadersDict), or a dict."""

    def __init__(self, method: str, uri: str, body: bytes, headers: Any) -> None:
        self.method = method
        self.uri = uri
        self.body = body
        self.headers = headers


class CacheSession:
    """Settings, a store, a clock and the session's stats."""

    def __init__(
        self,
        settings: Settings,
        store: Store | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.store: Store = store if store is not None else settings.open_store()
        self.clock = clock
        self.stats = SessionStats()
        # Entries read, written or warmed in this session: a second hit parses nothing.
        # A memory store needs no tier in front of it.
        self.tier = None if isinstance(self.store, MemoryStore) else MemoryTier(settings.memory_entries)
        self._lock = threading.Lock()
        self._warmed = settings.warm is None
        # keys this process is recording right now -> the thread recording them
        self._inflight: dict[str, int] = {}

    def scope(
        self,
        test_id: str,
        *,
        mode: Mode | None = None,
        ttl: timedelta | None | object = ...,
        model_version: str | Mapping[str, str] | None = None,
        ignore_fields: Iterable[str] = (),
        sequence: bool = False,
    ) -> Scope:
        """A scope for one test; ``mode`` and ``ttl`` are the marker's, already validated."""
        s = self.settings
        # Mode: command line > marker > environment > ini > default (see settings.resolve).
        effective_mode = s.mode if (s.mode_from_cli or mode is None) else mode
        # TTL: marker > command line > ini > default.
        effective_ttl = s.ttl if ttl is ... else ttl
        rules = s.rules
        if isinstance(model_version, Mapping):
            rules = dataclasses.replace(rules, model_versions={**rules.model_versions, **model_version})
        elif model_version:
            rules = dataclasses.replace(rules, pinned_version=str(model_version))
        if ignore_fields:
            rules = dataclasses.replace(rules, ignore_fields=rules.ignore_fields + tuple(ignore_fields))
        with self._lock:
            self.stats.tests_used += 1
        if not self._warmed:
            self.warm()
        return Scope(self, test_id, effective_mode, effective_ttl, rules, sequence=sequence)  # type: ignore[arg-type]

    # -- lookups ---------------------------------------------------------

    def find(
        self, rk: RequestKey, mode: Mode, ttl: timedelta | None, counts: Counts, reread: bool = False
    ) -> tuple[Found, Entry | None]:
        """The entry for ``rk`` and whether it is fresh; a corrupt one is moved aside unless replaying.

        ``reread`` skips the entries already read in this session: another
        process may have recorded or refreshed the key since.
        """
        __tracebackhide__ = True
        entry = None if reread or self.tier is None else self.tier.get(rk.key)
        if entry is None:
            try:
                entry = self.store.get(rk.key, rk.model_version)
            except CassetteError as exc:
                self.stats.bump(counts, "corrupt")
                if mode is Mode.REPLAY:
                    raise
                moved = self.store.quarantine(rk.key, rk.model_version)
                warnings.warn(
                    LLMCacheWarning(f"{exc.path} is unusable ({exc.reason}); moved to {moved}, recording again"),
                    stacklevel=2,
                )
                return Found.MISSING, None
            if entry is None:
                return Found.MISSING, None
            if self.tier is not None:
                self.tier.put(entry)
        if ttl is not None and self.clock() - entry.recorded_at > ttl:
            return Found.EXPIRED, entry
        return Found.FRESH, entry

    def claim(
        self, rk: RequestKey, mode: Mode, ttl: timedelta | None, counts: Counts
    ) -> tuple[Lock | None, Found, Entry | None]:
        """Take the key's lock before going upstream, then look again.

        Whoever holds the lock records; the others wait, then find the
        cassette it wrote and serve it: one upstream call per key, however
        many workers ask at once. A lock left by a killed process is released
        by the kernel (flock), so it never blocks a later run.
        """
        lock: Lock | None = self.store.lock(rk.key)
        # Inside an event loop, a task waiting here would block the very loop on which
        # the task holding the lock must finish: when this process holds the key
        # already, go upstream without it (a duplicate call, never a deadlock).
        # The same holds for a thread asking again for a key it is recording itself.
        holder = self._inflight.get(rk.key)
        mine = holder is not None and (holder == threading.get_ident() or _in_event_loop())
        timeout = 0.0 if mine else LOCK_TIMEOUT
        try:
            lock.acquire(timeout=timeout)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - a Timeout, or a store without working locks
            if timeout:
                log.warning("could not lock %s (%s); recording without the lock", rk.prefix, exc)
            lock = None
        else:
            self._inflight[rk.key] = threading.get_ident()
        found, entry = self.find(rk, mode, ttl, counts, reread=True)
        return lock, found, entry

    def unclaim(self, key: str) -> None:
        self._inflight.pop(key, None)

    def finish(self, force: bool = False) -> None:
        """At session end (on the xdist controller): keep usage, then evict down to the cap.

        Eviction runs after a session that recorded, or whenever ``force`` is set. A store
        that went away is reported, not raised: the tests have their results already."""
        try:
            self._finish(force)
        except StoreUnavailable as exc:
            warnings.warn(LLMCacheWarning(f"usage and eviction skipped: {str(exc).splitlines()[0]}"), stacklevel=2)

    def size(self) -> tuple[int, int]:
        """(entries, bytes) of the store, (0, 0) when it cannot be reached."""
        try:
            return self.store.size()
        except StoreUnavailable:
            return 0, 0

    def _finish(self, force: bool) -> None:
        stats = self.stats
        if not stats.tests_used:
            return
        now = self.clock()
        cap = self.settings.cap
        recorded = stats.counts.recorded + stats.counts.refreshed
        if not (cap.active and (recorded or force)):
            if stats.used:
                self.store.touch(dict(stats.used))
            return
        metas = list(self.store.scan())
        usage = self.store.usage()
        for key, use in stats.used.items():
            usage[key] = usage[key].merged(use) if key in usage else use
        plan = plan_eviction(metas, cap, usage, now, self.settings.ttl, protected=set(stats.used))
        for meta in plan.evict:
            self.store.delete(meta)
        stats.evicted += len(plan.evict)
        stats.cap_short = plan.short
        evicted = {m.location for m in plan.evict}
        keep = {m.key for m in metas if m.location not in evicted}
        self.store.touch(dict(stats.used), keep=keep)
        if plan.short:
            warnings.warn(
                LLMCacheWarning(
                    f"the cache cap ({cap.describe()}) is smaller than what this session used "
                    f"({plan.entries_after} entries, {plan.bytes_after} bytes kept); raise it"
                ),
                stacklevel=2,
            )

    def closest(self, rk: RequestKey, rules: KeyRules) -> tuple[str | None, list[str]]:
        """The stored request of the same model version and endpoint that differs least."""
        best: tuple[str | None, list[str]] = (None, [])
        wanted = flatten(rk.body) if rk.body is not None else {}
        for entry in self.store.entries(rk.model_version, limit=CLOSEST_SCAN_LIMIT):
            if entry.path != rk.path or entry.method != rk.method:
                continue
            stored_raw = entry.request_body.to_bytes() if entry.request_body.kind == "json" else b""
            stored = flatten(canonical_body(stored_raw, rules.ignore_fields)) if stored_raw else {}
            diffs = sorted(
                name
                for name in wanted.keys() | stored.keys()
                if wanted.get(name, _ABSENT) != stored.get(name, _ABSENT)
            )
            if not diffs:
                diffs = ["query or API-version headers"]
            if best[0] is None or len(diffs) < len(best[1]):
                best = (self.store.location(entry.key, entry.model_version), diffs)
        return best

    def close(self) -> None:
        """At the end of this process's part of the session: let the store write and release."""
        with contextlib.suppress(StoreUnavailable):
            self.store.close()

    def counted(self) -> None:
        """After each lookup: every ``log_every`` lookups, an INFO line with the hit rate."""
        every = self.settings.log_every
        if every:
            c = self.stats.counts
            if c.lookups % every == 0:
                log.info(
                    "llm_cache: %d lookups, hit rate %.1f%% (hits %d, misses %d, recorded %d, refreshed %d)",
                    c.lookups, 100 * c.hit_rate, c.hits, c.misses, c.recorded, c.refreshed,
                )

    def remember(self, entry: Entry) -> None:
        if self.tier is not None:
            self.tier.put(entry)

    def warm(self) -> None:
        """Load the entries of the model versions in ``settings.warm`` (all when empty) into memory.

        Runs once, when the first scope opens: on pytest-xdist that is in each
        worker, and never on the controller, which serves nothing."""
        with self._lock:
            if self._warmed:
                return
            self._warmed = True
        if self.tier is None:
            return
        wanted = self.settings.warm or (None,)
        started = time.perf_counter()
        count = 0
        for model_version in wanted:
            for entry in self.store.entries(model_version):
                self.tier.grow(count + 1)
                self.tier.put(entry)
                count += 1
        self.stats.warmed = count
        self.stats.warm_seconds = time.perf_counter() - started


_ABSENT = object()


def _headers(raw: Any) -> dict[str, str]:
    """vcrpy's request headers as plain ``name -> value`` strings."""
    out = {}
    for name, value in (raw or {}).items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in value)
        elif isinstance(value, bytes):
            value = value.decode("latin-1")
        out[str(name)] = str(value)
    return out


def _body_bytes(request: Any) -> bytes:
    body = getattr(request, "body_bytes", None)
    if body is None:
        body = request.body
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if hasattr(body, "read"):
        return bytes(body.read())
    return b"".join(body)


def _response_headers(raw: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(k).lower(): ", ".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)
        for k, v in raw.items()
    }


@dataclass
class Scope:
    """One test's view of the cache: the object the ``llm_cache`` fixture yields."""

    session: CacheSession
    test_id: str
    mode: Mode
    ttl: timedelta | None
    rules: KeyRules
    # the marker's sequence=True: the n-th identical request is its own entry
    sequence: bool = False
    stats: Counts = field(default_factory=Counts)
    cassettes: list[str] = field(default_factory=list)
    _occurrences: dict[str, int] = field(default_factory=dict, repr=False)
    _held: list[Decision] = field(default_factory=list, repr=False)
    _seen: set[str] = field(default_factory=set, repr=False)
    _missed: set[str] = field(default_factory=set, repr=False)

    # -- what the interception layer calls ----------------------------------

    def decision(self, request: Any) -> Decision:
        """The decision for a vcrpy request, made once and kept on the request."""
        __tracebackhide__ = True
        cached: Decision | None = getattr(request, "_llm_cache_decision", None)
        if cached is not None and cached.scope is self:
            return cached
        rk = make_key(request.method, request.uri, _body_bytes(request), request.headers, self.rules)
        if self.sequence:
            occurrence = self._occurrences[rk.key] = self._occurrences.get(rk.key, 0) + 1
            rk = dataclasses.replace(rk, key=sequenced(rk.key, occurrence), occurrence=occurrence)
        found, entry = self.session.find(rk, self.mode, self.ttl, self.stats)
        action = decide(self.mode, found)
        lock = None
        if action in (Action.RECORD, Action.REFRESH):
            lock, found, entry = self.session.claim(rk, self.mode, self.ttl, self.stats)
            action = decide(self.mode, found)
            if lock is not None and action not in (Action.RECORD, Action.REFRESH):
                self.session.unclaim(rk.key)
                lock.release()
                lock = None
        made = Decision(rk, found, action, entry, time.perf_counter(), self, lock)
        if lock is not None:
            self._held.append(made)
        request._llm_cache_decision = made
        log.debug(
            "%s %s model=%s endpoint=%s test=%s",
            action.value, rk.prefix, rk.model, rk.path, self.test_id,
        )
        return made

    def can_serve(self, request: Any) -> bool:
        return self.decision(request).action in (Action.SERVE, Action.SERVE_STALE)

    def serve(self, request: Any) -> dict[str, Any]:
        """The cached response in the form vcrpy's stubs replay."""
        return self.serve_entry(request).to_vcr_response()

    def serve_entry(self, request: Any) -> Entry:
        """The cached entry for a request that can be served, counted as a hit."""
        made = self.decision(request)
        entry = made.entry
        assert entry is not None, "serve() called for a request with no cassette"
        stats = self.session.stats
        stats.bump(self.stats, "hits")
        if made.action is Action.SERVE_STALE:
            stats.bump(self.stats, "stale")
        usage = entry.usage or {}
        stats.add_tokens(entry.model_version, usage.get("input_tokens", 0), usage.get("output_tokens", 0))
        stats.use(entry.key, self.session.clock(), hit=True)
        self._used(made.location)
        self.session.counted()
        return entry

    def refuse(self, request: Any) -> NoReturn:
        """Fail a request that has no cassette in replay mode."""
        __tracebackhide__ = True  # pytest shows the error, not this frame
        made = self.decision(request)
        rk = made.rk
        # An SDK that retries what it takes for a connection error (anthropic wraps any
        # transport exception) asks again: one miss per request and test, however often.
        if rk.key not in self._missed:
            self._missed.add(rk.key)
            self.session.stats.bump(self.stats, "misses")
            self.session.stats.add_miss(Miss(self.test_id, rk.model, rk.path, rk.key))
            self.session.counted()
        closest, differences = self.session.closest(rk, self.rules)
        raise CacheMiss(
            method=rk.method,
            endpoint=rk.path,
            model=rk.model,
            key=rk.key,
            path=made.location,
            mode=self.mode.value,
            test_id=self.test_id,
            closest_path=closest,
            differences=differences,
        )

    def record(self, request: Any, response: Mapping[str, Any]) -> None:
        """Write the cassette for a request that went upstream."""
        made = self.decision(request)
        try:
            self._record(made, request, response)
        finally:
            self._release(made)
            self.session.counted()

    def _record(self, made: Decision, request: Any, response: Mapping[str, Any]) -> None:
        status = int(response["status"]["code"])
        stats = self.session.stats
        settings = self.session.settings
        if not 200 <= status < 300 and not settings.record_errors:
            stats.not_stored(self.stats, "error status")
            log.debug("not stored %s: status %s", made.rk.prefix, status)
            return
        try:
            entry = self._entry(made, request, status, response)
        except ValueError as exc:  # a Content-Encoding that cannot be decoded here
            stats.not_stored(self.stats, "undecodable")
            warnings.warn(LLMCacheWarning(f"not storing {made.rk.prefix}: {exc}"), stacklevel=2)
            return
        reason = refusal_reason(entry.response_body) if 200 <= status < 300 else None
        if (reason == "empty" and not settings.record_empty) or (reason == "truncated" and not settings.record_truncated):
            stats.not_stored(self.stats, reason)
            log.debug("not stored %s: %s response", made.rk.prefix, reason)
            return
        text = dump_entry(entry)
        findings = find_secrets(text, settings.secret_allow)
        if findings:
            stats.not_stored(self.stats, "secret-looking")
            kinds = ", ".join(sorted({f"{f.kind} (line {f.line}: {f.excerpt})" for f in findings}))
            warnings.warn(
                LLMCacheWarning(
                    f"not storing {made.location}: it would contain what looks like a secret: {kinds}. "
                    "If it is not one, allow it with a regex in llm_cache_secret_allowlist."
                ),
                stacklevel=2,
            )
            return
        if made.action is Action.REFRESH and made.entry is not None:
            old = made.entry
            if old._slim:  # the memory tier keeps no parsed body: read the one being replaced
                with contextlib.suppress(CassetteError):
                    old = self.session.store.get(old.key, old.model_version) or old
            self._drift(old, entry)
        location = self.session.store.put(entry, text)
        self.session.remember(entry)
        stats.bump(self.stats, "refreshed" if made.action is Action.REFRESH else "recorded")
        stats.use(entry.key, self.session.clock(), hit=False)
        self._used(location)

    def _drift(self, old: Entry, new: Entry) -> None:
        """Say what changed when a refresh replaced an entry: snapshot, fingerprint, text."""
        pairs = [
            ("response_model", old.response_model, new.response_model),
            ("system_fingerprint", old.system_fingerprint, new.system_fingerprint),
            ("text", completion_text(old.response_body), completion_text(new.response_body)),
        ]
        for name, before, after in pairs:
            if (before or after) and before != after:
                self.session.stats.add_drift(
                    Drift(self.test_id, new.key[:12], name, _short(before or ""), _short(after or ""))
                )

    def close(self) -> None:
        """Release the locks of requests that went upstream and never came back."""
        for made in list(self._held):
            self._release(made)

    def _release(self, made: Decision) -> None:
        if made.lock is not None:
            self.session.unclaim(made.rk.key)
            made.lock.release()
            made.lock = None
        if made in self._held:
            self._held.remove(made)

    # -- helpers -------------------------------------------------------------

    def _entry(self, made: Decision, request: Any, status: int, response: Mapping[str, Any]) -> Entry:
        rk = made.rk
        headers = _response_headers(response.get("headers") or {})
        raw = (response.get("body") or {}).get("string") or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        raw = decode_content(raw, headers.get("content-encoding"))
        body = encode_body(raw, headers.get("content-type"))
        request_headers = _headers(request.headers)
        lowered = {k.lower(): v for k, v in request_headers.items()}
        request_body = encode_body(_body_bytes(request), lowered.get("content-type"))
        info = read_response(body)
        secrets = secret_values(request_headers)
        return Entry(
            key=rk.key,
            recorded_at=self.session.clock(),
            model=rk.model,
            model_version=rk.model_version,
            method=rk.method,
            path=rk.path,
            query=[list(p) for p in rk.query],
            request_headers=redact(keep_headers(lowered, REQUEST_HEADERS), secrets),
            request_body=_redact_body(request_body, secrets),
            status=status,
            response_headers=redact(keep_headers(headers, RESPONSE_HEADERS), secrets),
            response_body=_redact_body(body, secrets),
            response_model=info.model,
            system_fingerprint=info.system_fingerprint,
            duration_ms=round((time.perf_counter() - made.started) * 1000, 1),
            usage=info.usage,
            key_rules=self._key_rules(rk),
        )

    def _key_rules(self, rk: RequestKey) -> dict[str, Any] | None:
        rules: dict[str, Any] = {}
        if rk.occurrence:
            rules["sequence"] = rk.occurrence
        if self.rules.ignore_fields:
            rules["ignore_fields"] = list(self.rules.ignore_fields)
        if self.rules.match_host:
            rules["host"] = rk.host
        return rules or None

    def _used(self, location: str) -> None:
        # A long-lived scope (the library's) must not grow without bound.
        if location not in self._seen and len(self._seen) < MAX_CASSETTES_LISTED:
            self._seen.add(location)
            self.cassettes.append(location)

    def abandon(self, request: Any) -> None:
        """A request that went upstream and will not be recorded (a stream closed early)."""
        made = getattr(request, "_llm_cache_decision", None)
        if made is not None and made.scope is self:
            self._release(made)


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _redact_body(body: Body, secrets: list[str]) -> Body:
    if not secrets or body.kind == "base64":
        return body
    return Body(body.kind, redact(body.value, secrets), body.newline)
