"""``multipart/form-data`` bodies read as their parts, whatever the boundary.

HTTP clients pick a random boundary per request, so the bytes of an upload differ
every time it is sent. What the server reads does not: the parts, in order, each
with its name, file name, content type and content. That is what enters the key
(``key_form``) and what a cassette shows (``describe``): text fields as text, file
parts as their name, file name, content type, size and sha256, never their bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Part", "boundary", "describe", "key_form", "parse", "text_field"]

# Longer text fields are shown as files (size and sha256): a cassette is for reading.
MAX_TEXT_FIELD = 64 * 1024
# Control characters (other than tab and newline) make a field binary for display.
_BINARY = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_BOUNDARY = re.compile(r'boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)


@dataclass(frozen=True)
class Part:
    """One part of a form: its Content-Disposition name and file name, its type, its bytes."""

    name: str | None
    filename: str | None
    content_type: str | None
    content: bytes

    def text(self) -> str | None:
        """The content as text when it is a plain text field (no file name, readable UTF-8)."""
        if self.filename is not None or len(self.content) > MAX_TEXT_FIELD:
            return None
        if self.content_type is not None and not self.content_type.lower().startswith("text/plain"):
            return None
        try:
            text = self.content.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return None if _BINARY.search(text) else text

    def described(self) -> dict[str, Any]:
        """What a cassette shows of this part (see ``describe``)."""
        out: dict[str, Any] = {"name": self.name}
        text = self.text()
        if text is not None:
            if self.content_type is not None:
                out["content_type"] = self.content_type
            out["text"] = text
            return out
        if self.filename is not None:
            out["filename"] = self.filename
        out["content_type"] = self.content_type
        out["size"] = len(self.content)
        out["sha256"] = hashlib.sha256(self.content).hexdigest()
        return out


def boundary(content_type: str | None) -> str | None:
    """The boundary of a ``multipart/form-data`` content type, or None for any other type."""
    if not content_type or not content_type.lower().lstrip().startswith("multipart/form-data"):
        return None
    found = _BOUNDARY.search(content_type)
    return (found.group(1) or found.group(2)) if found else None


def _params(value: str) -> tuple[str | None, str | None]:
    """The name and file name of a Content-Disposition header (``filename*`` included)."""
    from email.message import Message

    message = Message()
    message["content-disposition"] = value
    name = message.get_param("name", header="content-disposition")
    if isinstance(name, tuple):  # RFC 2231 form
        from email.utils import collapse_rfc2231_value

        name = collapse_rfc2231_value(name)
    return (str(name) if name is not None else None), message.get_filename()


def parse(body: bytes, boundary: str) -> list[Part] | None:
    """The parts of a multipart body, or None when it is not one with this boundary."""
    delimiter = b"--" + boundary.encode("latin-1")
    if body.startswith(delimiter):
        start = len(delimiter)
    else:  # a preamble, which carries nothing
        found = body.find(b"\r\n" + delimiter)
        if found < 0:
            return None
        start = found + 2 + len(delimiter)
    parts: list[Part] = []
    separator = b"\r\n" + delimiter
    while True:
        if body.startswith(b"--", start):  # the close delimiter; an epilogue after it carries nothing
            return parts
        line_end = body.find(b"\r\n", start)
        if line_end < 0 or body[start:line_end].strip(b" \t"):
            return None
        head_end = body.find(b"\r\n\r\n", line_end)
        if head_end == line_end:  # no headers at all: the blank line follows the delimiter
            headers_raw = b""
            content_start = line_end + 4
        elif head_end < 0:
            return None
        else:
            headers_raw = body[line_end + 2 : head_end]
            content_start = head_end + 4
        end = body.find(separator, content_start)
        if end < 0:
            return None
        headers = _headers(headers_raw)
        name, filename = _params(headers.get("content-disposition", ""))
        parts.append(Part(name, filename, headers.get("content-type"), body[content_start:end]))
        start = end + len(separator)


def _headers(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            out[name.strip().lower()] = value.strip()
    return out


def describe(body: bytes, content_type: str | None, ignore: Iterable[str] = ()) -> list[dict[str, Any]] | None:
    """The parts of a ``multipart/form-data`` body as a cassette shows them, in order, or
    None when the body is not one. Parts named in ``ignore`` are left out."""
    mark = boundary(content_type)
    if mark is None:
        return None
    parts = parse(body, mark)
    if parts is None:
        return None
    skip = set(ignore)
    return [part.described() for part in parts if part.name not in skip]


def key_form(described: Sequence[Mapping[str, Any]]) -> list[list[str | None]]:
    """What of each described part enters the key: name, file name, content type and
    the sha256 of the content (of a text field's text), in order."""
    out: list[list[str | None]] = []
    for part in described:
        text = part.get("text")
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest() if isinstance(text, str) else part.get("sha256")
        out.append([part.get("name"), part.get("filename"), part.get("content_type"), digest])
    return out


def text_field(described: Sequence[Mapping[str, Any]], name: str) -> str | None:
    """The text of the first text field called ``name`` (a form's ``model``, say)."""
    for part in described:
        if part.get("name") == name and isinstance(part.get("text"), str):
            return str(part["text"])
    return None
