"""``Entry``: one recorded request and its response, and the document it is written as.

``Entry.to_doc`` gives the YAML document of the cassette format (see ``llm_cache.cassette``,
which writes and reads it); ``llm_cache.schema`` checks a document and builds its entry.
Besides what is stored, an entry keeps what replay derives from it (the response's bytes,
chunks and headers) once, and ``slim`` gives a copy that keeps only that.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .body import STREAM_KINDS, Body

__all__ = ["FORMAT_VERSION", "READABLE_FORMATS", "Entry"]

# The format dump_entry writes, and every format this release reads.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
_FRAMING_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class _FlowList(list[float]):
    """A list dumped on one line (``[0.0, 12.5]``): the event offsets, which nobody reviews."""


_SLIMMED = Body("text", "")


@dataclass
class Entry:
    """One recorded request and its response."""

    key: str
    recorded_at: datetime
    model: str | None
    model_version: str
    method: str
    path: str
    query: list[list[str]]
    request_headers: dict[str, str]
    request_body: Body
    status: int
    response_headers: dict[str, str]
    response_body: Body
    response_model: str | None = None
    system_fingerprint: str | None = None
    duration_ms: float | None = None
    usage: dict[str, int] | None = None
    # the key rules beyond the defaults it was recorded under (ignore_fields, host), so
    # `llm-cache verify` can recompute its key
    key_rules: dict[str, Any] | None = None
    # for a streamed (events) response: per event, the milliseconds from the start of the
    # response until that event had fully arrived (non-decreasing)
    offsets_ms: list[float] | None = None
    # derived on first replay, not stored
    _raw: bytes | None = field(default=None, repr=False, compare=False)
    _chunks: list[bytes] | None = field(default=None, repr=False, compare=False)
    _headers: list[tuple[str, str]] | None = field(default=None, repr=False, compare=False)
    # True for a copy that keeps only what replay needs (see slim())
    _slim: bool = field(default=False, repr=False, compare=False)

    @property
    def endpoint(self) -> str:
        return self.path

    @property
    def tokens(self) -> int:
        return sum(self.usage.values()) if self.usage else 0

    def response_bytes(self) -> bytes:
        if self._raw is None:
            self._raw = self.response_body.to_bytes()
        return self._raw

    def response_chunks(self) -> list[bytes]:
        """The response body as replay sends it part by part (see ``Body.chunks``)."""
        if self._chunks is None:
            if self.response_body.kind in STREAM_KINDS:
                self._chunks = self.response_body.chunks()
            else:  # the same bytes object as response_bytes(): one copy in memory, not two
                raw = self.response_bytes()
                self._chunks = [raw] if raw else []
        return self._chunks

    def slim(self) -> Entry:
        """A copy for the memory tier: the response as the bytes and chunks replay sends,
        bodies not kept as parsed values (they take several times their size in memory)."""
        if self._slim:
            return self
        raw, headers = self.response_bytes(), self.header_items()
        chunks = self.response_chunks()
        return dataclasses.replace(
            self,
            request_body=_SLIMMED,
            response_body=_SLIMMED,
            _raw=raw,
            _chunks=chunks,
            _headers=headers,
            _slim=True,
        )

    def header_items(self) -> list[tuple[str, str]]:
        """The replayed response's headers: stored ones (no framing) and the true length."""
        if self._headers is None:
            items = [(n, v) for n, v in self.response_headers.items() if n.lower() not in _FRAMING_HEADERS]
            items.append(("content-length", str(len(self.response_bytes()))))
            self._headers = items
        return self._headers

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "llm_cache": FORMAT_VERSION,
            "key": self.key,
            "recorded_at": self.recorded_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "model": self.model,
            "model_version": self.model_version,
            "response_model": self.response_model,
            "system_fingerprint": self.system_fingerprint,
            "duration_ms": self.duration_ms,
            "usage": self.usage,
            "key_rules": self.key_rules,
            "request": {
                "method": self.method,
                "path": self.path,
                "query": self.query,
                "headers": self.request_headers,
                **self.request_body.to_doc(),
            },
            "response": {
                "status": self.status,
                "headers": self.response_headers,
                **self.response_body.to_doc(),
            },
        }
        if self.offsets_ms is not None:
            doc["response"]["offsets_ms"] = _FlowList(round(float(ms), 1) for ms in self.offsets_ms)
        for optional in ("response_model", "system_fingerprint", "duration_ms", "usage", "key_rules"):
            if doc[optional] is None:
                del doc[optional]
        if not self.query:
            del doc["request"]["query"]
        return doc
