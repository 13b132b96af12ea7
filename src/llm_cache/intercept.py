"""The vcrpy seam: vcrpy's transport patches, our O(1) lookup.

vcrpy's stubs (httpx, httpx2, requests/urllib3, aiohttp, ...) talk to a
cassette through five calls: ``can_play_response_for``, ``play_response``,
``write_protected``, ``filter_request`` and ``append``. ``ScopeCassette``
answers them from a ``Scope``: a dict-like lookup by key instead of vcrpy's
scan over every stored interaction, a write per recorded response instead of
one at exit, and ``CacheMiss`` instead of vcrpy's generic error.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import ModuleType
from typing import Any

import vcr.patch
from vcr.cassette import Cassette, CassetteContextDecorator
from vcr.record_mode import RecordMode

from .cassette import Entry
from .modes import Mode
from .session import HTTPRequest, Scope

__all__ = ["ScopeCassette", "intercept"]


class ScopeCassette(Cassette):  # type: ignore[misc]
    """A vcrpy cassette that delegates every question to a Scope."""

    def __init__(self, path: str, scope: Scope, **kwargs: Any) -> None:
        super().__init__(path, record_mode=RecordMode.NEW_EPISODES, **kwargs)
        self.scope = scope

    def _load(self) -> None:
        """Nothing to load: entries are read by key when a request asks for one."""

    def _save(self, force: bool = False) -> None:
        """Nothing to save: each recorded response was written when it arrived."""

    def can_play_response_for(self, request: Any) -> bool:
        __tracebackhide__ = True
        return self.scope.can_serve(request)

    def play_response(self, request: Any) -> dict[str, Any]:
        return self.scope.serve(request)

    @property
    def write_protected(self) -> bool:
        return self.scope.mode is Mode.REPLAY

    def filter_request(self, request: Any) -> Any:
        # vcrpy asks this only of write-protected cassettes, right before it
        # would raise its own error for an unplayable request: raise ours.
        __tracebackhide__ = True
        if self.scope.mode is Mode.REPLAY:
            self.scope.refuse(request)
        return request

    def append(self, request: Any, response: Any) -> None:
        self.scope.record(request, response)

    def __len__(self) -> int:
        return 0

    def __contains__(self, request: Any) -> bool:
        return self.scope.can_serve(request)


# The transports the openai and anthropic SDKs use, and the originals vcrpy saved.
_FAST_PATHS = (
    ("httpx", "_HttpxHttpTransport_handle_request", "_HttpxAsyncHttpTransport_handle_async_request"),
    ("httpx2", "_Httpx2HttpTransport_handle_request", "_Httpx2AsyncHttpTransport_handle_async_request"),
)


def _fast_patches(scope: Scope) -> list[tuple[Any, str, Callable[..., Any]]]:
    """Patches for httpx's and httpx2's HTTP transports that skip vcrpy's generic request
    and response objects: a hit goes from the transport's request to the cached bytes.
    Given to vcrpy as ``custom_patches``, so they replace its own stubs for these two
    methods and are undone with the rest."""
    patches = []
    for name, sync_original, async_original in _FAST_PATHS:
        real_sync = getattr(vcr.patch, sync_original, None)
        real_async = getattr(vcr.patch, async_original, None)
        if real_sync is None or real_async is None:
            continue
        module = importlib.import_module(name)
        patches.append((module.HTTPTransport, "handle_request", _sync_stub(scope, module, real_sync)))
        patches.append((module.AsyncHTTPTransport, "handle_async_request", _async_stub(scope, module, real_async)))
    return patches


def played_response(httpx: ModuleType, entry: Entry) -> Any:
    """The httpx/httpx2 response that replays ``entry``."""
    return httpx.Response(entry.status, headers=entry.header_items(), stream=httpx.ByteStream(entry.response_bytes()))


def recorded_response(response: Any, raw: bytes) -> dict[str, Any]:
    """An httpx/httpx2 response and its body bytes in the form ``Scope.record`` takes."""
    headers: dict[str, list[str]] = {}
    for key, value in response.headers.multi_items():
        headers.setdefault(key.lower(), []).append(value)
    return {"status": {"code": response.status_code}, "headers": headers, "body": {"string": raw}}


def _sync_stub(scope: Scope, httpx: ModuleType, real: Callable[..., Any]) -> Callable[..., Any]:
    def handle_request(transport: Any, request: Any) -> Any:
        __tracebackhide__ = True
        shaped = HTTPRequest(request.method, str(request.url), request.read(), request.headers)
        if scope.can_serve(shaped):
            return played_response(httpx, scope.serve_entry(shaped))
        if scope.mode is Mode.REPLAY:
            scope.refuse(shaped)
        try:
            response = real(transport, request)
            # read it all before recording, as vcrpy does: a stream the test reads only
            # partly is still kept whole
            raw = b"".join(response.stream)
        except BaseException:
            scope.abandon(shaped)
            raise
        with suppress(Exception):
            response.stream.close()
        response.stream = httpx.ByteStream(raw)
        scope.record(shaped, recorded_response(response, raw))
        return response

    return handle_request


def _async_stub(scope: Scope, httpx: ModuleType, real: Callable[..., Any]) -> Callable[..., Any]:
    async def handle_async_request(transport: Any, request: Any) -> Any:
        __tracebackhide__ = True
        shaped = HTTPRequest(request.method, str(request.url), await request.aread(), request.headers)
        if scope.can_serve(shaped):
            return played_response(httpx, scope.serve_entry(shaped))
        if scope.mode is Mode.REPLAY:
            scope.refuse(shaped)
        try:
            response = await real(transport, request)
            raw = b"".join([chunk async for chunk in response.stream])
        except BaseException:
            scope.abandon(shaped)
            raise
        with suppress(Exception):
            await response.stream.aclose()
        response.stream = httpx.ByteStream(raw)
        scope.record(shaped, recorded_response(response, raw))
        return response

    return handle_async_request


@contextmanager
def intercept(scope: Scope) -> Iterator[Scope]:
    """Patch the HTTP clients vcrpy knows for the duration, answering from ``scope``."""
    if scope.mode is Mode.OFF:
        yield scope
        return
    label = str(scope.session.store).replace(" ", "")
    try:
        with CassetteContextDecorator.from_args(
            ScopeCassette, path=label, scope=scope, custom_patches=tuple(_fast_patches(scope))
        ):
            yield scope
    finally:
        scope.close()
