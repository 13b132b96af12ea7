"""What differs between provider APIs, in one place: how their streams begin and end.

Every path of the engine asks ``stream_ended`` whether a stream has delivered its
provider's last event: a stream the caller closes after that is read to its end
and kept; one closed before it is not kept. The last events known: OpenAI chat's
``data: [DONE]``, Anthropic's ``message_stop``, the Responses API's
``response.completed`` (``.failed``, ``.incomplete``), a Gemini chunk with a
``finishReason``, an NDJSON line with ``"done": true`` (Ollama), and Bedrock's
event-stream ``messageStop`` and ``metadata`` messages.

``stream_complete`` is asked of a whole answer before it is stored: a stream that
shows a known provider's shape (its first events) but does not end with that
provider's last event was cut short, and is not stored. A stream of no known shape
(any other SSE or NDJSON API) has no terminator we could check, so it is kept as
it arrived.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

__all__ = [
    "END_EVENTS", "known_stream", "stream_complete", "stream_ended", "worth_draining"]

# The last event of each provider's stream: Anthropic (message_stop), the Responses
# API (response.completed / failed / incomplete); OpenAI chat ends with ``data: [DONE]``.
END_EVENTS = frozenset({"message_stop", "response.completed", "response.failed", "response.incomplete"})

# The first events of the streams whose end we know: OpenAI chat chunks, an Anthropic
# message, a Responses answer, Gemini candidates. Looked for near the start of the stream only.
_SHAPES = re.compile(
    rb'"object"\s*:\s*"chat\.completion\.chunk"'
    rb'|^event:[ \t]*(?:message_start|response\.created)[ \t]*\r?$'
    rb'|"type"\s*:\s*"(?:message_start|response\.created)"'
    rb'|^data:[ \t]*\{[ \t]*"candidates"',
    re.MULTILINE,
)
# A Gemini chunk that ends its candidate (only the last one carries a finishReason).
_GEMINI_END = re.compile(rb'"finishReason"\s*:')
# Bedrock's last event-stream messages, as their ":event-type" string header is framed:
# name length, name, type 7 (string), value length (uint16), value. A payload cannot hold
# these bytes: its JSON escapes control characters.
EVENTSTREAM_ENDS = (b"\x0b:event-type\x07\x00\x0bmessageStop", b"\x0b:event-type\x07\x00\x08metadata")
_EVENTSTREAM_START = b"\x0b:event-type\x07\x00\x0cmessageStart"
_EVENT_TYPE = b"\x0b:event-type\x07"
_HEAD = 4096
_TYPE = re.compile(rb'"type"\s*:\s*"([^"]*)"')
_SEPARATOR = re.compile(rb"\r\n\r\n|\n\n|\r\r")
# Ollama-style NDJSON streams: objects with a "done" field, the last one "done": true
_NDJSON_DONE = re.compile(rb'"done"\s*:')


def _last_event(chunks: Sequence[bytes]) -> bytes:
    """The last SSE event of the chunks (possibly not yet complete), without its blank line."""
    tail = b""
    for count, chunk in enumerate(reversed(chunks), 1):
        tail = chunk + tail if count < 16 else b"".join(chunks)
        body = tail.rstrip(b"\r\n")
        starts = [m.end() for m in _SEPARATOR.finditer(body)]
        if starts:
            return body[starts[-1]:]
        if count >= 16:
            return body
    return tail.rstrip(b"\r\n")


def _is_end(event: bytes) -> bool:
    """True when one SSE event is a provider's last: ``[DONE]``, or an END_EVENTS type."""
    for line in event.splitlines():
        name, _, value = line.partition(b":")
        value = value.strip()
        if name == b"event" and value.decode("utf-8", "replace") in END_EVENTS:
            return True
        if name == b"data":
            if value == b"[DONE]":
                return True
            found = _TYPE.search(value[:256])
            if found is not None and found.group(1).decode("utf-8", "replace") in END_EVENTS:
                return True
            if _GEMINI_END.search(value) is not None:
                return True
    return False


def _ndjson_done(line: bytes) -> bool:
    """True when one NDJSON line is an object with ``"done": true``."""
    if _NDJSON_DONE.search(line) is None:
        return False
    try:
        value = json.loads(line)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("done") is True


def _last_line(chunks: Sequence[bytes]) -> bytes | None:
    """The last line of the chunks when it is complete (ends with a newline), else None."""
    if not chunks[-1].endswith(b"\n"):
        return None
    tail = b""
    for chunk in reversed(chunks):
        tail = chunk + tail
        body = tail.rstrip(b"\r\n")
        if b"\n" in body:
            return body.rsplit(b"\n", 1)[-1]
    return tail.rstrip(b"\r\n")


def _eventstream_ended(chunks: Sequence[bytes]) -> bool:
    """True when the frames so far are whole and the last is ``messageStop`` or ``metadata``."""
    data = b"".join(chunks)
    offset, last = 0, b""
    while offset + 16 <= len(data):  # frame by frame, by the total length of each prelude
        total = int.from_bytes(data[offset : offset + 4], "big")
        if total < 16 or offset + total > len(data):
            return False
        last, offset = data[offset : offset + total], offset + total
    return offset == len(data) and any(marker in last for marker in EVENTSTREAM_ENDS)


def stream_ended(chunks: Sequence[bytes]) -> bool:
    """True when the chunks received so far end with a provider's last event."""
    if not chunks:
        return False
    line = _last_line(chunks)
    if line is not None and _ndjson_done(line):
        return True
    if _EVENT_TYPE in b"".join(chunks[-8:]):
        return _eventstream_ended(chunks)
    return _is_end(_last_event(chunks))


# Anthropic's message_delta that carries the stop reason: only message_stop comes after it
_ANTHROPIC_FINAL_DELTA = re.compile(rb'"type"\s*:\s*"message_delta".*"stop_reason"\s*:\s*"', re.DOTALL)


def worth_draining(chunks: Sequence[bytes]) -> bool:
    """True when a stream the caller closes now has no more than its terminator left to
    read: its provider's last event has come, or Anthropic's final ``message_delta`` (some
    clients close right after it). The adapter then reads the rest and keeps the stream,
    and ``stream_complete`` still checks that the whole of it ended properly."""
    if stream_ended(chunks):
        return True
    return _ANTHROPIC_FINAL_DELTA.search(_last_event(chunks)) is not None


def known_stream(head: bytes) -> bool:
    """True when the start of an SSE stream is one of a provider whose last event we know."""
    return _SHAPES.search(head[:_HEAD]) is not None


def stream_complete(body: bytes, content_type: str | None) -> bool:
    """False when ``body`` is a stream of a known shape that lacks its provider's last event.

    Server-sent events (``text/event-stream``) of OpenAI chat, Anthropic messages or
    the Responses API must end with ``[DONE]``, ``message_stop`` or ``response.completed``
    (or ``.failed`` / ``.incomplete``), Gemini's with a chunk that has a ``finishReason``;
    an NDJSON stream (``application/x-ndjson``) whose objects carry ``done`` must end with
    ``"done": true``; a Bedrock event stream that starts with ``messageStart`` must end,
    frame whole, with ``messageStop`` or ``metadata``. Anything else is complete.
    """
    ctype = (content_type or "").lower()
    if "event-stream" in ctype:
        return not known_stream(body) or stream_ended([body])
    if "amazon.eventstream" in ctype:  # Bedrock's Converse stream starts with messageStart
        return _EVENTSTREAM_START not in body[:_HEAD] or _eventstream_ended([body])
    if "ndjson" in ctype:
        lines = body.strip().splitlines()
        if not lines or _NDJSON_DONE.search(lines[0]) is None:
            return True
        try:
            last = json.loads(lines[-1])
        except ValueError:
            return False
        return isinstance(last, dict) and last.get("done") is True
    return True
