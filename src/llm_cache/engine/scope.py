"""One test's view of the cache, and where each request's fate is decided.

``Scope.begin`` (``abegin`` in an event loop) makes a request's key, finds its
entry, decides with ``modes.decide``, takes the recording lock when the request
must go upstream, and returns a ``Flight`` that the adapter carries out: serve it,
or forward it and hand the answer back to be recorded. A replay miss raises
``CacheMiss`` from here, for every adapter alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, NoReturn

from ..atomic import holds_subdirectory
from ..errors import CacheMiss, LLMCacheError, StaleCassette, StoreUnavailable
from ..exchange import Request
from ..hosts import any_match, url_host
from ..key import KeyRules, RequestKey, make_key, sequenced
from ..modes import Action, Found, Mode, decide
from ..stats import Counts, Miss, StaleUse
from .controls import NONE as NO_CONTROLS
from .controls import Controls, check_namespace, take
from .flight import DROPPED, Flight, given_back, settle_dropped

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..cassette import Entry
    from .session import CacheSession

__all__ = ["Scope"]

log = logging.getLogger("llm_cache")

# A scope lists at most this many cassettes it used (a test uses a few; an application's many).
MAX_CASSETTES_LISTED = 1000
_GOES_UP = (Action.RECORD, Action.REFRESH)


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
    _open: set[Flight] = field(default_factory=set, repr=False)
    _seen: set[str] = field(default_factory=set, repr=False)
    _missed: set[str] = field(default_factory=set, repr=False)

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        # pytest prints it as the fixture's value above a failed test: short, and what matters
        s = self.stats
        return (
            f"<llm_cache {self.mode.value} {self.test_id or 'scope'}: "
            f"{s.hits} hits, {s.misses} misses, {s.recorded} recorded, {s.refreshed} refreshed>"
        )

    def __eq__(self, other: object) -> bool:
        return self is other

    # -- deciding --------------------------------------------------------------

    def key(self, request: Request, controls: Controls = NO_CONTROLS) -> RequestKey:
        rules = self.rules
        if controls.namespace is not None:
            check_namespace(controls, request.headers)
            rules = dataclasses.replace(rules, namespace=controls.namespace)
        rk = make_key(request.method, request.url, request.body, request.headers, rules)
        if self.sequence:
            occurrence = self._occurrences[rk.key] = self._occurrences.get(rk.key, 0) + 1
            rk = dataclasses.replace(rk, key=sequenced(rk.key, occurrence), occurrence=occurrence, unsequenced=rk.key)
        return rk

    def begin(self, request: Request) -> Flight:
        """Decide what to do with ``request``; raises CacheMiss for a replay miss."""
        __tracebackhide__ = True
        if not DROPPED.empty():  # answers let go unclosed: their keys given back first
            settle_dropped()
        controls = take(request.headers)  # removed from the request whatever happens next
        if self.mode is Mode.OFF or self._not_ours(request):
            return Flight(self, None, Found.MISSING, Action.PASS, None, request)
        rk = self.key(request, controls)
        ttl = self._ttl(controls)
        try:
            found, entry = self._first_look(rk, ttl, controls)
            return self._decided(rk, found, entry, request, controls, ttl)
        except StoreUnavailable as exc:
            return self._unavailable(exc, request, rk)

    async def abegin(self, request: Request) -> Flight:
        """``begin`` for an event loop: a hit is served at once; a request that must go
        upstream first passes its key's gate, so identical requests of concurrent tasks
        wait for the first one's answer without blocking the loop."""
        __tracebackhide__ = True
        if not DROPPED.empty():
            settle_dropped()
        controls = take(request.headers)
        if self.mode is Mode.OFF or self._not_ours(request):
            return Flight(self, None, Found.MISSING, Action.PASS, None, request)
        rk = self.key(request, controls)
        ttl = self._ttl(controls)
        try:
            found, entry = await self._afirst_look(rk, ttl, controls)
            if self._action(found, entry, ttl) not in _GOES_UP or controls.no_store:
                return self._decided(rk, found, entry, request, controls, ttl)
            if self.session.remote and self.session.aio is None:
                await asyncio.sleep(0)  # the lookup was a round trip; the lock and second look are next
            wait = self.session.lock_wait(request.timeout)
            deadline = time.monotonic() + wait
            try:
                leave = await self.session.gates.enter(rk.key, wait)
            except TimeoutError:  # held by a task of ours that does not finish: a duplicate call, not a hang
                log.warning("llm_cache: waited %g s for another task's answer to %s; going upstream without it",
                            wait, rk.prefix)
                leave = None
            try:
                # on the loop: the key's lock is taken here, and what takes a lock must not be
                # left behind in a thread by a cancelled task. What the task waited for is in
                # the memory tier now: no second read of the store (a YAML parse, a round trip),
                # since the key's lock, taken next when the answer is still missing, looks at
                # the store again for what other processes wrote.
                recalled = None if controls.no_cache else await self.session.arecall(rk, self.mode, ttl, self.stats)
                if recalled is not None:
                    found, entry = recalled
                claimed = None
                if self._action(found, entry, ttl) in _GOES_UP:  # no-store went out above
                    claimed = await self.session.aclaim(  # the gate's wait counts against the request's
                        rk, self.mode, ttl, self.stats, max(0.0, deadline - time.monotonic())
                    )
                try:
                    flight = self._decided(rk, found, entry, request, controls, ttl, claimed)
                    if flight.unneeded is not None:  # another process recorded it meanwhile
                        unneeded, flight.unneeded = flight.unneeded, None
                        await given_back(unneeded)
                except BaseException:
                    if claimed is not None and claimed[0] is not None:
                        claimed[0]()
                    raise
            except BaseException:
                if leave is not None:
                    leave()
                raise
        except StoreUnavailable as exc:
            return self._unavailable(exc, request, rk)
        if leave is not None:
            if flight.forwards:  # no answer kept (the API failed): the others waiting go up side by side
                flight.on_done(lambda: leave(failed=not flight.stored))
            else:
                leave()
        return flight

    def _ttl(self, controls: Controls) -> timedelta | None:
        return self.ttl if controls.ttl is ... else controls.ttl

    def _first_look(self, rk: RequestKey, ttl: timedelta | None, controls: Controls) -> tuple[Found, Entry | None]:
        # no-cache: not looked up, but in replay, which never goes upstream
        if controls.no_cache and self.mode is not Mode.REPLAY:
            return Found.MISSING, None
        return self._find(rk, ttl)

    async def _afirst_look(
        self, rk: RequestKey, ttl: timedelta | None, controls: Controls
    ) -> tuple[Found, Entry | None]:
        """``_first_look`` for an event loop's task. A lookup the store cannot await is made
        on the loop: handed to a worker thread it waits for one, and under load that queue
        costs far more than the lookup (benchmarks/bench_load.py)."""
        session = self.session
        if session.aio is None or (controls.no_cache and self.mode is not Mode.REPLAY):
            return self._first_look(rk, ttl, controls)
        stats = session.stats
        if not stats.listeners:
            return await session.afind(rk, self.mode, ttl, self.stats)
        started = time.perf_counter()
        try:
            return await session.afind(rk, self.mode, ttl, self.stats)
        finally:
            stats.emit("lookup", rk.model_version, None, time.perf_counter() - started)

    def _action(self, found: Found, entry: Entry | None, ttl: timedelta | None) -> Action:
        """``modes.decide``, with the session's stale policies: an expired entry within
        ``stale_while_revalidate`` past its TTL is served (and refreshed behind)."""
        action = decide(self.mode, found)
        if action is Action.REFRESH and entry is not None and self.session.within_swr(entry, ttl):
            return Action.SERVE_STALE
        return action

    def _find(self, rk: RequestKey, ttl: timedelta | None) -> tuple[Found, Entry | None]:
        """The first look for the entry; timed for the listeners when there are any."""
        stats = self.session.stats
        if not stats.listeners:
            return self.session.find(rk, self.mode, ttl, self.stats)
        started = time.perf_counter()
        try:
            return self.session.find(rk, self.mode, ttl, self.stats)
        finally:
            stats.emit("lookup", rk.model_version, None, time.perf_counter() - started)

    def _not_ours(self, request: Request) -> bool:
        """A request to an ignored host, or to one outside ``llm_cache_hosts`` when that is
        set: never intercepted nor recorded, sent on as it is."""
        settings = self.session.settings
        if not (settings.ignore_hosts or settings.hosts):
            return False
        host, port = url_host(request.url)
        if not host:  # not a network request (@cached functions)
            return False
        if any_match(settings.ignore_hosts, port, host):
            return True
        return bool(settings.hosts) and not any_match(settings.hosts, port, host)

    def _decided(
        self, rk: RequestKey, found: Found, entry: Entry | None, request: Request,
        controls: Controls = NO_CONTROLS, ttl: timedelta | None | object = ...,
        claimed: tuple[Callable[[], None] | None, Found, Entry | None] | None = None,
    ) -> Flight:
        """What to do with the request: serve, refuse, or go upstream holding the key's lock
        (``claimed``: the lock and second look an event loop's task took already)."""
        __tracebackhide__ = True
        ttl = self.ttl if ttl is ... else ttl
        action = self._action(found, entry, ttl)  # type: ignore[arg-type]
        release = unneeded = None
        # a lock taken by an event loop's task is given back by the task (an await), not here
        tasks = claimed is not None
        # no-store keeps nothing: there is no recording to wait for, and none to wait on
        if action in _GOES_UP and not controls.no_store:
            if claimed is None:
                wait = self.session.lock_wait(request.timeout)
                claimed = self.session.claim(rk, self.mode, ttl, self.stats, wait)  # type: ignore[arg-type]
            release, again, entry_again = claimed
            if not controls.no_cache:
                found, entry = again, entry_again
                action = self._action(found, entry, ttl)  # type: ignore[arg-type]
            if release is not None and action not in _GOES_UP:
                if tasks:
                    unneeded = release
                else:
                    release()
                release = None
        elif claimed is not None and claimed[0] is not None:
            unneeded = claimed[0]  # taken by the task for an action that, looked at again, needs no lock
        if entry is not None and action in _GOES_UP:
            # its test asked for it, whatever becomes of the refresh: not an unused cassette
            self.session.stats.use(rk.key, self.session.clock(), hit=False)
        flight = Flight(self, rk, found, action, entry, request)
        flight.controls = controls
        flight.unneeded = unneeded
        if action is Action.SERVE_STALE and found is Found.EXPIRED and self.mode is Mode.REFRESH:
            flight.revalidate = True  # within stale_while_revalidate: served now, refreshed behind
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s model=%s endpoint=%s test=%s", action.value, rk.prefix, rk.model,
                      _shown_path(rk, request), self.test_id)
        if action is Action.FAIL:
            self.refuse(rk, request)
        if action is Action.SERVE_STALE and not flight.revalidate:
            self._stale(rk, entry, ttl)  # type: ignore[arg-type]
        if release is not None:
            flight.on_done(release)
        if flight.forwards:
            self._open.add(flight)
            flight.on_done(lambda: self._open.discard(flight))
        return flight

    def _unavailable(self, exc: StoreUnavailable, request: Request, rk: RequestKey) -> Flight:
        stats = self.session.stats
        if stats.listeners:
            stats.emit("store_error", rk.model_version, "unavailable")
        if not self.session.passthrough:
            raise exc
        self.session.say_passed_through(exc)
        return Flight(self, None, Found.MISSING, Action.PASS, None, request)

    # -- what a flight reports back ---------------------------------------------

    def refuse(self, rk: RequestKey, request: Request | None = None) -> NoReturn:
        """Fail a request that has no cassette in replay mode."""
        __tracebackhide__ = True  # pytest shows the error, not this frame
        session = self.session
        # An SDK that retries what it takes for a connection error (anthropic wraps any
        # transport exception) asks again: one miss per request and test, however often.
        if rk.key not in self._missed:
            self._missed.add(rk.key)
            closest_path, differences = self._nearest(rk)
            session.stats.bump(self.stats, "misses")
            if session.stats.listeners:
                session.stats.emit("miss", rk.model_version)
            session.stats.add_miss(Miss(self.test_id, rk.model, _shown_path(rk, request), rk.key, closest_path,
                                        differences))
            session.counted()
        else:
            closest_path, differences = self._nearest(rk)
        host, port = url_host(request.url) if request is not None else ("", None)
        raise CacheMiss(
            method=rk.method,
            endpoint=_shown_path(rk, request),
            model=rk.model,
            key=rk.key,
            path=session.store.location(rk.key, rk.model_version),
            mode=self.mode.value,
            test_id=self.test_id,
            closest_path=closest_path,
            differences=differences,
            host=host or None,
            port=port if host else None,
            refused=self._refused(rk),
            empty_store=self._empty_store() if closest_path is None else None,
        )

    def _empty_store(self) -> str | None:
        """The file store's directory when it holds no cassette of any model version."""
        root = getattr(self.session.store, "root", None)
        return None if root is None or holds_subdirectory(root) else str(root)

    def _refused(self, rk: RequestKey) -> tuple[str, str] | None:
        """Why a recording did not keep this request's answer, and what keeps it, when one said so."""
        refusals = getattr(self.session.store, "refusals", None)
        return refusals.read(rk.key) if refusals is not None else None

    def _nearest(self, rk: RequestKey) -> tuple[str | None, list[str]]:
        """The stored request a miss names as closest, and what it differs in. One call too
        many of a request in a sequence=True test has the answers of the calls before it: the
        last of those is named, with the call count as the difference (any other stored
        request with the same body would say "query or API-version headers", which misleads)."""
        from ..diagnose import closest

        store = self.session.store
        if rk.occurrence > 1:
            before = sequenced(rk.unsequenced, rk.occurrence - 1)
            try:
                earlier = store.get(before, rk.model_version)
            except LLMCacheError:  # a damaged cassette of the call before: named by its own miss
                earlier = None
            if earlier is not None:
                count = (f"call count (this is call {rk.occurrence} of this request in a test marked "
                         f"sequence=True; {rk.occurrence - 1} were recorded)")
                return store.location(before, rk.model_version), [count]
        return closest(store, rk, self.rules)

    def _stale(self, rk: RequestKey, entry: Entry, ttl_given: timedelta | None) -> None:
        """List a cassette past its TTL; under ``llm_cache_stale = fail``, refuse it."""
        __tracebackhide__ = True
        session = self.session
        fail = session.settings.stale == "fail"
        age = (session.clock() - entry.recorded_at).total_seconds()
        ttl = ttl_given.total_seconds() if ttl_given is not None else None
        location = session.store.location(rk.key, rk.model_version)
        session.stats.add_stale(StaleUse(self.test_id, rk.key, location, age, ttl, failed=fail))
        if fail:
            session.stats.bump(self.stats, "stale")  # refused, not served: stale, never a hit
            session.stats.bump(self.stats, "refused")  # a request all the same: in the hit rate's count
            session.stats.use(rk.key, session.clock(), hit=False)  # the test's own cassette, not unused
            raise StaleCassette(path=location, age_seconds=age, ttl_seconds=ttl or 0.0, test_id=self.test_id,
                                own_ttl=ttl_given != session.settings.ttl)

    def used(self, key: str, model_version: str, location: str | None = None) -> None:
        """List the cassette of ``key`` as used by this scope; its location is worked out
        only the first time (a hit must not build a path it has listed already)."""
        # A long-lived scope (the library's) must not grow without bound.
        if key in self._seen or len(self._seen) >= MAX_CASSETTES_LISTED:
            return
        self._seen.add(key)
        self.cassettes.append(location or self.session.store.location(key, model_version))

    def close(self) -> None:
        """At the end of the test: keep what finished but was never closed, release the locks
        of requests that went upstream and never came back."""
        settle_dropped()
        for flight in list(self._open):
            flight.settle()


def _shown_path(rk: RequestKey, request: Request | None) -> str:
    """``rk``'s path as a message or a report shows it: a secret in it redacted."""
    from ..redact import redact_shown

    if request is None:
        return redact_shown(rk.path)
    return redact_shown(rk.path, request.headers, request.url)
