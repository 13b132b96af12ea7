"""Refreshing behind a served answer (``stale_while_revalidate``).

An expired entry within ``stale_while_revalidate`` past its TTL is served at once, and
one refresh of it runs in the background: a thread for a sync caller, a task of the
running loop for an async one. Only the caller that takes the key's recording lock
without waiting refreshes it (``CacheSession.try_claim``; in a task ``reserve``, then
``atry_claim``, awaited through the store's ``aio`` side): one refresh per key across
threads, tasks and processes. A refresh that fails keeps the entry as it is.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..modes import Action, Found
from .guard import upstream

if TYPE_CHECKING:
    from .flight import Flight
    from .scope import Scope

__all__ = ["arevalidate", "revalidate"]

log = logging.getLogger("llm_cache")

# status, headers and the whole body of a fresh answer
Fetched = tuple[int, list[tuple[str, str]], bytes]
# the running refresh tasks: the loop keeps only weak references to its tasks
_tasks: set[asyncio.Task[None]] = set()


def _refresh_flight(scope: Scope, served: Flight, release: Callable[[], None]) -> Flight:
    from .flight import Flight

    flight = Flight(scope, served.rk, Found.EXPIRED, Action.REFRESH, served.entry, served.request)
    flight.controls = served.controls
    flight.on_done(release)
    return flight


def _refused(flight: Flight, fetched: Fetched) -> bool:
    status = fetched[0]
    if status == 429 or status >= 500:
        log.warning("llm_cache: background refresh of %s got HTTP %s; the entry is kept", flight.rk.prefix, status)  # type: ignore[union-attr]
        return True
    return False


def _kept(flight: Flight) -> None:
    if flight.stored:
        flight.scope.session.stats.revalidated_bump()


def _failed(flight: Flight, exc: BaseException) -> None:
    log.warning("llm_cache: background refresh of %s failed (%s); the entry is kept",
                flight.rk.prefix, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)  # type: ignore[union-attr]


def revalidate(scope: Scope, served: Flight, fetch: Callable[[], Fetched]) -> threading.Thread | None:
    """Refresh ``served``'s entry in a thread; ``fetch`` sends the request upstream."""
    assert served.rk is not None
    release = scope.session.try_claim(served.rk.key)
    if release is None:
        return None  # another thread, task or process refreshes it already
    flight = _refresh_flight(scope, served, release)

    def run() -> None:
        try:
            with upstream():
                fetched = fetch()
            if _refused(flight, fetched):
                flight.abandon()
            else:
                flight.record(*fetched)
                _kept(flight)
        except BaseException as exc:  # noqa: BLE001 - logged: nobody waits for this thread
            flight.abandon()
            _failed(flight, exc)

    thread = threading.Thread(target=run, name="llm-cache-revalidate", daemon=True)
    thread.start()
    return thread


def arevalidate(scope: Scope, served: Flight, fetch: Callable[[], Awaitable[Fetched]]) -> asyncio.Task[None] | None:
    """Refresh ``served``'s entry in a task of the running loop (None when this process
    refreshes it already). The key is reserved here, so that concurrent tasks start one
    refresh; its lock is asked for in the task, awaited when the store has an ``aio`` side
    (one round trip the loop does not wait for), and given back the same way."""
    assert served.rk is not None
    session, key = scope.session, served.rk.key
    if not session.reserve(key):
        return None  # another thread or task of this process refreshes it already
    reserved = True  # until the task hands the reservation to atry_claim

    async def run() -> None:
        nonlocal reserved
        reserved = False
        release = await session.atry_claim(key)
        if release is None:
            return  # another process refreshes it
        flight = _refresh_flight(scope, served, release)
        try:
            with upstream():
                fetched = await fetch()
            if _refused(flight, fetched):
                await flight.aabandon()  # its lock given back by an await, as it was taken
            else:
                await flight.arecord(*fetched)
                _kept(flight)
        except asyncio.CancelledError:
            _kept(flight)  # cancelled after its write (the loop's turn before the release): counted
            # the loop still runs while a cancelled task unwinds (asyncio.run's shutdown
            # too): the lock goes back by an await, at once if that await is cancelled again
            await flight.aabandon()
            raise
        except Exception as exc:  # noqa: BLE001 - logged: nobody awaits this task
            _failed(flight, exc)
            await flight.aabandon()
        except BaseException:
            flight.abandon()
            raise

    def done(task: asyncio.Task[None]) -> None:
        _tasks.discard(task)
        if reserved:  # cancelled before it ran (the loop closing): the reservation is given back
            session.unreserve(key)

    coroutine = run()
    try:
        task = asyncio.get_running_loop().create_task(coroutine)
    except BaseException:
        coroutine.close()
        session.unreserve(key)
        raise
    _tasks.add(task)
    task.add_done_callback(done)
    return task
