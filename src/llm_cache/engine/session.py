"""One cache session (a pytest run, or an application's cache): settings, store, stats, locks.

What a request needs of the session: ``find`` its entry (memory tier first), and
``claim`` the key's recording lock before going upstream (``claims.KeyLocks``), so
that one call per key goes out however many threads and processes ask at once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from ..cassette import Entry
from ..errors import CassetteError, LLMCacheWarning, OversizeCassette, StoreUnavailable, warn
from ..key import RequestKey
from ..modes import Found, Mode
from ..policy import plan_eviction
from ..settings import Settings
from ..stats import Counts, SessionStats
from ..stores import FileStore, MemoryStore, Store, open_store
from ..stores.tier import MemoryTier
from ..usage import Usage, merge_usage
from .claims import KeyLocks
from .gate import Gates

if TYPE_CHECKING:
    import asyncio

    from .scope import Scope

__all__ = ["CacheSession", "open_settings_store", "utcnow"]

log = logging.getLogger("llm_cache")
# The warning of calls passed through with the store away is said at most this often (s).
PASSED_THROUGH_EVERY = 5.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def open_settings_store(settings: Settings) -> Store:
    """The store the settings name: a store URL, else the file store at the cassette dir."""
    store = (
        FileStore(settings.cassette_dir) if settings.store_url is None
        else open_store(settings.store_url, settings.root, settings.ttl, setting=settings.store_setting)
    )
    if isinstance(store, FileStore):
        store.copies_from = settings.parsed_copies
    return store


class CacheSession(KeyLocks):
    """Settings, a store, a clock and the session's stats.

    ``passthrough`` (the library's ``fallback="passthrough"``): when the store is
    unavailable, requests go to the API with a warning instead of failing.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store | None = None,
        clock: Callable[[], datetime] = utcnow,
        passthrough: bool = False,
        long_lived: bool = False,
    ) -> None:
        self.settings = settings
        # an application's cache (the library): its session is the process's lifetime, so
        # what it used is no reason to keep an entry past the cap, and the usage it keeps
        # is handed to the store at each eviction pass, not held until the process ends
        self.long_lived = long_lived
        self._passed, self._said_at = 0, float("-inf")  # calls passed through, the last warning of them
        self.store: Store = store if store is not None else open_settings_store(settings)
        self.clock = clock
        self.passthrough = passthrough
        self.stats = SessionStats()
        # Entries read, written or warmed in this session: a second hit parses nothing.
        # A memory store needs no tier in front of it.
        self.tier = None if isinstance(self.store, MemoryStore) else MemoryTier(settings.memory_entries)
        self.gates = Gates()
        # a store across the network (Redis): in an event loop each of its round trips on
        # the way to a recording is a stretch of its own, the loop's other tasks run between
        self.remote = bool(getattr(self.store, "remote", False))
        self._lock = threading.Lock()
        self._warmed = settings.warm is None
        # keys this process is recording now -> how many recorders; and, per thread, the
        # keys that thread holds (a thread-local object, never a reusable thread id)
        self._inflight: dict[str, int] = {}
        self._refreshing: dict[str, asyncio.AbstractEventLoop | None] = {}
        self._held = threading.local()
        # stale on purpose (the library): how long past its TTL an expired entry is still
        # served while it is refreshed behind, or when the API fails
        self.stale_while_revalidate: timedelta | None = None
        self.stale_if_error: timedelta | None = None

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
        """A scope for one test; ``mode`` and ``ttl`` are the marker's, already validated.
        The test id is kept as reports and messages show it: a secret in it (a key as a
        parametrized argument) is redacted."""
        from .scope import Scope

        if "[" in test_id:  # only a parametrized test's id carries values of its own
            from ..redact import masked

            test_id = masked(test_id)

        s = self.settings
        # Mode: command line > marker > environment > ini > default (see settings.resolve).
        # a marker's off wins over everything: the test said its calls are not the cache's
        effective_mode = s.mode if mode is None or (s.mode_from_cli and mode is not Mode.OFF) else mode
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
                return self._unusable(exc, rk, mode, counts)
            return self._read(entry, ttl)
        return self._fresh(entry, ttl)

    async def afind(
        self, rk: RequestKey, mode: Mode, ttl: timedelta | None, counts: Counts, reread: bool = False
    ) -> tuple[Found, Entry | None]:
        """``find`` for an event loop's task: through the store's ``aio`` side when it has one."""
        __tracebackhide__ = True
        aio = self.aio
        if aio is None:
            return self.find(rk, mode, ttl, counts, reread)
        entry = None if reread or self.tier is None else self.tier.get(rk.key)
        if entry is None:
            try:
                entry = await aio.get(rk.key, rk.model_version)
            except CassetteError as exc:
                if isinstance(exc, OversizeCassette):
                    raise
                self._count_unusable(exc, rk, mode, counts)
                moved = await aio.quarantine(rk.key, rk.model_version)  # awaited too
                return self._moved_aside(exc, moved)
            return self._read(entry, ttl)
        return self._fresh(entry, ttl)

    def _read(self, entry: Entry | None, ttl: timedelta | None) -> tuple[Found, Entry | None]:
        if entry is None:
            return Found.MISSING, None
        if self.tier is not None:
            self.tier.put(entry)
        return self._fresh(entry, ttl)

    def _unusable(self, exc: CassetteError, rk: RequestKey, mode: Mode, counts: Counts) -> tuple[Found, None]:
        """A corrupt entry: counted; moved aside and recorded again, except in replay (raised)."""
        __tracebackhide__ = True
        if isinstance(exc, OversizeCassette):  # sound, not corrupt; the same limit would refuse a new one
            raise exc
        self._count_unusable(exc, rk, mode, counts)
        return self._moved_aside(exc, self.store.quarantine(rk.key, rk.model_version))

    def _count_unusable(self, exc: CassetteError, rk: RequestKey, mode: Mode, counts: Counts) -> None:
        """Count a corrupt entry; in replay raise it (nothing is moved, nothing recorded)."""
        __tracebackhide__ = True
        self.stats.bump(counts, "corrupt")
        if self.stats.listeners:
            self.stats.emit("corrupt", rk.model_version)
        if mode is Mode.REPLAY:
            raise exc

    def _moved_aside(self, exc: CassetteError, moved: str | None) -> tuple[Found, None]:
        warn(LLMCacheWarning(f"{exc.path} is unusable ({exc.reason}); moved to {moved}, recording again"))
        return Found.MISSING, None

    async def arecall(
        self, rk: RequestKey, mode: Mode, ttl: timedelta | None, counts: Counts
    ) -> tuple[Found, Entry | None] | None:
        """After a task waited for its key's gate: the entry the task it waited for left in the
        memory tier, None when there is none (the key's lock looks at the store next). With
        no tier that holds entries (a memory store, ``memory_entries=0``) the store is read."""
        if self.tier is None or self.tier.max_entries <= 0:
            return await self.afind(rk, mode, ttl, counts)
        entry = self.tier.get(rk.key)
        return None if entry is None else self._fresh(entry, ttl)

    def _fresh(self, entry: Entry, ttl: timedelta | None) -> tuple[Found, Entry]:
        if ttl is not None and self.clock() - entry.recorded_at > ttl:
            return Found.EXPIRED, entry
        return Found.FRESH, entry

    def _within(self, entry: Entry, ttl: timedelta | None, grace: timedelta | None) -> bool:
        if grace is None or ttl is None:
            return False
        return self.clock() - entry.recorded_at <= ttl + grace

    def within_swr(self, entry: Entry, ttl: timedelta | None) -> bool:
        """An expired entry still young enough to serve while it is refreshed behind."""
        return self._within(entry, ttl, self.stale_while_revalidate)

    def within_sie(self, entry: Entry, ttl: timedelta | None) -> bool:
        """An expired entry still young enough to serve when its refresh fails."""
        return self._within(entry, ttl, self.stale_if_error)

    # -- session end -------------------------------------------------------

    def finish(self, force: bool = False) -> None:
        """At session end (on the xdist controller): keep usage, then evict down to the cap.

        Eviction runs after a session that recorded, or whenever ``force`` is set. A store
        that went away is reported, not raised: the tests have their results already."""
        try:
            self._finish(force)
        except (StoreUnavailable, OSError) as exc:  # OSError: a disk that refuses, StoreError included
            if self.passthrough and isinstance(exc, StoreUnavailable):  # logged, as every call it passed through
                log.warning("llm_cache: usage and eviction skipped: %s", str(exc).splitlines()[0])
                return
            warn(LLMCacheWarning(f"usage and eviction skipped: {str(exc).splitlines()[0]}"))

    def say_passed_through(self, exc: StoreUnavailable) -> None:
        """The warning of a call passed through with the store away: once every few seconds,
        with how many since the last one, not once a call for the whole outage."""
        now = time.monotonic()
        with self._lock:
            self._passed += 1
            if now < self._said_at + PASSED_THROUGH_EVERY:
                return
            passed, self._passed, self._said_at = self._passed, 0, now
        more = f" ({passed} calls since the last warning)" if passed > 1 else ""
        log.warning("llm_cache: %s; passing the call through%s", str(exc).splitlines()[0], more)

    def _used_now(self) -> dict[str, Usage]:
        """The usage to hand to the store: a copy, or for a long-lived session all it holds,
        taken out (the next pass hands over what was used since)."""
        stats = self.stats
        with stats._lock:
            if not self.long_lived:
                return dict(stats.used)
            used, stats.used = stats.used, {}
            return used

    def _used_back(self, used: dict[str, Usage]) -> None:
        if not self.long_lived:
            return
        stats = self.stats
        with stats._lock:
            merge_usage(stats.used, used)

    def size(self) -> tuple[int, int]:
        """(entries, bytes) of the store, (0, 0) when it cannot be reached."""
        try:
            return self.store.size()
        except StoreUnavailable:
            return 0, 0

    def _finish(self, force: bool) -> None:
        self._evict(force)
        if self.stats.listeners:  # the gauges: the store's size after the eviction pass
            entries, size = self.store.size()
            self.stats.emit("entries", "-", None, entries)
            self.stats.emit("bytes", "-", None, size)

    def _evict(self, force: bool) -> None:
        stats = self.stats
        if not stats.tests_used:
            return
        now = self.clock()
        cap = self.settings.cap
        recorded = stats.counts.recorded + stats.counts.refreshed
        used = self._used_now()
        try:
            if not (cap.active and (recorded or force)):
                if used:
                    self.store.touch(used)
                return
            metas = list(self.store.scan())
            usage = self.store.usage()
            merge_usage(usage, used)
            protected = set() if self.long_lived else set(used)
            plan = plan_eviction(metas, cap, usage, now, self.settings.ttl, protected=protected)
            for meta in plan.evict:
                self.store.delete(meta)
                if self.tier is not None:  # an evicted entry is not served from memory either
                    self.tier.discard(meta.key)
            stats.evicted += len(plan.evict)
            stats.cap_short = plan.short
            evicted = {m.location for m in plan.evict}
            keep = {m.key for m in metas if m.location not in evicted}
            self.store.touch(used, keep=keep)
        except BaseException:
            self._used_back(used)  # kept for the next pass
            raise
        if plan.short:
            warn(LLMCacheWarning(
                f"the cache cap ({cap.describe()}) is smaller than what this session used "
                f"({plan.entries_after} entries, {plan.bytes_after} bytes kept); raise it"
            ))

    def close(self) -> None:
        """At the end of this process's part of the session: let the store write and release.
        What it could not write is derived data: a warning, never a failed session."""
        try:
            self.store.close()
        except StoreUnavailable:
            pass
        except OSError as exc:
            warn(LLMCacheWarning(f"the store did not finish writing: {str(exc).splitlines()[0]}"))

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
        none = []
        for model_version in wanted:
            before = count
            for entry in self.store.entries(model_version):
                self.tier.grow(count + 1)
                self.tier.put(entry)
                count += 1
            if model_version is not None and count == before:
                none.append(model_version)
        self.stats.warmed = count
        self.stats.warm_none = none
        self.stats.warm_seconds = time.perf_counter() - started
