"""httpx and httpx2 onto the engine: the patched transports and the library's transports.

Both go through ``handle`` (``ahandle`` for async): the request becomes an
``exchange.Request``, the scope decides, a hit is replayed event by event, and a
forwarded answer reaches the caller chunk by chunk while it is recorded. An error of
the cache leaves as the sending SDK's own kind where that SDK would retry anything
else (``sdkerrors``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import suppress
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..engine import behind
from ..engine.claims import running_loop
from ..engine.controls import STATUS_HEADER
from ..engine.flight import DROPPED
from ..engine.guard import upstream
from ..errors import LLMCacheError
from ..exchange import Request, Response
from .sdkerrors import as_sdk_error

if TYPE_CHECKING:
    from ..engine.flight import Flight, Recording
    from ..engine.scope import Scope

__all__ = ["ahandle", "handle", "played", "stream_classes", "to_request"]

log = logging.getLogger("llm_cache")


def _timeout(request: Any) -> float | None:
    """The longest the client waits for the answer, from httpx's timeout extension."""
    timeout = request.extensions.get("timeout") if hasattr(request, "extensions") else None
    if not isinstance(timeout, dict):
        return None
    values = [v for k, v in timeout.items() if k in ("connect", "read") and isinstance(v, (int, float))]
    return float(sum(values)) if values else None


def to_request(request: Any, body: bytes) -> Request:
    return Request(request.method, str(request.url), body, request.headers, _timeout(request))


def played(httpx: ModuleType, response: Response, status: str = "hit") -> Any:
    """The httpx response that replays ``response``: one chunk per recorded event, marked
    with ``x-llm-cache-status``."""
    stream = stream_classes(httpx)[0](response.chunks, response.offsets_ms)
    return httpx.Response(response.status, headers=[*response.headers, (STATUS_HEADER, status)], stream=stream)


def _tee_headers(response: Any) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.headers.multi_items()]


def _failed(response: Any) -> bool:
    """An answer that stale_if_error stands in for: rate limited or a server error."""
    code = int(response.status_code)
    return code == 429 or code >= 500


def _marked(response: Any, flight: Flight) -> Any:
    response.headers[STATUS_HEADER] = flight.status
    return response


def handle(scope: Scope, httpx: ModuleType, request: Any, forward: Callable[[], Any]) -> Any:
    """Answer one request of a sync transport through ``scope``; ``forward`` sends it upstream."""
    __tracebackhide__ = True
    try:
        return _handle(scope, httpx, request, forward)
    except LLMCacheError as exc:
        as_sdk_error(exc, request.headers)
        raise


def _handle(scope: Scope, httpx: ModuleType, request: Any, forward: Callable[[], Any]) -> Any:
    __tracebackhide__ = True
    flight = scope.begin(to_request(request, request.read()))
    if flight.served:
        answer = played(httpx, flight.response(), flight.status)
        if flight.revalidate:
            behind.revalidate(scope, flight, lambda: _fetched(forward()))
        return answer
    # what goes upstream from here was seen: the network guard lets it through
    if flight.passes:
        with upstream():
            return _marked(forward(), flight)
    try:
        with upstream():
            response = forward()
    except Exception as exc:
        if flight.can_fall_back():
            return played(httpx, flight.fall_back(f"{type(exc).__name__}: {exc}"), "stale")
        flight.abandon()
        raise
    except BaseException:
        flight.abandon()
        raise
    if _failed(response) and flight.can_fall_back():
        response.close()
        return played(httpx, flight.fall_back(f"HTTP {response.status_code}"), "stale")
    content = getattr(response, "_content", None)
    if isinstance(content, bytes):  # read already (a MockTransport's response): keep it now
        flight.record(response.status_code, _tee_headers(response), content)
        return _marked(response, flight)
    recording = flight.recording(response.status_code, _tee_headers(response))
    response.stream = stream_classes(httpx)[1](recording, response.stream)
    return _marked(response, flight)


def _fetched(response: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    try:
        return response.status_code, _tee_headers(response), response.read()
    finally:
        response.close()


async def _afetched(response: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    try:
        return response.status_code, _tee_headers(response), await response.aread()
    finally:
        await response.aclose()


async def ahandle(scope: Scope, httpx: ModuleType, request: Any, forward: Callable[[], Awaitable[Any]]) -> Any:
    """The asynchronous twin of ``handle``."""
    __tracebackhide__ = True
    try:
        return await _ahandle(scope, httpx, request, forward)
    except LLMCacheError as exc:
        as_sdk_error(exc, request.headers)
        raise


async def _ahandle(scope: Scope, httpx: ModuleType, request: Any, forward: Callable[[], Awaitable[Any]]) -> Any:
    __tracebackhide__ = True
    flight = await scope.abegin(to_request(request, await request.aread()))
    if flight.served:
        answer = played(httpx, flight.response(), flight.status)
        if flight.revalidate:

            async def fetch() -> tuple[int, list[tuple[str, str]], bytes]:
                return await _afetched(await forward())

            behind.arevalidate(scope, flight, fetch)
        return answer
    if flight.passes:
        with upstream():
            return _marked(await forward(), flight)
    try:
        with upstream():
            response = await forward()
    except Exception as exc:
        if flight.can_fall_back():
            return played(httpx, flight.fall_back(f"{type(exc).__name__}: {exc}"), "stale")
        await flight.aabandon()  # a lock taken by an await is given back by one
        raise
    except BaseException:
        await flight.aabandon()
        raise
    if _failed(response) and flight.can_fall_back():
        await response.aclose()
        return played(httpx, flight.fall_back(f"HTTP {response.status_code}"), "stale")
    content = getattr(response, "_content", None)
    if isinstance(content, bytes):
        await flight.arecord(response.status_code, _tee_headers(response), content)
        return _marked(response, flight)
    recording = flight.recording(response.status_code, _tee_headers(response))
    response.stream = stream_classes(httpx)[2](recording, response.stream)
    return _marked(response, flight)


# -- a forwarded answer the caller lets go without closing it ---------------------
#
# An SDK call whose caller never reads nor closes its stream (an exception between the
# call and the loop over it) leaves nothing to tell the cache. The tee's finalizer does, as
# the garbage collector frees it: the flight is settled as its scope's end would (kept when
# its provider's last event was seen, else abandoned), so the key's lock is not held until
# the cache is closed. A finalizer runs wherever a collection starts, inside the cache's own
# locks too, so it does no work itself: on an event loop it hands the settling to a task of
# that loop (which awaits the release); otherwise it queues it for the next safe point
# (``flight.settle_dropped``: the next request's start, the scope's end, ``stats()``).


def _let_go(recording: Recording, upstream: Any) -> None:
    DROPPED.put((recording, upstream))


def _alet_go(loop: asyncio.AbstractEventLoop | None, recording: Recording, upstream: Any) -> None:
    if loop is not None:
        with suppress(RuntimeError):  # its loop is closed: nothing left to await on
            loop.call_soon_threadsafe(_settle_on, loop, recording, upstream)
            return
    DROPPED.put((recording, upstream))


def _settle_on(loop: asyncio.AbstractEventLoop, recording: Recording, upstream: Any) -> None:
    task = loop.create_task(_asettle(recording, upstream))
    _SETTLING.add(task)
    task.add_done_callback(_SETTLING.discard)


_SETTLING: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks


async def _asettle(recording: Recording, upstream: Any) -> None:
    try:
        if not recording.over:
            await recording.flight.asettle()
    except Exception as exc:  # noqa: BLE001 - a finalizer's task has no caller to tell
        log.warning("llm_cache: an answer never closed could not be kept: %s", str(exc).splitlines()[0])
    finally:
        with suppress(Exception):
            await upstream.aclose()


@functools.cache
def stream_classes(httpx: ModuleType) -> tuple[type, type, type]:
    """(replayed, sync tee, async tee) stream classes for one httpx module."""

    class Replayed(httpx.SyncByteStream, httpx.AsyncByteStream):  # type: ignore[misc,name-defined]
        """A cached body, chunk by chunk; at the recorded pace when offsets are given."""

        def __init__(self, chunks: Any, offsets: Any) -> None:
            self.chunks = chunks
            self.offsets = offsets

        def __iter__(self) -> Iterator[bytes]:
            if self.offsets is None:
                yield from self.chunks
                return
            t0 = time.perf_counter()
            for chunk, at in zip(self.chunks, self.offsets):
                wait = at / 1000 - (time.perf_counter() - t0)
                if wait > 0:
                    time.sleep(wait)
                yield chunk

        async def __aiter__(self) -> AsyncIterator[bytes]:
            if self.offsets is None:
                for chunk in self.chunks:
                    yield chunk
                return
            t0 = time.perf_counter()
            for chunk, at in zip(self.chunks, self.offsets):
                wait = at / 1000 - (time.perf_counter() - t0)
                if wait > 0:
                    await asyncio.sleep(wait)
                yield chunk

    class Tee(httpx.SyncByteStream):  # type: ignore[misc,name-defined]
        """The API's answer as it arrives, kept for the recording. Iterating twice continues
        the one underlying read (an SDK that drains a stream again gets the rest, not a
        fresh copy that would reset what was kept)."""

        def __init__(self, recording: Recording, upstream: Any) -> None:
            self.recording = recording
            self.upstream = upstream
            self.source: Iterator[bytes] | None = None
            self.reader: Iterator[bytes] | None = None
            self.gone = weakref.finalize(self, _let_go, recording, upstream)
            self.gone.atexit = False  # at exit the cache's close settles what is left

        def __iter__(self) -> Iterator[bytes]:
            if self.reader is None:
                self.reader = self._read()
            return self.reader

        def _read(self) -> Iterator[bytes]:
            if self.source is None:
                self.source = iter(self.upstream)
            try:
                for chunk in self.source:
                    self.recording.feed(chunk)
                    yield chunk
            except GeneratorExit:  # the caller stopped reading (an SDK does at [DONE]): close() decides
                raise
            except BaseException:
                self.recording.failed()
                raise
            try:
                self.recording.end()
            except LLMCacheError as exc:  # not kept (a full disk): read inside the SDK's call
                as_sdk_error(exc, self.recording.flight.request.headers)
                raise

        def close(self) -> None:
            self.gone.detach()
            try:
                if self.recording.closed():
                    if self.source is None:
                        self.source = iter(self.upstream)
                    for chunk in self.source:
                        self.recording.feed(chunk)
                    self.recording.end()
            except Exception:  # noqa: BLE001 - a drain that fails keeps nothing; close anyway
                self.recording.failed()
            finally:
                self.upstream.close()

    class AsyncTee(httpx.AsyncByteStream):  # type: ignore[misc,name-defined]
        """The asynchronous twin of ``Tee``."""

        def __init__(self, recording: Recording, upstream: Any) -> None:
            self.recording = recording
            self.upstream = upstream
            self.source: AsyncIterator[bytes] | None = None
            self.reader: AsyncIterator[bytes] | None = None
            self.gone = weakref.finalize(self, _alet_go, running_loop(), recording, upstream)
            self.gone.atexit = False

        def __aiter__(self) -> AsyncIterator[bytes]:
            if self.reader is None:
                self.reader = self._read()
            return self.reader

        async def _read(self) -> AsyncIterator[bytes]:
            if self.source is None:
                self.source = self.upstream.__aiter__()
            try:
                async for chunk in self.source:
                    self.recording.feed(chunk)
                    yield chunk
            except GeneratorExit:
                raise
            except BaseException:
                await self.recording.afailed()
                raise
            try:
                await self.recording.aend()
            except LLMCacheError as exc:
                as_sdk_error(exc, self.recording.flight.request.headers)
                raise

        async def aclose(self) -> None:
            self.gone.detach()
            try:
                if await self.recording.aclosed():
                    if self.source is None:
                        self.source = self.upstream.__aiter__()
                    async for chunk in self.source:
                        self.recording.feed(chunk)
                    await self.recording.aend()
            except Exception:  # noqa: BLE001 - a drain that fails keeps nothing; close anyway
                await self.recording.afailed()
            finally:
                await self.upstream.aclose()

    return Replayed, Tee, AsyncTee
