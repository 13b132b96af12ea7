"""What every adapter converts to: a client-neutral request and response.

The engine knows nothing of httpx, vcrpy or functions; an adapter turns its
client's request into a ``Request`` and the engine's ``Response`` back into its
client's response.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Request", "Response"]


@dataclass
class Request:
    """One outgoing HTTP request, as the engine reads it.

    ``headers`` is any mapping whose ``get`` ignores case (httpx's ``Headers``,
    vcrpy's ``HeadersDict``) or a plain dict. ``timeout`` is how long the client
    is willing to wait for an answer, in seconds, when it says so: a waiter for
    another recorder's lock never waits longer than that.
    """

    method: str
    url: str
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None

    @property
    def uri(self) -> str:  # the name vcrpy's requests use
        return self.url


@dataclass
class Response:
    """A response the engine serves: status, headers and the body as chunks.

    ``chunks`` are handed to the client one by one (a stream's events in order);
    ``offsets_ms`` when set, one per chunk, is when each chunk arrived in the
    recording, measured from the start of the response.
    """

    status: int
    headers: Sequence[tuple[str, str]]
    chunks: Sequence[bytes]
    offsets_ms: Sequence[float] | None = None

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def reason(self) -> str:
        import http

        try:
            return http.HTTPStatus(self.status).phrase
        except ValueError:
            return ""
