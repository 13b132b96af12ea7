"""Entries and their YAML documents: the cassette format.

One YAML file per key, keys in a fixed order, made to be read in review::

    llm_cache: 2                  # format version (1 is still read)
    key: 9f2c...                  # the full sha256 key, checked on load
    recorded_at: '2026-11-27T09:00:00Z'
    model: gpt-4o                 # the model the request asked for
    model_version: gpt-4o@2024-08-06
    response_model: gpt-4o-2024-08-06
    system_fingerprint: fp_...
    duration_ms: 812.4            # the original call's duration
    usage: {input_tokens: 12, output_tokens: 40}
    request:  {method, path, query, headers, json | text | base64}
    response: {status, headers, json | events | text | base64, offsets_ms}

For a streamed response, ``offsets_ms`` gives each event's arrival: milliseconds
from the start of the response until that event had fully arrived, one number
per event, on one line after the body so a reviewer can skip it::

    response:
      status: 200
      headers: {content-type: text/event-stream}
      events:
      - 'data: {"choices": [...]}'
      - 'data: [DONE]'
      offsets_ms: [0.0, 12.5]

Format 2 added ``offsets_ms``; format 1 files (which never have it) are read as
they are, and ``llm-cache upgrade`` rewrites them as format 2.

A body is stored as ``json`` (a YAML mapping) when it parses as JSON, as
``events`` (one string per server-sent event, every line kept) for
``text/event-stream``, as ``lines`` (one string per line) for NDJSON, as
``eventstream`` (one mapping per message: its headers and its payload) for AWS
event-stream frames, as ``text`` when it is other UTF-8 text, and as ``base64``
otherwise. Each of these gives back the bytes it was made from (``json``: the
same value). Bodies are stored decoded; replay sends them with ``Content-Length``
recomputed and no ``Content-Encoding``; a stream (``events``, ``lines``,
``eventstream``) is replayed one event, line or frame per chunk.

A ``multipart/form-data`` request is stored as ``multipart``: its parts in order,
text fields as text, file parts as file name, content type, size and sha256. That
is a description for review, not the bytes sent (a request body is never replayed).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .body import _PAYLOAD_KINDS, BODY_KINDS, STREAM_KINDS, Body, encode_body, encode_request_body
from .errors import CassetteError

__all__ = [
    "FORMAT_VERSION",
    "READABLE_FORMATS",
    "Body",
    "Entry",
    "dump_entry",
    "encode_body",
    "encode_request_body",
    "load_doc",
    "load_entry",
    "parse_entry",
]

# The format dump_entry writes, and every format this release reads.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
_FRAMING_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})
class _FlowList(list[float]):
    """A list dumped on one line (``[0.0, 12.5]``): the event offsets, which nobody reviews."""


@functools.cache
def _yaml() -> tuple[Any, type[Any], type[Any]]:
    """PyYAML, its safe loader and our dumper (C versions when present), imported on first
    use: a replay served from parsed copies never needs them."""
    import yaml

    loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    base: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

    class Dumper(base):  # type: ignore[misc]
        """Safe dumper writing multi-line strings (SSE events) as literal blocks."""

    def represent_str(dumper: Any, value: str) -> Any:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    def represent_flow_list(dumper: Any, value: _FlowList) -> Any:
        return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)

    Dumper.add_representer(str, represent_str)
    Dumper.add_representer(_FlowList, represent_flow_list)
    return yaml, loader, Dumper


# The line width of the YAML; a longer offsets line widens it, so that it never wraps.
_WIDTH = 4096


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


def dump_entry(entry: Entry) -> str:
    """The YAML text of an entry, in format ``FORMAT_VERSION``."""
    doc = entry.to_doc()
    width = _WIDTH
    offsets = doc["response"].get("offsets_ms")
    if offsets:
        # more than the line takes ("  offsets_ms: [", then "1234.5, " per event)
        width = max(width, 32 + sum(len(repr(ms)) + 4 for ms in offsets))
    yaml, _, dumper = _yaml()
    text: str = yaml.dump(doc, Dumper=dumper, sort_keys=False, allow_unicode=True, width=width)
    return text


def _fail(path: str, reason: str) -> CassetteError:
    return CassetteError(path=path, reason=reason)


def _parse_time(value: Any, path: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str):
        raise _fail(path, f"recorded_at must be an ISO 8601 time, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(path, f"recorded_at is not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _body(section: dict[str, Any], where: str, path: str) -> Body:
    kinds = [k for k in BODY_KINDS if k in section]
    if len(kinds) > 1:
        raise _fail(path, f"{where} has more than one body ({', '.join(kinds)})")
    if not kinds:
        return Body("text", "")
    kind = kinds[0]
    value = section[kind]
    if kind == "events":
        if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
            raise _fail(path, f"{where}.events must be a list of strings")
        newline = section.get("newline", "\n")
        if newline not in ("\n", "\r\n"):
            raise _fail(path, f"{where}.newline must be '\\n' or '\\r\\n'")
        return Body("events", value, newline)
    if kind == "lines":
        if not isinstance(value, list) or not all(isinstance(line, str) and "\n" not in line for line in value):
            raise _fail(path, f"{where}.lines must be a list of strings, each one line")
        return Body("lines", value)
    if kind == "eventstream":
        _check_eventstream(value, f"{where}.eventstream", path)
        return Body("eventstream", value)
    if kind == "multipart":
        _check_multipart(value, f"{where}.multipart", path)
        return Body("multipart", value)
    if kind in ("text", "base64") and not isinstance(value, str):
        raise _fail(path, f"{where}.{kind} must be a string")
    if kind == "base64":
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _fail(path, f"{where}.base64 is not valid base64") from None
    return Body(kind, value)


def _check_eventstream(value: Any, where: str, path: str) -> None:
    if not isinstance(value, list):
        raise _fail(path, f"{where} must be a list of messages")
    for index, event in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(event, dict):
            raise _fail(path, f"{at} must be a mapping of headers and a payload")
        _str_map(event.get("headers"), f"{at}.headers", path)
        kinds = [k for k in _PAYLOAD_KINDS if k in event]
        if len(kinds) != 1 or not set(event) <= {"headers", *_PAYLOAD_KINDS}:
            raise _fail(path, f"{at} must hold headers and one payload: json, text or base64")
        if kinds[0] != "json" and not isinstance(event[kinds[0]], str):
            raise _fail(path, f"{at}.{kinds[0]} must be a string")
        if kinds[0] == "base64":
            try:
                base64.b64decode(event["base64"], validate=True)
            except (binascii.Error, ValueError):
                raise _fail(path, f"{at}.base64 is not valid base64") from None


def _check_multipart(value: Any, where: str, path: str) -> None:
    if not isinstance(value, list):
        raise _fail(path, f"{where} must be a list of parts")
    for index, part in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(part, dict) or not all(
            part.get(name) is None or isinstance(part[name], str)
            for name in ("name", "filename", "content_type", "text", "sha256")
        ):
            raise _fail(path, f"{at} must map name, filename, content_type, text and sha256 to strings")
        if not isinstance(part.get("text"), str) and not (
            isinstance(part.get("size"), int) and re.fullmatch(r"[0-9a-f]{64}", str(part.get("sha256")))
        ):
            raise _fail(path, f"{at} must hold a text, or a size and a sha256")


def _offsets(section: dict[str, Any], body: Body, path: str) -> list[float] | None:
    value = section.get("offsets_ms")
    if value is None:
        return None
    if body.kind not in STREAM_KINDS:
        raise _fail(path, f"response.offsets_ms is only for a streamed (events) body, not a {body.kind} one")
    if not isinstance(value, list):
        raise _fail(path, f"response.offsets_ms must be a list of numbers, got {type(value).__name__}")
    if len(value) != len(body.value):
        raise _fail(
            path, f"response.offsets_ms has {len(value)} numbers for {len(body.value)} events: it needs one per event"
        )
    previous = 0.0
    for index, ms in enumerate(value):
        if not isinstance(ms, (int, float)) or isinstance(ms, bool):
            raise _fail(path, f"response.offsets_ms[{index}] must be a number, got {ms!r}")
        if not math.isfinite(ms) or ms < 0:
            raise _fail(path, f"response.offsets_ms[{index}] must be a non-negative number of milliseconds, got {ms!r}")
        if ms < previous:
            raise _fail(
                path, f"response.offsets_ms must not decrease: [{index}] is {ms!r}, after {previous!r}"
            )
        previous = ms
    return [float(ms) for ms in value]


def _version(doc: dict[str, Any], path: str) -> int:
    """The document's format version, when this release reads it."""
    version = doc.get("llm_cache")
    number = version if isinstance(version, int) and not isinstance(version, bool) else None
    if number is not None and number in READABLE_FORMATS:
        return number
    reads = f"this release reads formats {' and '.join(map(str, READABLE_FORMATS))}"
    if version is None:
        raise _fail(path, f"it has no llm_cache format version, so it is not a cassette ({reads})")
    if number is not None and number > FORMAT_VERSION:
        raise _fail(
            path, f"unknown format version {number} ({reads}); it was written by a newer "
            "pytest-llm-cache: upgrade pytest-llm-cache to read it",
        )
    raise _fail(path, f"unknown format version {version!r} ({reads})")


def _str_map(value: Any, where: str, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _fail(path, f"{where} must map names to strings")
    return dict(value)


def parse_entry(doc: Any, path: str, expected_key: str | None = None) -> Entry:
    """Validate a loaded YAML document and build its entry."""
    if not isinstance(doc, dict):
        raise _fail(path, f"expected a mapping at the top, got {type(doc).__name__}")
    _version(doc, path)
    key = doc.get("key")
    if not isinstance(key, str) or not re.fullmatch(r"[0-9a-f]{64}", key):
        raise _fail(path, "key must be a 64-character hex sha256")
    if expected_key is not None and key != expected_key:
        raise _fail(path, f"it holds key {key[:12]}..., not the key it was looked up by {expected_key[:12]}...")
    request, response = doc.get("request"), doc.get("response")
    if not isinstance(request, dict) or not isinstance(response, dict):
        raise _fail(path, "request and response must be mappings")
    method, req_path = request.get("method"), request.get("path")
    if not isinstance(method, str) or not isinstance(req_path, str):
        raise _fail(path, "request.method and request.path must be strings")
    status = response.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise _fail(path, f"response.status must be an HTTP status code, got {status!r}")
    query = request.get("query") or []
    if not isinstance(query, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in query
    ):
        raise _fail(path, "request.query must be a list of [name, value] pairs")
    usage = doc.get("usage")
    if usage is not None and (
        not isinstance(usage, dict)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in usage.values())
    ):
        raise _fail(path, "usage must map token kinds to integers")
    duration = doc.get("duration_ms")
    if duration is not None and (not isinstance(duration, (int, float)) or isinstance(duration, bool)):
        raise _fail(path, "duration_ms must be a number")
    rules = doc.get("key_rules")
    if rules is not None and (
        not isinstance(rules, dict)
        or not set(rules) <= {"ignore_fields", "host", "sequence"}
        or not isinstance(rules.get("host", ""), str)
        or not isinstance(rules.get("sequence", 1), int)
        or not all(isinstance(f, str) for f in rules.get("ignore_fields", []) or [])
    ):
        raise _fail(path, "key_rules may hold ignore_fields (a list of strings), host (a string) and sequence (a number)")
    texts = {}
    for name in ("model", "model_version", "response_model", "system_fingerprint"):
        value = doc.get(name)
        if value is not None and not isinstance(value, str):
            raise _fail(path, f"{name} must be a string")
        texts[name] = value
    response_body = _body(response, "response", path)
    return Entry(
        key=key,
        recorded_at=_parse_time(doc.get("recorded_at"), path),
        model=texts["model"],
        model_version=texts["model_version"] or "_no_model",
        method=method,
        path=req_path,
        query=[list(p) for p in query],
        request_headers=_str_map(request.get("headers"), "request.headers", path),
        request_body=_body(request, "request", path),
        status=status,
        response_headers=_str_map(response.get("headers"), "response.headers", path),
        response_body=response_body,
        response_model=texts["response_model"],
        system_fingerprint=texts["system_fingerprint"],
        duration_ms=float(duration) if duration is not None else None,
        usage=dict(usage) if usage else None,
        key_rules=dict(rules) if rules else None,
        offsets_ms=_offsets(response, response_body, path),
    )


# A cassette is read in bounded time and memory whatever it holds: a size limit before
# parsing, and, when it defines anchors, a budget on the nodes its aliases expand to
# ("billion laughs"), and on nesting depth.
MAX_CASSETTE_BYTES = 64 * 1024 * 1024
MAX_EXPANDED_NODES = 200_000
MAX_DEPTH = 200


def _check_expansion(doc: Any, path: str) -> None:
    budget = MAX_EXPANDED_NODES
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise _fail(path, f"its aliases expand to more than {MAX_EXPANDED_NODES} nodes")
        if depth > MAX_DEPTH:
            raise _fail(path, f"it nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def load_doc(text: str | bytes, path: str) -> Any:
    """A cassette's YAML document, parsed with the safe loader in bounded time and memory
    but not yet validated (``parse_entry`` does that); a failure is a CassetteError naming ``path``."""
    if len(text) > MAX_CASSETTE_BYTES:
        raise _fail(path, f"it is {len(text)} bytes, more than the {MAX_CASSETTE_BYTES} a cassette may hold")
    yaml, loader, _ = _yaml()
    try:
        doc = yaml.load(text, Loader=loader)  # a safe loader, C or Python
    except yaml.YAMLError as exc:
        raise _fail(path, f"not valid YAML: {str(exc).splitlines()[0]}") from None
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:
        raise _fail(path, f"not valid YAML: {type(exc).__name__}: {str(exc)[:200]}") from None
    if (b"&" in text) if isinstance(text, bytes) else ("&" in text):  # anchors: aliases may expand
        _check_expansion(doc, path)
    return doc


def load_entry(text: str | bytes, path: str, expected_key: str | None = None) -> Entry:
    """Parse and validate a cassette's text (any readable format); any failure is a CassetteError naming ``path``."""
    return parse_entry(load_doc(text, path), path, expected_key)
