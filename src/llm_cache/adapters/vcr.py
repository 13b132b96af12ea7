"""vcrpy's patches, entered once per process, answering from whichever scope is active.

vcrpy knows how to patch requests/urllib3, http.client, aiohttp, boto3, httplib2
and tornado; its stubs talk to a cassette through ``can_play_response_for``,
``play_response``, ``write_protected``, ``filter_request`` and ``append``.
``DispatchCassette`` answers them from ``engine.active.current()``: with no
active scope a request goes to the network and nothing is kept. httpx and httpx2
are patched with our own stubs (``adapters.httpx``) in place of vcrpy's, for
every transport vcrpy patches there.

This module imports vcrpy (and through it the HTTP clients): it is imported only
when the first scope opens.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import vcr.patch
import vcr.stubs
from vcr.cassette import Cassette, CassetteContextDecorator
from vcr.record_mode import RecordMode

from ..engine import active
from ..engine.controls import STATUS_HEADER, Controls, strip, using
from ..engine.flight import Flight
from ..engine.guard import upstream
from ..errors import LLMCacheError
from ..exchange import Request, Response
from . import httpx as httpx_adapter
from .sdkerrors import as_sdk_error

__all__ = ["install"]

_ATTR = "_llm_cache_flight"
# The flights begun during one patched call, so a call that fails releases them.
_begun: contextvars.ContextVar[list[Flight] | None] = contextvars.ContextVar("llm_cache_begun", default=None)


def _body(request: Any) -> bytes:
    body = request.body
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if hasattr(body, "read"):
        return bytes(body.read())
    if isinstance(body, Mapping) or (isinstance(body, (list, tuple)) and not _chunks(body)):
        return _aiohttp_payload(body, request.headers)
    fields = getattr(body, "_fields", None)
    if fields is not None and hasattr(body, "is_multipart"):  # an aiohttp FormData
        return _aiohttp_form(body, fields, request.headers)
    try:
        return b"".join(body)
    except TypeError:  # a body no client-neutral bytes can be made of: keyed by what it is
        return repr(body).encode("utf-8", "replace")


def _chunks(body: Sequence[Any]) -> bool:
    return all(isinstance(chunk, (bytes, bytearray)) for chunk in body)


def _aiohttp_payload(value: Any, headers: dict[str, Any]) -> bytes:
    """The bytes aiohttp sends for a ``json=`` or ``data=`` value, which vcrpy's aiohttp stub
    hands over as given (a dict, a list of pairs): JSON, or a url-encoded form. Which one
    is read from the stub's own arguments, one frame up (vcrpy keeps no trace of it); the
    content type aiohttp will add goes into ``headers``, so the request is keyed, stored
    and redacted as the API reads it."""
    as_json = True
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "new_request" and "aiohttp" in frame.f_code.co_filename:
            arguments = frame.f_locals.get("kwargs") or {}
            as_json = arguments.get("json") is not None
            break
        frame = frame.f_back  # type: ignore[assignment]
    if as_json:
        _typed(headers, "application/json")
        return json.dumps(value).encode("utf-8")
    _typed(headers, "application/x-www-form-urlencoded")
    pairs = value.items() if isinstance(value, Mapping) else value
    return urlencode([(str(k), v) for k, v in pairs], doseq=True).encode("utf-8")


_FORM_BOUNDARY = "llm-cache-aiohttp-form"


def _aiohttp_form(form: Any, fields: list[Any], headers: dict[str, Any]) -> bytes:
    """An aiohttp ``FormData`` as the bytes it sends: url-encoded, or multipart (which aiohttp
    writes only once the request goes, with a random boundary: written here with a fixed
    one), so it is keyed, stored and redacted as any form of its kind."""
    if not form.is_multipart:
        _typed(headers, "application/x-www-form-urlencoded")
        return bytes(getattr(form(), "_value", b"") or b"")
    out = []
    for options, part_headers, value in fields:
        disposition = f'form-data; name="{options.get("name", "")}"'
        if options.get("filename") is not None:
            disposition += f'; filename="{options["filename"]}"'
        lines = [f"--{_FORM_BOUNDARY}", f"Content-Disposition: {disposition}"]
        lines += [f"{k}: {v}" for k, v in (part_headers or {}).items() if k.lower() != "content-disposition"]
        if hasattr(value, "read") and hasattr(value, "seek"):
            where = value.tell()
            content = value.read()
            value.seek(where)  # aiohttp still sends the whole file
            value = content
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value or b"")
        out.append("\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + data + b"\r\n")
    headers["Content-Type"] = f"multipart/form-data; boundary={_FORM_BOUNDARY}"
    return b"".join(out) + f"--{_FORM_BOUNDARY}--\r\n".encode()


def _typed(headers: dict[str, Any], content_type: str) -> None:
    """Give ``headers`` the content type aiohttp will send, unless the caller set one."""
    if not any(str(name).lower() == "content-type" for name in headers):
        headers["Content-Type"] = content_type


def _vcr_response(response: Response) -> dict[str, Any]:
    headers: dict[str, list[str]] = {}
    for name, value in response.headers:
        headers.setdefault(name, []).append(value)
    return {"status": {"code": response.status, "message": response.reason}, "headers": headers,
            "body": {"string": response.body}}


class DispatchCassette(Cassette):  # type: ignore[misc]
    """A vcrpy cassette that hands every question to the active scope."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(path, record_mode=RecordMode.NEW_EPISODES, **kwargs)

    def _load(self) -> None:
        """Nothing to load: entries are read by key when a request asks for one."""

    def _save(self, force: bool = False) -> None:
        """Nothing to save: each answer was written when it was complete."""

    def _flight(self, request: Any) -> Flight | None:
        __tracebackhide__ = True
        flight: Flight | None = getattr(request, _ATTR, None)
        if flight is not None:
            return flight
        scope = active.current()
        if scope is None:
            return None
        flight = scope.begin(Request(request.method, request.uri, _body(request), request.headers))
        setattr(request, _ATTR, flight)
        begun = _begun.get()
        if begun is not None:
            begun.append(flight)
        return flight

    def can_play_response_for(self, request: Any) -> bool:
        __tracebackhide__ = True
        flight = self._flight(request)
        return flight is not None and flight.served

    def play_response(self, request: Any) -> dict[str, Any]:
        flight = self._flight(request)
        assert flight is not None
        played = _vcr_response(flight.response())
        played["headers"][STATUS_HEADER] = [flight.status]
        return played

    @property
    def write_protected(self) -> bool:
        return False  # a replay miss has raised CacheMiss already

    def filter_request(self, request: Any) -> Any:
        return request

    def append(self, request: Any, response: Any) -> None:
        flight: Flight | None = getattr(request, _ATTR, None)
        if flight is None:
            return
        status = int(response["status"]["code"])
        headers = [
            (str(name), str(v))
            for name, values in (response.get("headers") or {}).items()
            for v in (values if isinstance(values, (list, tuple)) else [values])
        ]
        raw = (response.get("body") or {}).get("string") or b""
        flight.record(status, headers, raw.encode("utf-8") if isinstance(raw, str) else raw)
        if isinstance(response.get("headers"), dict):  # the response vcrpy hands the caller is built from it
            response["headers"][STATUS_HEADER] = [flight.status]

    def __len__(self) -> int:
        return 0

    def __contains__(self, request: Any) -> bool:
        return self.can_play_response_for(request)


def _guarded(call: Callable[..., Any]) -> Callable[..., Any]:
    """A vcrpy stub method that releases what its request claimed when the call fails."""

    @functools.wraps(call)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        token = _begun.set([])
        try:
            with upstream():  # its connections were seen: the network guard lets them through
                return call(*args, **kwargs)
        except BaseException:
            for flight in _begun.get() or ():
                flight.abandon()
            raise
        finally:
            _begun.reset(token)

    return guarded


def _aiohttp_controls(kwargs: dict[str, Any]) -> Controls | None:
    """aiohttp sends the headers it was given, not vcrpy's copy: ``x-llm-cache`` is taken
    out of a copy of them, which is what goes upstream."""
    given = kwargs.get("headers")
    if not given:
        return None
    from multidict import CIMultiDict

    headers = CIMultiDict(given)
    found = strip(headers)
    if found is not None:
        kwargs["headers"] = headers
    return found


def _aguarded(call: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        token = _begun.set([])
        found = _aiohttp_controls(kwargs)
        try:
            with upstream(), (using(found) if found is not None else contextlib.nullcontext()):
                return await call(*args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, LLMCacheError):  # anthropic's aiohttp client would retry it
                as_sdk_error(exc, kwargs.get("headers"))
            for flight in _begun.get() or ():
                await flight.aabandon()
            raise
        finally:
            _begun.reset(token)

    return guarded


def _seen(call: Callable[..., Any]) -> Callable[..., Any]:
    """A vcrpy stub method whose connections the network guard lets through."""

    @functools.wraps(call)
    def seen(*args: Any, **kwargs: Any) -> Any:
        with upstream():
            return call(*args, **kwargs)

    return seen


# Every httpx/httpx2 transport vcrpy patches, with the original it saved.
_HTTPX_TRANSPORTS = (
    ("HTTPTransport", "handle_request", "HttpTransport_handle_request"),
    ("AsyncHTTPTransport", "handle_async_request", "AsyncHttpTransport_handle_async_request"),
    ("WSGITransport", "handle_request", "WsgiTransport_handle_request"),
    ("ASGITransport", "handle_async_request", "AsgiTransport_handle_async_request"),
    ("MockTransport", "handle_request", "MockTransport_handle_request"),
    ("MockTransport", "handle_async_request", "MockTransport_handle_async_request"),
)


def _httpx_stub(module: Any, real: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
    if is_async:
        async def handle_async_request(transport: Any, request: Any) -> Any:
            __tracebackhide__ = True
            scope = active.current()
            if scope is None:
                return await real(transport, request)
            return await httpx_adapter.ahandle(scope, module, request, lambda: real(transport, request))

        return handle_async_request

    def handle_request(transport: Any, request: Any) -> Any:
        __tracebackhide__ = True
        scope = active.current()
        if scope is None:
            return real(transport, request)
        return httpx_adapter.handle(scope, module, request, lambda: real(transport, request))

    return handle_request


def _patches(cassette: DispatchCassette) -> list[tuple[Any, str, Any]]:
    patches: list[tuple[Any, str, Any]] = []
    for name, prefix in (("httpx", "_Httpx"), ("httpx2", "_Httpx2")):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for cls_name, method, saved in _HTTPX_TRANSPORTS:
            real = getattr(vcr.patch, prefix + saved, None)
            cls = getattr(module, cls_name, None)
            if real is not None and cls is not None:
                patches.append((cls, method, _httpx_stub(module, real, method.endswith("async_request"))))
    # requests, urllib3, http.client, boto3 and httplib2 all answer through this method
    patches.append((vcr.stubs.VCRConnection, "getresponse", _guarded(vcr.stubs.VCRConnection.getresponse)))
    # urllib3 connects before it sends an HTTPS request: that connection was seen too
    patches.append((vcr.stubs.VCRConnection, "connect", _seen(vcr.stubs.VCRConnection.connect)))
    original = getattr(vcr.patch, "_AiohttpClientSessionRequest", None)
    if original is not None:
        import aiohttp.client
        from vcr.stubs.aiohttp_stubs import vcr_request

        patches.append((aiohttp.client.ClientSession, "_request", _aguarded(vcr_request(cassette, original))))
    return patches


def install() -> Callable[[], None]:
    """Patch every client for the rest of the process; returns what removes the patches."""
    cassette = DispatchCassette("llm-cache")
    cassette.custom_patches = tuple(_patches(cassette))
    # vcrpy's own stubs for what is patched above are left out
    cassette.skip_patchers = ("httpx", "httpx2", "aiohttp")

    class _One:
        @staticmethod
        def load(**kwargs: Any) -> DispatchCassette:
            return cassette

    context = CassetteContextDecorator(_One, lambda: {"path": "llm-cache"})
    context.__enter__()
    return lambda: context.__exit__(None, None, None)
