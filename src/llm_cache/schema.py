"""What a cassette's document must hold, checked as its ``Entry`` is built (``parse_entry``).

Every field is checked for its type and range, each body for its kind (``json``, ``events``,
``lines``, ``eventstream``, ``multipart``, ``text``, ``base64``), and the format version for
one this release reads: format 1 (no ``offsets_ms``) is read as it is, format 2 with its
offsets, one per streamed event, never decreasing. Any failure is a ``CassetteError`` that
names the file and the field.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import datetime, timezone
from typing import Any

from .body import _PAYLOAD_KINDS, BODY_KINDS, STREAM_KINDS, Body
from .entry import FORMAT_VERSION, READABLE_FORMATS, Entry
from .errors import CassetteError

__all__ = ["parse_entry"]


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
            path, f"response.offsets_ms has {len(value)} numbers for {len(body.value)} events: it needs one per event "
            "(after a hand edit of the events, delete the offsets_ms line: the events then replay at once)"
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
    if doc is None:  # an empty file, or one of comments only (a write cut short by hand, a bad merge)
        raise _fail(path, "it is empty: no YAML document in it")
    if not isinstance(doc, dict):
        kind = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
            type(doc), type(doc).__name__)
        raise _fail(path, f"expected a mapping at the top (key:, request:, response:), got {kind}")
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
        or not isinstance(rules.get("ignore_fields") or [], list)
        or not all(isinstance(f, str) for f in rules.get("ignore_fields") or [])
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
