"""AWS event-stream frames (``application/vnd.amazon.eventstream``): read and written.

Bedrock streams its answers as binary frames, not server-sent events. Each frame is::

    total length (uint32) | headers length (uint32) | CRC32 of those 8 bytes
    headers: name length (uint8), name, type (uint8), value (type 7, a string:
             uint16 length and UTF-8)
    payload (JSON for Bedrock)
    CRC32 of everything before it

A cassette keeps the decoded messages (their headers and payload) so a reviewer can
read them, and replay writes them back as frames. Only string headers are kept that
way (all Bedrock sends); a stream with any other header type, or one that does not
decode, is not an event stream here (the caller stores its bytes instead).
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["CONTENT_TYPE", "Message", "decode", "encode", "encode_all"]

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_PRELUDE = struct.Struct(">II")
_STRING = 7
# The sizes botocore accepts (its _MAX_HEADERS_LENGTH and _MAX_PAYLOAD_LENGTH).
MAX_HEADERS = 128 * 1024
MAX_PAYLOAD = 24 * 1024 * 1024


@dataclass(frozen=True)
class Message:
    """One event-stream message: its string headers, in order, and its payload."""

    headers: Mapping[str, str]
    payload: bytes


def encode(message: Message) -> bytes:
    """The frame of one message, lengths and both CRC32s computed."""
    headers = bytearray()
    for name, value in message.headers.items():
        raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
        headers += struct.pack(">B", len(raw_name)) + raw_name
        headers += struct.pack(">BH", _STRING, len(raw_value)) + raw_value
    total = _PRELUDE.size + 4 + len(headers) + len(message.payload) + 4
    prelude = _PRELUDE.pack(total, len(headers))
    frame = prelude + struct.pack(">I", binascii.crc32(prelude)) + bytes(headers) + message.payload
    return frame + struct.pack(">I", binascii.crc32(frame))


def encode_all(messages: Iterable[Message]) -> bytes:
    return b"".join(encode(m) for m in messages)


def decode(data: bytes) -> list[Message] | None:
    """The messages of a whole stream of frames, or None when ``data`` is not one (a bad
    CRC, a cut frame, a header that is not a string). botocore's parser is used when it
    is installed (it is whenever boto3 made the request), ours otherwise."""
    try:
        messages = _decode_botocore(data)
    except ImportError:
        messages = _decode(data)
    if messages is None or not messages or encode_all(messages) != data:
        return None  # not frames, or frames we would not write back byte for byte
    return messages


def _decode_botocore(data: bytes) -> list[Message] | None:
    from botocore.eventstream import EventStreamBuffer, ParserError

    buffer = EventStreamBuffer()
    buffer.add_data(data)
    out = []
    size = 0
    try:
        for message in buffer:
            if not all(isinstance(v, str) for v in message.headers.values()):
                return None
            out.append(Message(dict(message.headers), bytes(message.payload)))
            size += message.prelude.total_length
    except (ParserError, ValueError, struct.error, UnicodeDecodeError):
        return None
    return out if size == len(data) else None


def _decode(data: bytes) -> list[Message] | None:
    out = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _PRELUDE.size + 4:
            return None
        total, headers_length = _PRELUDE.unpack_from(data, offset)
        (prelude_crc,) = struct.unpack_from(">I", data, offset + 8)
        end = offset + total
        if (
            binascii.crc32(data[offset : offset + 8]) != prelude_crc
            or headers_length > MAX_HEADERS
            or total < 16 + headers_length
            or total - 16 - headers_length > MAX_PAYLOAD
            or end > len(data)
        ):
            return None
        (message_crc,) = struct.unpack_from(">I", data, end - 4)
        if binascii.crc32(data[offset : end - 4]) != message_crc:
            return None
        headers = _headers(data[offset + 12 : offset + 12 + headers_length])
        if headers is None:
            return None
        out.append(Message(headers, data[offset + 12 + headers_length : end - 4]))
        offset = end
    return out


def _headers(raw: bytes) -> dict[str, str] | None:
    out: dict[str, str] = {}
    at = 0
    try:
        while at < len(raw):
            size = raw[at]
            name = raw[at + 1 : at + 1 + size].decode("utf-8")
            at += 1 + size
            if raw[at] != _STRING:
                return None
            (length,) = struct.unpack_from(">H", raw, at + 1)
            value = raw[at + 3 : at + 3 + length]
            if len(value) != length:
                return None
            out[name] = value.decode("utf-8")
            at += 3 + length
    except (IndexError, struct.error, UnicodeDecodeError):
        return None
    return out
