"""The key's recording lock, across threads, tasks and processes: whoever holds it goes
upstream and records; the others wait, then serve what it wrote.

``CacheSession`` takes these methods from ``KeyLocks``: ``claim`` before a request goes
upstream (``aclaim`` on an event loop, where a lock held elsewhere is asked for again
with the loop running), ``try_claim`` for a background refresh, which never waits
(``atry_claim`` in a task, after ``reserve``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from ..key import RequestKey
from ..modes import Found, Mode
from ..stats import Counts

if TYPE_CHECKING:
    from ..cassette import Entry
    from ..settings import Settings
    from ..stores import Store
    from ..stores.protocol import AsyncLock, AsyncSide, Lock

__all__ = ["LOCK_POLL", "KeyLocks", "running_loop"]

log = logging.getLogger("llm_cache")

# How often a task of an event loop asks again for a key's lock that is held elsewhere,
# unless the store says (``lock_poll``).
LOCK_POLL = 0.02


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None (none, or another async library's)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _in_event_loop() -> bool:
    return running_loop() is not None


def _not_locked(rk: RequestKey, waited: float, exc: BaseException) -> None:
    log.warning("could not lock %s within %g s (%s); recording without the lock", rk.prefix, waited, exc)


class KeyLocks:
    """The recording locks of a session: what ``CacheSession.__init__`` sets up below."""

    store: Store
    settings: Settings
    remote: bool
    _lock: threading.Lock
    # keys this process is recording now -> how many recorders; and, per thread, the keys
    # that thread holds (a thread-local object, never a reusable thread id)
    _inflight: dict[str, int]
    # keys reserved for a refresh behind whose lock is not taken yet (``reserve``) -> the
    # event loop of the task that will ask for it (None: a thread asks at once)
    _refreshing: dict[str, asyncio.AbstractEventLoop | None]
    _held: threading.local

    @property
    def aio(self) -> AsyncSide | None:
        """The store's side for an event loop's tasks, when it has one (each round trip an
        await): asked each time, since a store reached later (``stores.later``) gains one."""
        return getattr(self.store, "aio", None)

    if TYPE_CHECKING:  # CacheSession's

        def find(
            self, rk: RequestKey, mode: Mode, ttl: timedelta | None, counts: Counts, reread: bool = False
        ) -> tuple[Found, Entry | None]: ...

        async def afind(
            self, rk: RequestKey, mode: Mode, ttl: timedelta | None, counts: Counts, reread: bool = False
        ) -> tuple[Found, Entry | None]: ...

    def try_claim(self, key: str) -> Release | None:
        """The key's recording lock if it is free now (in this process and every other),
        else None: one background refresh per key, and none waits for another."""
        if not self.reserve(key):
            return None
        lock: Lock = self.store.lock(key)
        try:
            lock.acquire(timeout=0)
        except Exception:  # noqa: BLE001 - held elsewhere, or a store without working locks
            self.unreserve(key)
            return None
        return self._reserved_held(key, lock)

    def reserve(self, key: str) -> bool:
        """Mark ``key`` as about to be refreshed by this process, unless this process records,
        refreshes or is about to refresh it already (False): ``try_claim``'s first step, and
        ``atry_claim``'s, taken before the task that refreshes starts. A reservation is not
        the lock: ``claim`` and ``aclaim`` take no key as this process's own for it. Whoever
        reserved gives it back with ``unreserve``, unless it hands it to ``atry_claim``."""
        loop = running_loop()
        with self._lock:
            if key in self._inflight:
                return False
            if key in self._refreshing:
                owner = self._refreshing[key]
                if owner is None or not owner.is_closed():
                    return False
                # reserved by a task of a loop closed before the task ran: nothing will give it back
            self._refreshing[key] = loop
            return True

    def unreserve(self, key: str) -> None:
        with self._lock:
            self._refreshing.pop(key, None)

    async def atry_claim(self, key: str) -> Release | None:
        """``try_claim`` for a task of an event loop, of a key it ``reserve``d: the lock is
        asked for once, through the store's ``aio`` side when it has one (an await, not a
        round trip on the loop). None, the reservation given back, when it is held elsewhere."""
        aio = self.aio
        try:
            lock: Lock | AsyncLock = self.store.lock(key) if aio is None else aio.lock(key)
            if aio is None:
                lock.acquire(timeout=0)  # type: ignore[call-arg]
                got = True
            else:
                got = await lock.acquire()  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - held elsewhere, or a store without working locks
            got = False
        except BaseException:  # cancelled: the aio lock gives back what it may have taken
            self.unreserve(key)
            raise
        if not got:
            self.unreserve(key)
            return None
        return self._reserved_held(key, lock)

    def _reserved_held(self, key: str, lock: Lock | AsyncLock) -> Release:
        """The reservation of ``key`` becomes a holder: its lock is taken."""
        with self._lock:
            self._refreshing.pop(key, None)
            self._inflight[key] = self._inflight.get(key, 0) + 1
        return Release(self, key, lock, set())

    def lock_wait(self, request_timeout: float | None) -> float:
        """How long a recorder waits for another holder of its key: the lock timeout
        setting, or less when the request's own timeout is shorter."""
        limit = self.settings.lock_timeout
        if request_timeout is not None and request_timeout >= 0:
            return min(limit, request_timeout)
        return limit

    def claim(
        self, rk: RequestKey, mode: Mode, ttl: timedelta | None, counts: Counts, wait: float
    ) -> tuple[Callable[[], None] | None, Found, Entry | None]:
        """Take the key's lock before going upstream, then look again.

        Whoever holds the lock records; the others wait, then find the cassette
        it wrote and serve it. Returns what releases the lock (None: not held),
        and what the second look found. A lock left by a killed process is released
        by the kernel, so it never blocks a later run.
        """
        lock: Lock = self.store.lock(rk.key)
        held = self._thread_keys()
        # A thread asking again for a key it is recording itself, or a task of an event
        # loop whose process holds the key (the holder must finish on this very loop),
        # goes upstream without the lock: a duplicate call, never a deadlock.
        mine = rk.key in held or (rk.key in self._inflight and _in_event_loop())
        timeout = 0.0 if mine else wait
        try:
            lock.acquire(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - a Timeout, or a store without working locks
            if timeout:
                _not_locked(rk, timeout, exc)
            release = None
        else:
            release = self._holding(rk.key, lock, held)
        return self._look_again(rk, mode, ttl, counts, release)

    async def aclaim(
        self, rk: RequestKey, mode: Mode, ttl: timedelta | None, counts: Counts, wait: float
    ) -> tuple[Callable[[], None] | None, Found, Entry | None]:
        """``claim`` for an event loop: a lock held elsewhere (another process recording the
        key) is asked for again every ``LOCK_POLL`` seconds, the loop running meanwhile,
        instead of waited for on the loop. A task of this process never waits: the holder is
        this loop's own task (the gate lets only it through) or a thread of this process."""
        aio = self.aio
        lock: Lock | AsyncLock = self.store.lock(rk.key) if aio is None else aio.lock(rk.key)
        held = self._thread_keys()
        mine = rk.key in held or rk.key in self._inflight
        deadline = time.monotonic() + (0.0 if mine else wait)
        release = None
        while True:
            try:
                if aio is None:
                    lock.acquire(timeout=0)  # type: ignore[call-arg]
                elif not await lock.acquire():  # type: ignore[misc]
                    raise TimeoutError(f"lock {rk.prefix} is held")
            except TimeoutError as exc:  # held elsewhere (filelock's Timeout is one too)
                if time.monotonic() >= deadline:
                    if not mine and wait:
                        _not_locked(rk, wait, exc)
                    break
                await asyncio.sleep(getattr(self.store, "lock_poll", LOCK_POLL))  # the Redis store has its own
            except Exception:  # noqa: BLE001 - a store without working locks: recorded without
                break
            else:
                release = self._holding(rk.key, lock, held)
                break
        if aio is not None:
            return await self._alook_again(rk, mode, ttl, counts, release)
        if release is not None and self.remote:  # the lock was a round trip; the look is next
            try:
                await asyncio.sleep(0)
            except BaseException:
                release()
                raise
        return self._look_again(rk, mode, ttl, counts, release)

    async def _alook_again(
        self, rk: RequestKey, mode: Mode, ttl: timedelta | None, counts: Counts, release: Release | None
    ) -> tuple[Release | None, Found, Entry | None]:
        """``_look_again`` through the store's ``aio`` side."""
        try:
            found, entry = await self.afind(rk, mode, ttl, counts, reread=True)
        except BaseException:
            if release is not None:
                release()
            raise
        return release, found, entry

    def _look_again(
        self, rk: RequestKey, mode: Mode, ttl: timedelta | None, counts: Counts, release: Callable[[], None] | None
    ) -> tuple[Callable[[], None] | None, Found, Entry | None]:
        """The second look, under the key's lock when ``release`` holds it (released if the look fails)."""
        try:
            found, entry = self.find(rk, mode, ttl, counts, reread=True)
        except BaseException:
            if release is not None:
                release()
            raise
        return release, found, entry

    def _thread_keys(self) -> set[str]:
        keys: set[str] | None = getattr(self._held, "keys", None)
        if keys is None:
            keys = self._held.keys = set()
        return keys

    def _holding(self, key: str, lock: Lock | AsyncLock, held: set[str]) -> Release:
        with self._lock:
            self._inflight[key] = self._inflight.get(key, 0) + 1
        held.add(key)
        return Release(self, key, lock, held)


class Release:
    """Gives a key's lock back, once: called, or awaited (``arelease``) when a task took the
    lock through the store's ``aio`` side (a cancelled await gives it back blocking)."""

    __slots__ = ("done", "held", "key", "lock", "owner")

    def __init__(self, owner: KeyLocks, key: str, lock: Lock | AsyncLock, held: set[str]) -> None:
        self.owner, self.key, self.lock, self.held = owner, key, lock, held
        self.done = False

    def __call__(self) -> None:
        if self._forget():
            self.lock.release()

    async def arelease(self) -> None:
        arelease = getattr(self.lock, "arelease", None)
        if arelease is None:
            self()
            return
        if self.done:
            return
        try:
            await arelease()
        except BaseException:
            self()
            raise
        self._forget()

    def _forget(self) -> bool:
        """Not held any more by this process; False when it was given back already."""
        if self.done:
            return False
        self.done = True
        self.held.discard(self.key)
        owner = self.owner
        with owner._lock:
            left = owner._inflight.get(self.key, 1) - 1
            if left:
                owner._inflight[self.key] = left
            else:
                owner._inflight.pop(self.key, None)
        return True
