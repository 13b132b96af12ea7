"""A decoded HTTP body in one of the stored kinds, and how raw bytes choose their kind.

``encode_body`` picks the most readable kind that gives back exactly the bytes: ``json``,
``events`` (server-sent events), ``lines`` (NDJSON), ``eventstream`` (AWS event-stream
frames), ``text`` or ``base64``; ``encode_request_body`` adds ``multipart`` for forms.
``Body.chunks`` is what replay hands the client, one event, line or frame at a time.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["BODY_KINDS", "STREAM_KINDS", "Body", "encode_body", "encode_request_body"]

BODY_KINDS = ("json", "events", "lines", "eventstream", "multipart", "text", "base64")
# The kinds that are streams: replayed a chunk per item, each with its offset.
STREAM_KINDS = frozenset({"events", "lines", "eventstream"})
# The payload of an event-stream message, as it is stored.
_PAYLOAD_KINDS = ("json", "text", "base64")
# Text with other control characters is stored as base64, so YAML never has to escape it.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")



def _compact(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _payload_doc(payload: bytes) -> dict[str, Any]:
    """An event-stream payload as it is stored: JSON when that gives back its exact bytes."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(payload).decode("ascii")}
    if text[:1] in ("{", "["):
        try:
            value = json.loads(text)
        except ValueError:
            pass
        else:
            if _compact(value) == payload:
                return {"json": value}
    if not _CONTROL.search(text) and "\r" not in text:
        return {"text": text}
    return {"base64": base64.b64encode(payload).decode("ascii")}


def _message(event: dict[str, Any]) -> Any:
    """A stored event-stream message back as the ``eventstream.Message`` it was."""
    from . import eventstream
    if "json" in event:
        payload = _compact(event["json"])
    elif "text" in event:
        payload = str(event["text"]).encode("utf-8")
    else:
        payload = base64.b64decode(event.get("base64", ""))
    return eventstream.Message(dict(event.get("headers") or {}), payload)


@dataclass(frozen=True)
class Body:
    """A decoded HTTP body in one of the stored kinds."""

    kind: str
    value: Any
    # the separator between SSE lines, when it is not "\n"
    newline: str = "\n"

    def to_bytes(self) -> bytes:
        """The bytes of the body (for ``multipart``, the description as JSON: the file
        contents are not kept)."""
        if self.kind == "json":
            return _compact(self.value)
        if self.kind in STREAM_KINDS:
            return b"".join(self.chunks())
        if self.kind == "multipart":
            return _compact(self.value)
        if self.kind == "text":
            return str(self.value).encode("utf-8")
        return base64.b64decode(self.value)

    def chunks(self) -> list[bytes]:
        """The body as its parts arrive: one chunk per event of a stream (with its line
        separators and the blank line after it), per NDJSON line (with its newline), per
        event-stream frame; else the whole body as one chunk (none when it is empty).
        They join to ``to_bytes()``."""
        if self.kind == "events":
            nl = self.newline
            return [(event.replace("\n", nl) + nl + nl).encode("utf-8") for event in self.value]
        if self.kind == "lines":
            return [(line + "\n").encode("utf-8") for line in self.value]
        if self.kind == "eventstream":
            from . import eventstream

            return [eventstream.encode(_message(event)) for event in self.value]
        raw = self.to_bytes()
        return [raw] if raw else []

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {self.kind: self.value}
        if self.kind == "events" and self.newline != "\n":
            doc["newline"] = self.newline
        return doc

    def json_values(self) -> list[Any]:
        """The JSON values inside the body: itself, each event's ``data:`` lines, each
        NDJSON line, each event-stream payload."""
        if self.kind == "json":
            return [self.value]
        if self.kind == "eventstream":
            return [event["json"] for event in self.value if "json" in event]
        if self.kind == "lines":
            values = []
            for line in self.value:
                if line.lstrip()[:1] in ("{", "["):
                    try:
                        values.append(json.loads(line))
                    except ValueError:
                        pass
            return values
        if self.kind != "events":
            return []
        out = []
        for event in self.value:
            for line in event.split("\n"):
                if line.startswith("data:"):
                    data = line[5:].strip()
                    if data[:1] in ("{", "["):
                        try:
                            out.append(json.loads(data))
                        except ValueError:
                            pass
        return out


def _ndjson(text: str) -> Body | None:
    """An NDJSON body as its lines, when every line ends with a newline and none is empty."""
    if not text.endswith("\n") or "\r" in text:
        return None
    lines = text[:-1].split("\n")
    if any(not line.strip() for line in lines) or _CONTROL.search(text):
        return None
    return Body("lines", lines)


def encode_body(raw: bytes, content_type: str | None) -> Body:
    """Choose the most readable kind that gives back exactly these bytes (JSON: this value)."""
    ctype = (content_type or "").lower()
    if ctype.startswith("application/vnd.amazon.eventstream"):
        from . import eventstream  # loaded by the first Bedrock stream, not before

        messages = eventstream.decode(raw)
        if messages is not None:
            return Body("eventstream", [{"headers": dict(m.headers), **_payload_doc(m.payload)} for m in messages])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Body("base64", base64.b64encode(raw).decode("ascii"))
    if "event-stream" in ctype:
        nl = "\r\n" if "\r\n" in text else "\n"
        sep = nl + nl
        if text.endswith(sep):
            events = [event.replace(nl, "\n") for event in text[: -len(sep)].split(sep)]
            body = Body("events", events, nl)
            if body.to_bytes() == raw:
                return body
        return Body("text", text)
    if "ndjson" in ctype or "jsonl" in ctype:
        lines = _ndjson(text)
        if lines is not None:
            return lines
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            return Body("json", json.loads(text))
        except ValueError:
            pass
    if not _CONTROL.search(text):
        return Body("text", text)
    return Body("base64", base64.b64encode(raw).decode("ascii"))


def encode_request_body(raw: bytes, content_type: str | None) -> Body:
    """A request body as a cassette shows it: ``multipart`` for a form upload (its parts
    described, see ``multipart.describe``), else as ``encode_body`` chooses."""
    if "multipart/form-data" not in (content_type or "").lower():
        return encode_body(raw, content_type)
    from . import multipart

    parts = multipart.describe(raw, content_type)
    if parts is not None:
        return Body("multipart", parts)
    return encode_body(raw, content_type)
