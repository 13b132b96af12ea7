"""One request's way through the cache: served, or forwarded and recorded, or abandoned.

A ``Flight`` is what ``Scope.begin`` decided. The adapter serves ``response()``
when ``served``; when ``forwards`` it calls the API and hands the answer to a
``Recording``, chunk by chunk as the caller reads them, so a stream stays live;
``abandon()`` on any failure. Whatever happens, the flight's lock and gate are
released exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from ..cassette import Entry
from ..exchange import Request, Response
from ..key import RequestKey
from ..modes import Action, Found
from ..providers import stream_ended, worth_draining
from .controls import NONE as NO_CONTROLS

if TYPE_CHECKING:
    from .scope import Scope

__all__ = ["DROPPED", "Flight", "Recording", "settle_dropped"]

log = logging.getLogger("llm_cache")

#: Answers whose caller let them go unclosed, queued by a finalizer (which may run inside
#: any of the cache's locks, so it does nothing else) for the next safe point to settle.
DROPPED: queue.SimpleQueue[tuple[Recording, Any]] = queue.SimpleQueue()


def settle_dropped() -> None:
    """Settle what finalizers queued: kept when its provider's last event was read, else
    abandoned, its lock released; the upstream stream closed. Called where no lock of the
    cache is held (a request's start, a scope's end, ``stats()``); costs nothing when empty."""
    while not DROPPED.empty():
        try:
            recording, upstream = DROPPED.get_nowait()
        except queue.Empty:
            return
        try:
            if not recording.over:
                recording.flight.settle()
        except Exception as exc:  # noqa: BLE001 - no caller to tell: said, and the next one settled
            log.warning("llm_cache: an answer never closed could not be kept: %s", str(exc).splitlines()[0])
        finally:
            with suppress(Exception):
                upstream.close()


async def given_back(release: Callable[[], None]) -> None:
    """Call ``release``, or await its ``arelease`` when it has one (a key's lock an event
    loop's task took through the store's ``aio`` side, see ``claims.Release``)."""
    arelease = getattr(release, "arelease", None)
    if arelease is None:
        release()
    else:
        await arelease()


class Flight:
    """What was found for one request, and what to do with it."""

    __slots__ = (
        "_done", "_finished", "_recording", "action", "controls", "entry", "found", "request", "revalidate", "rk",
        "scope", "started", "stored", "unneeded",
    )

    def __init__(
        self, scope: Scope, rk: RequestKey | None, found: Found, action: Action, entry: Entry | None,
        request: Request,
    ) -> None:
        self.scope = scope
        self.rk = rk
        self.found = found
        self.action = action
        self.entry = entry
        self.request = request
        self.started = time.perf_counter()
        self._done: list[Callable[[], None]] = []
        self._finished = False
        self._recording: Recording | None = None
        self.controls = NO_CONTROLS
        # served from an expired entry within stale_while_revalidate: refresh it behind
        self.revalidate = False
        # the answer was written (record() kept it)
        self.stored = False
        # a lock an event loop's task took that, looked at again, is not needed: the task
        # gives it back with an await (Scope.abegin)
        self.unneeded: Callable[[], None] | None = None

    @property
    def status(self) -> str:
        """What the cache did, for ``x-llm-cache-status``: hit, stale, miss, refresh or bypass."""
        action = self.action
        if action is Action.SERVE:
            return "hit"
        if action is Action.SERVE_STALE:
            return "stale"
        if action is Action.REFRESH or (action is Action.RECORD and self.controls.no_cache):
            return "refresh"
        if action is Action.RECORD:
            return "miss"
        return "bypass"

    @property
    def served(self) -> bool:
        """Answered from the cache: give the client ``response()``."""
        return self.action is Action.SERVE or self.action is Action.SERVE_STALE

    @property
    def forwards(self) -> bool:
        """Sent to the API and recorded when its answer is complete."""
        return self.action is Action.RECORD or self.action is Action.REFRESH

    @property
    def passes(self) -> bool:
        """Not the cache's business: sent to the API, nothing kept."""
        return self.action is Action.PASS

    def on_done(self, callback: Callable[[], None]) -> None:
        self._done.append(callback)

    # -- serve -----------------------------------------------------------------

    def response(self) -> Response:
        """The cached answer, counted as a hit."""
        entry = self.entry
        assert entry is not None and self.served, "response() of a flight that is not served"
        scope = self.scope
        session = scope.session
        stats = session.stats
        stats.bump(scope.stats, "hits")
        if self.action is Action.SERVE_STALE:
            stats.bump(scope.stats, "stale")
            if self.revalidate:
                stats.stale_served_bump()
        if stats.listeners:
            stats.emit("hit", entry.model_version)
            if self.action is Action.SERVE_STALE:
                stats.emit("stale_served", entry.model_version)
        usage = entry.usage
        if usage:
            stats.add_tokens(entry.model_version, usage.get("input_tokens", 0), usage.get("output_tokens", 0))
        stats.use(entry.key, session.clock(), hit=True)
        scope.used(entry.key, entry.model_version)
        session.counted()
        offsets = entry.offsets_ms if session.settings.replay_timing == "recorded" else None
        return Response(entry.status, entry.header_items(), entry.response_chunks(), offsets)

    # -- forward ---------------------------------------------------------------

    def recording(self, status: int, headers: Sequence[tuple[str, str]]) -> Recording:
        """What the adapter feeds the API's answer into, chunk by chunk."""
        self._recording = Recording(self, status, headers)
        return self._recording

    def settle(self) -> None:
        """At the end of its scope: an answer whose stream delivered its provider's last event
        but was never closed is kept (nothing but its terminator can be missing); anything
        else still open is abandoned."""
        recording = self._recording
        if recording is not None and recording.keepable():
            recording.end()
        else:
            self._let_go(recording)
            self.abandon()

    async def asettle(self) -> None:
        """``settle`` for an event loop: the write and the lock's release awaited."""
        recording = self._recording
        if recording is not None and recording.keepable():
            await recording.aend()
        else:
            self._let_go(recording)
            await self.aabandon()

    def _let_go(self, recording: Recording | None) -> None:
        """A stream still open at its scope's end, or let go unclosed, and not keepable: over,
        and said as closed early."""
        if recording is not None and not recording.over:
            recording.over = True
            self.closed_early()

    def closed_early(self) -> None:
        """Its caller closed (or let go of) the stream before the provider's last event: not
        kept, counted ``closed early`` and said, so that replay's miss does not say "record it"."""
        if self.forwards and not self.controls.no_store and not self._finished:
            from .record import closed_early

            closed_early(self)

    def record(
        self, status: int, headers: Sequence[tuple[str, str]], body: bytes,
        arrivals: Sequence[tuple[int, float]] = (),
    ) -> None:
        """Keep the complete answer (when it may be kept), then release."""
        if self._finished:
            return
        try:
            self._keep(status, headers, body, arrivals)
        finally:
            self._finish()
            self.scope.session.counted()

    async def arecord(
        self, status: int, headers: Sequence[tuple[str, str]], body: bytes,
        arrivals: Sequence[tuple[int, float]] = (),
    ) -> None:
        """``record`` for an event loop. With a remote store the write and the lock's release
        are two round trips: awaited through the store's ``aio`` side when it has one, else
        made on the loop with its other tasks run between them."""
        session = self.scope.session
        if self._finished or not session.remote:
            self.record(status, headers, body, arrivals)
            return
        if session.aio is None:
            try:
                self._keep(status, headers, body, arrivals)
                if self.stored:  # the write was a round trip; the release is the next
                    await asyncio.sleep(0)
            finally:
                self._finish()
                session.counted()
            return
        try:
            if self.forwards and not self.controls.no_store:
                from .record import akeep

                await akeep(self, status, headers, body, arrivals)
            else:
                self._keep(status, headers, body, arrivals)
        finally:
            try:
                await self._afinish()
            finally:
                session.counted()

    def _keep(
        self, status: int, headers: Sequence[tuple[str, str]], body: bytes, arrivals: Sequence[tuple[int, float]],
    ) -> None:
        if self.forwards and self.controls.no_store:
            assert self.rk is not None
            self.scope.session.stats.not_stored(self.scope.stats, "no-store", self.rk.model_version)
            from .record import remember_no_store

            remember_no_store(self)
        elif self.forwards:
            from .record import keep

            # on the caller's thread, also in an event loop: handed to a worker thread, the
            # write's CPU work fought the loop for the GIL, and a remote store's round trips
            # made every hit wait (benchmarks/bench_load.py)
            keep(self, status, headers, body, arrivals)

    # -- stale on purpose ---------------------------------------------------------

    def can_fall_back(self) -> bool:
        """A refresh of an expired entry still within ``stale_if_error`` past its TTL: when the
        API fails (an error, a timeout, 429 or 5xx) the entry is served instead."""
        return (
            self.action is Action.REFRESH and self.entry is not None and not self._finished
            and self.scope.session.within_sie(self.entry, self.scope.ttl if self.controls.ttl is ... else self.controls.ttl)
        )

    def fall_back(self, why: str) -> Response:
        """Serve the expired entry in place of a failed refresh, with a warning; releases the lock."""
        from ..errors import LLMCacheWarning, warn

        assert self.entry is not None
        warn(LLMCacheWarning(
            f"serving the expired answer of {self.entry.key[:12]} (stale_if_error): the API failed: {why}"
        ))
        self._finish()
        self.action = Action.SERVE_STALE
        self.scope.session.stats.stale_served_bump()
        return self.response()

    def abandon(self) -> None:
        """The request failed or its answer was dropped before the end: keep nothing, release."""
        self._finish()

    async def aabandon(self) -> None:
        """``abandon`` for a task: a lock taken through the store's ``aio`` side is given back by an await."""
        await self._afinish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        callbacks, self._done = self._done, []
        for callback in reversed(callbacks):
            callback()

    async def _afinish(self) -> None:
        """``_finish`` with a lock taken through the store's ``aio`` side given back by an
        await; when that await is cancelled, everything left is done at once."""
        if self._finished:
            return
        self._finished = True
        pending, self._done = self._done[::-1], []
        try:
            while pending:
                await given_back(pending.pop(0))
        finally:
            for callback in pending:
                callback()


class Recording:
    """An answer on its way from the API to the caller: chunks kept as they pass.

    ``feed`` each chunk the caller receives; ``end`` when the stream is exhausted;
    ``closed`` when the caller closes it, which returns True when the rest should be
    read and kept (the provider's last event has been seen: what is left is its
    terminator) and False when the stream was dropped midway (then nothing is kept).
    """

    __slots__ = ("arrivals", "chunks", "flight", "headers", "over", "size", "status", "t0")

    def __init__(self, flight: Flight, status: int, headers: Sequence[tuple[str, str]]) -> None:
        self.flight = flight
        self.status = status
        self.headers = headers
        self.chunks: list[bytes] = []
        # (bytes received so far, milliseconds since the response began) per chunk
        self.arrivals: list[tuple[int, float]] = []
        self.size = 0
        self.t0 = time.perf_counter()
        self.over = False

    def feed(self, chunk: bytes) -> None:
        if chunk:
            self.chunks.append(chunk)
            self.size += len(chunk)
            self.arrivals.append((self.size, (time.perf_counter() - self.t0) * 1000))

    def end(self) -> None:
        if not self.over:
            self.over = True
            self.flight.record(self.status, self.headers, b"".join(self.chunks), self.arrivals)

    async def aend(self) -> None:
        """``end`` for an event loop."""
        if not self.over:
            self.over = True
            await self.flight.arecord(self.status, self.headers, b"".join(self.chunks), self.arrivals)

    def closed(self) -> bool:
        """The caller closed the stream; True when the adapter should drain it and call ``end``."""
        drain = self._drain_on_close()
        if drain is False:
            self.flight.closed_early()
            self.flight.abandon()
        return bool(drain)

    async def aclosed(self) -> bool:
        """``closed`` for an event loop: a lock taken through the store's ``aio`` side is given
        back by an await when nothing is kept."""
        drain = self._drain_on_close()
        if drain is False:
            self.flight.closed_early()
            await self.flight.aabandon()
        return bool(drain)

    def _drain_on_close(self) -> bool | None:
        """True: read the rest and keep it; False: keep nothing (now over, to be abandoned);
        None: over already."""
        if self.over:
            return None
        if worth_draining(self.chunks) or self.encoded():
            return True
        self.over = True
        return False

    def keepable(self) -> bool:
        """Not over, and worth keeping as it is when the caller goes away without closing it."""
        return not self.over and (stream_ended(self.chunks) or self.encoded())

    def encoded(self) -> bool:
        """A compressed answer that is not a stream: a client that failed to decode it closes
        it early. The rest is read and kept, or counted ``undecodable`` when it does not decode."""
        names = {name.lower(): value for name, value in self.headers}
        return bool(names.get("content-encoding")) and "event-stream" not in names.get("content-type", "")

    def failed(self) -> None:
        """Reading from the API failed midway."""
        if self._give_up():
            self.flight.abandon()

    async def afailed(self) -> None:
        """``failed`` for an event loop."""
        if self._give_up():
            await self.flight.aabandon()

    def _give_up(self) -> bool:
        """Mark the recording over; True when it was not over yet (then it is abandoned)."""
        was_over, self.over = self.over, True
        return not was_over
