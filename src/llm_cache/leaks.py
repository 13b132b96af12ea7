"""What looks like a secret: the search run over a cassette before each write, and by
``llm-cache verify`` over stored ones.

The YAML text is searched for anything shaped like a credential (``SECRET_PATTERNS``); the
bodies and strings the text does not show as they are (base64 and hex, compressed data in
them, text with NUL bytes, JSON escapes or HTML entities) are searched decoded, for those
shapes and for the values ``redact`` replaced in text but cannot replace in bytes. Each finding is reported masked, so the report itself leaks nothing.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cassette import Entry

__all__ = ["SECRET_PATTERNS", "SecretFinding", "find_entry_secrets", "find_secrets"]


# What a credential looks like, for values that did not come through the
# environment or the request's own headers (a key pasted into a prompt, a
# cassette from another tool). Checked before every write and by `llm-cache verify`.
SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    "openai or anthropic key": re.compile(r"\bsk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    "bearer token": re.compile(r"\b[Bb]earer\s+(?!<redacted>)[A-Za-z0-9._~+/=-]{16,}"),
    "aws access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "jwt": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "google api key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "github token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
}


# Each pattern without its leading \b, its flags kept: the literal prefix lets the regex
# engine skip ahead (forty times faster over a cassette than the pattern itself), and a
# text it does not match cannot match the pattern, which is only run when it does. Made
# for each pattern object when first used, so a pattern replaced or added in
# SECRET_PATTERNS gets its own; one whose prefilter cannot be made is run alone.
_PREFILTERS: dict[re.Pattern[str], re.Pattern[str] | None] = {}


def _prefilter(pattern: re.Pattern[str]) -> re.Pattern[str] | None:
    try:
        return _PREFILTERS[pattern]
    except KeyError:
        pass
    loose: re.Pattern[str] | None = None
    source = pattern.pattern
    if source.startswith(r"\b"):  # dropping what a pattern starts with only loosens it
        rest = source[2:]
        if rest.startswith("[Bb]earer"):
            rest = rest[4:]
        try:
            loose = re.compile(rest, pattern.flags)
        except re.error:
            loose = None
    if len(_PREFILTERS) < 256:
        _PREFILTERS[pattern] = loose
    return loose


@dataclass(frozen=True)
class SecretFinding:
    """Something that looks like a credential, and where: a line of the YAML, or a body."""

    kind: str
    line: int
    # the match with its middle masked, so the report itself leaks nothing
    excerpt: str
    # for a binary body, which one ("base64 response body"); the line is then 0
    body: str = ""

    @property
    def where(self) -> str:
        return self.body or f"line {self.line}"


def _mask(text: str) -> str:
    return text[:6] + "..." + text[-2:] if len(text) > 10 else "..."


# Shapes that prose matches too ("Bearer tokens/credentials", "bearer authentication",
# "sk-learn-preprocessing-pipelines"): a match is a secret only when what follows its
# prefix could be one (``redact.plausible_secret``: not words, numbers and versions alone).
_PROSE_PRONE = {
    "openai or anthropic key": re.compile(r"sk-(?:ant-|proj-|svcacct-|admin-)?"),
    "bearer token": re.compile(r"[Bb]earer\s+"),
}


def shaped(kind: str, value: str) -> bool:
    """Whether ``value``, matched by ``SECRET_PATTERNS[kind]``, is taken for a secret: not
    prose that has a key's prefix, nor AWS's documented example key (``AKIAIOSFODNN7EXAMPLE``)."""
    prefix = _PROSE_PRONE.get(kind)
    if prefix is not None:
        from .redact import plausible_secret  # redact imports this module

        head = prefix.match(value)
        return plausible_secret(value[head.end():] if head else value, 8)
    return not (kind == "aws access key" and value.endswith("EXAMPLE"))


def find_secrets(text: str, allow: Iterable[str] = (), body: str = "") -> list[SecretFinding]:
    """Secret-looking values in ``text``, except those matching an ``allow`` regex."""
    allowed = [re.compile(a) for a in allow]
    found = []
    for kind, pattern in SECRET_PATTERNS.items():
        loose = _prefilter(pattern)
        if loose is not None and loose.search(text) is None:
            continue
        for match in pattern.finditer(text):
            value = match.group(0)
            if not shaped(kind, value) or any(a.search(value) for a in allowed):
                continue
            line = 0 if body else text.count("\n", 0, match.start()) + 1
            found.append(SecretFinding(kind, line, _mask(value), body))
    return sorted(found, key=lambda f: (f.line, f.body, f.kind))


def _binary_bodies(entry: Entry) -> Iterator[tuple[str, bytes]]:
    """The bodies that the YAML's text does not show as they are: base64 ones, and ones with
    NUL bytes (UTF-16 or UTF-32 text, whose ASCII reads as itself once its NULs are dropped)."""
    for side, body in (("request", entry.request_body), ("response", entry.response_body)):
        if body.kind in ("json", "multipart"):  # JSON escapes a NUL; a form is described
            continue
        try:
            raw = entry.response_bytes() if side == "response" else body.to_bytes()
        except (binascii.Error, ValueError):
            continue
        if b"\x00" in raw:  # an ASCII secret has none: dropping them joins only what UTF-16 split
            yield f"{body.kind} {side} body", raw.replace(b"\x00", b"")
        elif body.kind == "base64":
            yield f"base64 {side} body", raw
        inflated = _inflated(raw) if body.kind == "base64" else None
        if inflated is not None:
            yield f"compressed data in the base64 {side} body", inflated


# The first bytes of gzip data, and of zlib data at each compression level; of bzip2, xz
# and a zip file's first entry; of lzma's "alone" format at its usual settings; where a tar
# archive says what it is.
_ZLIB = (b"\x1f\x8b", b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
_BZ2, _XZ, _ZIP, _LZMA_ALONE = b"BZh", b"\xfd7zXZ\x00", b"PK\x03\x04", b"\x5d\x00\x00"
_LAYERS = 4  # gzip of gzip of a tar of a zip


def _inflated(raw: bytes, depth: int = 0, budget: list[int] | None = None) -> bytes | None:
    """The bytes that gzip, zlib, raw deflate, bzip2, xz, lzma, zip or tar data unpack to,
    layer within layer (gzip of gzip, a zip in a zip, a zip in a .tar.gz) down to ``_LAYERS``,
    ``MAX_EMBEDDED`` bytes in all, joined by NULs; None when ``raw`` is none of those. A body
    compressed without a ``Content-Encoding`` (a file sent gzipped, a server that compresses
    on its own terms) would otherwise hide its text from the search."""
    budget = budget if budget is not None else [MAX_EMBEDDED]
    try:
        parts = _unpacked(raw, budget, raw_deflate=depth == 0)
    except Exception:  # noqa: BLE001 - damaged, encrypted, of a method not read here: nothing found, never a failed call
        return None
    out = []
    for part in parts:
        out.append(part)
        inner = _inflated(part, depth + 1, budget) if depth + 1 < _LAYERS and budget[0] > 0 else None
        if inner:
            out.append(inner)
    return b"\x00".join(out) if out else None


def _unpacked(raw: bytes, budget: list[int], raw_deflate: bool) -> list[bytes]:
    """One layer: what ``raw`` decompresses to, or its archive's members; taken from ``budget``."""
    left = budget[0]
    if left <= 0:
        return []
    if raw.startswith(_ZLIB):
        parts = [zlib.decompressobj(wbits=47).decompress(raw, left)]  # 47: gzip or zlib header
    elif raw.startswith(_BZ2):
        import bz2

        parts = [bz2.BZ2Decompressor().decompress(raw, left)]
    elif raw.startswith((_XZ, _LZMA_ALONE)):
        import lzma  # not in every Python build

        kind = lzma.FORMAT_XZ if raw.startswith(_XZ) else lzma.FORMAT_ALONE
        parts = [lzma.LZMADecompressor(format=kind).decompress(raw, left)]
    elif raw.startswith(_ZIP):
        parts = _unzipped(raw, left)
    elif raw[257:262] == b"ustar":
        parts = _untarred(raw, left)
    elif raw_deflate and len(raw) >= 16:
        # deflate with no header (zip's method, some servers' "deflate"): no signature to go
        # by, so taken only when it decodes to its end
        inflater = zlib.decompressobj(wbits=-15)
        try:
            data = inflater.decompress(raw, left)
        except zlib.error:
            return []
        parts = [data] if inflater.eof or len(data) >= left else []
    else:
        return []
    parts = [p for p in parts if p]
    budget[0] -= sum(len(p) for p in parts)
    return parts


def _unzipped(raw: bytes, left: int) -> list[bytes]:
    """The members of a zip file, up to ``left`` bytes in all."""
    import io
    import zipfile

    parts: list[bytes] = []
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        for info in archive.infolist()[:64]:
            if left <= 0:
                break
            with archive.open(info) as member:
                data = member.read(left)
            parts.append(data)
            left -= len(data)
    return parts


def _untarred(raw: bytes, left: int) -> list[bytes]:
    """The files of a tar archive, up to ``left`` bytes in all."""
    import io
    import tarfile

    parts: list[bytes] = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
        for _, info in zip(range(64), archive):
            if left <= 0:
                break
            member = archive.extractfile(info) if info.isfile() else None
            if member is not None:
                data = member.read(left)
                parts.append(data)
                left -= len(data)
    return parts


def find_entry_secrets(
    entry: Entry, text: str, allow: Iterable[str] = (), known: Mapping[str, str] = {}
) -> list[SecretFinding]:
    """What would leak if ``entry`` (``text``, its YAML) were stored: secret-looking values in
    the YAML, and in the decoded bytes of its base64 bodies those and the ``known`` values
    (value -> what it is: the values redacted from text, which bytes cannot be redacted of)."""
    allow = list(allow)
    found = find_secrets(text, allow)
    values = sorted(known, key=len, reverse=True)
    # an ASCII credential reads as itself; other bytes become U+FFFD, which ends a word
    # each event's data, and its JSON (None when it is none), split and parsed once for every search
    events = [(data, _parsed(data)) for data in _stream_datas(entry)]
    strings = list(_strings(entry, events))
    decoded, decoded_joined = _base64_events(events) if len(events) > 1 else ([], [])
    for where, raw in (*_binary_bodies(entry), *_embedded(strings), *decoded_joined):
        found += _searched(where, raw.decode("ascii", "replace"), raw, allow, known, values)
    joined_decoded = ((f"{where}, from base64", text) for where, text in _streamed_fields(decoded))
    for where, joined in (*_streamed_fields(events), *joined_decoded, *_escaped_events(entry, events),
                          *_entities_decoded(strings)):
        found += _searched(where, joined, None, allow, known, values)
    return found


# A string that is base64 and nothing else (Bedrock's ``chunk.bytes``, an audio delta's ``data``).
_WHOLE_BASE64 = re.compile(r"[A-Za-z0-9+/]{8,}={0,2}")


def _base64_events(events: list[tuple[str, Any]]) -> tuple[list[tuple[str, Any]], list[tuple[str, bytes]]]:
    """A stream's events whose strings are whole base64, decoded: those that decode to JSON
    as events of their own (Bedrock's chunks, whose text is then joined across them as any
    stream's is), and the bytes of the others joined per field, in order (audio deltas): a
    value split across two events' base64 is in neither event's decoding."""
    decoded: list[tuple[str, Any]] = []
    pieces: dict[tuple[str, ...], tuple[str, list[bytes]]] = {}
    left = MAX_EMBEDDED
    for _, value in events:
        if value is None or left <= 0:
            continue
        for key, where, text in _indexed_strings(value):
            if len(text) % 4 or not _WHOLE_BASE64.fullmatch(text):
                continue
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                continue
            left -= len(raw)
            if raw[:1] in (b"{", b"["):
                parsed = _parsed(raw.decode("utf-8", "replace"))
                if parsed is not None:
                    decoded.append((raw.decode("utf-8", "replace"), parsed))
                    continue
            pieces.setdefault(key, (where, []))[1].append(raw)
    joined = [(f"the streamed response's {where}, base64 decoded and joined", b"".join(parts))
              for where, parts in pieces.values() if len(parts) > 1]
    return decoded, joined


# A run of base64 (either alphabet) or of hex digits in a string: a data URL's payload (a
# document or an image sent to a model), a file's bytes in a JSON field or a text body,
# lines of MIME base64, a streamed chunk. Decoded up to MAX_EMBEDDED bytes each.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{24,}(?:={1,2}|(?:\r?\n[A-Za-z0-9+/_-]{4,})+={0,2})?")
_HEX_RUN = re.compile(r"(?:[0-9a-fA-F]{2}){16,}")
_URLSAFE = bytes.maketrans(b"-_", b"+/")
MAX_EMBEDDED = 4 * 1024 * 1024


def _base64_decoded(run: str) -> list[bytes]:
    """``run``'s bytes read as base64 from its start and, when its length is no multiple of
    four, from where a whole encoding ending at its end would start: letters glued in front
    of the base64 (``b64QUJD...``) shift it, which only the second reading undoes."""
    data = re.sub(r"[\r\n=]", "", run).encode("ascii").translate(_URLSAFE)[: MAX_EMBEDDED * 2]
    starts = (0,) if len(data) % 4 == 0 else (0, len(data) % 4)
    out = []
    for start in starts:
        chunk = data[start:]
        chunk = chunk[: len(chunk) - len(chunk) % 4]
        try:
            out.append(base64.b64decode(chunk))
        except (binascii.Error, ValueError):
            continue
    return out


def _strings(entry: Entry, events: list[tuple[str, Any]]) -> Iterator[tuple[str, str]]:
    """Each string of the entry's bodies, with where it is: the JSON strings of JSON bodies, a
    text body, each streamed event's data (its JSON strings, or the data itself)."""
    for side, body in (("request", entry.request_body), ("response", entry.response_body)):
        if body.kind == "json":
            for _, value in _json_strings(body.value, limit=32):
                yield f"the {side}'s JSON", value
        elif body.kind == "text" and isinstance(body.value, str):
            yield f"the {side}'s text", body.value
    for data, value in events:
        if value is None:
            yield "the streamed response", data
        else:
            for _, text in _json_strings(value, limit=32):
                yield "the streamed response", text


def _embedded(strings: list[tuple[str, str]]) -> Iterator[tuple[str, bytes]]:
    """The decoded bytes of base64 and hex inside the bodies' strings (and what they
    decompress to): a file sent as ``data:text/plain;base64,...`` is a secret's usual way into
    a request, and its text, which the YAML shows encoded, is where the key is."""
    budget = 4 * MAX_EMBEDDED  # bytes decoded for one entry, in all
    for where, value in strings:
        if len(value) < 24:
            continue
        for match in _BASE64_RUN.finditer(value):
            decoded = _base64_decoded(match.group(0))
            if decoded and budget > 0:
                # joined by NULs, which no secret holds: one search for both readings
                joined = b"\x00".join(decoded)
                budget -= len(joined)
                yield f"base64 inside {where}", joined
                inflated = _inflated(decoded[0])
                if inflated is not None:
                    budget -= len(inflated)
                    yield f"compressed data in base64 inside {where}", inflated
        for match in _HEX_RUN.finditer(value[: MAX_EMBEDDED * 2]):
            if budget <= 0:
                return
            raw = bytes.fromhex(match.group(0))
            budget -= len(raw)
            yield f"hex inside {where}", raw
        if budget <= 0:
            return


def _entities_decoded(strings: list[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """The bodies' strings with HTML character references decoded (``&#115;k-...``), where
    they hold one: an HTML page, or such text in a JSON field or a streamed chunk, reads as
    the key to whoever renders it."""
    seen: dict[str, list[str]] = {}
    for where, value in strings:
        if "&" in value:
            decoded = html.unescape(value)
            if decoded != value:
                seen.setdefault(where, []).append(decoded)
    for where, values in seen.items():
        yield f"{where}, HTML entities decoded", "\n".join(values)


def _json_strings(
    value: object, path: str = "", depth: int = 0, limit: int = 16, keys: bool = False
) -> Iterator[tuple[str, str]]:
    """The strings in a JSON value, in order, each with its path (``.choices.*.delta.content``),
    to ``limit`` levels deep; with ``keys``, each object's keys too (at the object's path)."""
    if isinstance(value, str):
        yield path, value
    elif depth < limit and isinstance(value, dict):
        for name, item in value.items():
            if keys:
                yield path, str(name)
            yield from _json_strings(item, f"{path}.{name}", depth + 1, limit, keys)
    elif depth < limit and isinstance(value, list):
        for item in value:
            yield from _json_strings(item, f"{path}.*", depth + 1, limit, keys)


def _searched(
    where: str, text: str, raw: bytes | None, allow: list[str], known: Mapping[str, str], values: list[str]
) -> list[SecretFinding]:
    """Secret shapes in ``text``, and the first ``known`` value in it (in ``raw``, its bytes,
    when it was decoded from some)."""
    found = find_secrets(text, allow, body=where)
    for value in values:
        if (value.encode("utf-8") in raw) if raw is not None else (value in text):
            found.append(SecretFinding(known[value], 0, _masked_known(value), where))
            break
    return found


def _masked_known(value: str) -> str:
    """A value known to be secret, shown by its length only: of a short one, the six
    characters a pattern's match keeps would be most of it."""
    return f"<{len(value)} characters>"


# Content types of streams a client reads event by event, whatever the body's kind.
_STREAM_TYPES = ("text/event-stream", "ndjson", "jsonl", "json-seq")
# A JSON string escape: \uXXXX, or one character after the backslash.
_JSON_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|([\"\\/bfnrt]))")
_ESCAPED = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(text: str) -> str:
    """``text`` with its JSON string escapes decoded, wherever they are (a JSONP body, an
    event whose data is not JSON as a whole): ``\u0073`` is ``s`` to the client that reads it."""

    def decoded(match: re.Match[str]) -> str:
        hexa, char = match.groups()
        return chr(int(hexa, 16)) if hexa else _ESCAPED.get(char, char)

    return _JSON_ESCAPE.sub(decoded, text)


def _stream_datas(entry: Entry) -> list[str]:
    """The data of each event of a streamed answer, in order, as a client reads it, whatever
    kind the body was kept as: a stream that the encoder keeps as text (its events are not
    byte for byte what it would write again: a last event without its blank line, mixed
    line ends, a comment line, blank NDJSON lines) is split here as a client splits it."""
    body = entry.response_body
    if body.kind == "lines":
        return [line for line in body.value if line.strip()]
    if body.kind == "eventstream":
        return [json.dumps(event["json"]) if "json" in event else event["text"]
                for event in body.value if "json" in event or "text" in event]
    if body.kind == "events":
        events = list(body.value)
    elif body.kind == "text" and isinstance(body.value, str):
        ctype = next((v for k, v in entry.response_headers.items() if k.lower() == "content-type"), "").lower()
        text = body.value.replace("\r\n", "\n").replace("\r", "\n")
        sse = "text/event-stream" in ctype or text.startswith("data:") or "\ndata:" in text
        if not sse:
            if any(kind in ctype for kind in _STREAM_TYPES):
                return [line for line in text.split("\n") if line.strip()]
            return []
        events = text.split("\n\n")
    else:
        return []
    datas = ["\n".join(line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:"))
             for event in events]
    return [data for data in datas if data]


def _parsed(data: str) -> Any:
    """An event's data as JSON, or None when it is not JSON."""
    if data.lstrip()[:1] not in ("{", "[", '"'):
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _escaped_events(entry: Entry, events: list[tuple[str, Any]]) -> Iterator[tuple[str, str]]:
    """The strings of a streamed answer's JSON, decoded, one a line, when its events hold a
    backslash: a secret written with escapes (``\\u0073`` for ``s``, ``\\/`` for ``/`` as PHP
    writes a slash, ``\\"`` inside a value) is not itself in the events' text, which
    redaction and the YAML's search read, and one right after a ``\\n`` has no word
    boundary there. Each event's ``data:`` lines are joined as SSE does; a data that is a
    bare JSON string counts too, and one that is not JSON has its escapes decoded where
    they are. So has a text body's (a JSONP answer, an error page quoting JSON)."""
    strings: list[str] = []
    for data, value in events:
        if "\\" not in data:
            continue
        if value is None:
            strings.append(_unescape(data))
        else:
            strings.extend(text for _, text in _json_strings(value, keys=True))
    if strings:
        yield "the streamed response's strings, unescaped", "\n".join(strings)
    for side, body in (("request", entry.request_body), ("response", entry.response_body)):
        if body.kind == "text" and isinstance(body.value, str) and "\\" in body.value:
            unescaped = _unescape(body.value)
            if unescaped != body.value:
                yield f"the {side}'s text, unescaped", unescaped


def _indexed_strings(
    value: object, at: tuple[str, ...] = (), path: str = "", depth: int = 0
) -> Iterator[tuple[tuple[str, ...], str, str]]:
    """The strings of one event's JSON, each with a key made of the ``index`` of every object
    on its way (a choice's, a content block's, a tool call's) and its own field's name, and
    with its path (``choices[0].delta.content``): the key is the same for one choice's or one
    block's text however the events shape it (Anthropic's block start holds
    ``content_block.text``, its deltas ``delta.text``)."""
    if depth >= 16:
        return
    if isinstance(value, dict):
        index = value.get("index")
        indexed = isinstance(index, int) and not isinstance(index, bool)
        here = (*at, f"#{index}") if indexed else at
        shown = f"{path}[{index}]" if indexed and path else path
        for name, item in value.items():
            where = f"{shown}.{name}" if shown else str(name)
            if isinstance(item, str):
                yield (*here, str(name)), where, item
            else:
                yield from _indexed_strings(item, here, where, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _indexed_strings(item, at, path, depth + 1)
    elif isinstance(value, str):
        yield at, path, value


def _streamed_fields(events: list[tuple[str, Any]]) -> Iterator[tuple[str, str]]:
    """For a streamed answer, each field's text joined across its events, in order, one per
    choice or content block (``choices[i].delta.content``, a tool call's ``arguments``,
    Anthropic's ``text``): a value the API split over several events, as models split their
    tokens, is in no one event's text, which is what redaction and the YAML's search see.
    Fields whose every event says the same are left out. Events whose data is not JSON are
    joined as they are."""
    texts: dict[tuple[str, ...], tuple[str, list[str]]] = {}
    plain: list[str] = []
    for data, value in events:
        if value is None:
            plain.append(data)
            continue
        for key, where, text in _indexed_strings(value):
            texts.setdefault(key, (where, []))[1].append(text)
    for where, pieces in texts.values():
        if len(pieces) > 1 and len(set(pieces)) > 1:
            yield f"the streamed response's {where or 'data'}, joined", "".join(pieces)
    if len(plain) > 1:
        yield "the streamed response's data, joined", "".join(plain)
