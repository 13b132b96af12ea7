"""Where a request becomes a key.

A key is the sha256 of a canonical JSON form of the request. What goes in:

- ``KEY_VERSION`` (bumped when these rules change for every request, so old
  cassettes miss instead of answering for a request they were not recorded for;
  a change that concerns only requests carrying a credential, such as a name
  added to ``SECRET_QUERY_PARAMS``, is not a bump: those few re-record, and
  every other cassette keeps its key);
- the HTTP method, the URL path and the sorted query, minus credential
  parameters; the scheme, host and port (never the userinfo) only when
  ``match_host`` is set;
- the headers that select an API version (``API_VERSION_HEADERS``);
- the JSON body with keys sorted, integral floats written as integers, and
  volatile fields dropped (``DEFAULT_IGNORED_FIELDS`` plus the user's);
  a ``multipart/form-data`` body as its parts (``multipart.key_form``: each
  part's name, file name, content type and content sha256, in order, whatever
  the boundary; parts named like an ignored field left out);
  any other body is hashed as raw bytes;
- the model version label (the model, or ``model@version`` when pinned, behind
  ``namespace+`` for a request of a namespace). The
  model is the JSON body's ``model``, a form's ``model`` field, or else the
  one the URL path names (``MODEL_IN_PATH``: Gemini, Vertex AI, Bedrock).

Everything else (authorization, organisation and project headers, timeouts,
retries, the SDK's own headers) stays out: it does not change the answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .keyrules import NO_MODEL, KeyRules

__all__ = [
    "API_VERSION_HEADERS",
    "DEFAULT_IGNORED_FIELDS",
    "KEY_VERSION",
    "NO_MODEL",
    "SECRET_QUERY_PARAMS",
    "KeyRules",
    "RequestKey",
    "canonical_body",
    "flatten",
    "is_urlencoded",
    "make_key",
    "model_in_path",
    "plain_body",
    "sequenced",
]

KEY_VERSION = 1

# Headers that choose which API answers: a different value may give a different response.
API_VERSION_HEADERS = ("openai-beta", "anthropic-version", "anthropic-beta")

# Fields that identify the caller or annotate the request, never change the output.
DEFAULT_IGNORED_FIELDS = ("user", "safety_identifier", "prompt_cache_key", "metadata")

# Query parameters that carry credentials (names compared in lower case): neither in the
# key nor in a cassette. API keys and tokens, signed URLs (AWS SigV4, Azure SAS ``sig``),
# OAuth codes (and PKCE's ``code_verifier``) and passwords.
SECRET_QUERY_PARAMS = frozenset({
    "key", "api-key", "api_key", "apikey", "token", "access_token", "refresh_token", "id_token",
    "client_secret", "password", "sig", "signature", "code", "code_verifier",
    "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature", "x-goog-credential",
})

# APIs that name the model in the URL path, not in the body:
# Gemini and Vertex AI (``/v1beta/models/gemini-2.0-flash:generateContent``,
# ``.../publishers/google/models/{model}:streamGenerateContent``) and Bedrock
# (``/model/{model id}/converse``, ``/converse-stream``, ``/invoke``,
# ``/invoke-with-response-stream``; the id percent-encoded).
MODEL_IN_PATH = (
    re.compile(r"/(?:models|tunedModels)/([^/:]+):[A-Za-z]+$"),
    re.compile(r"(?:^|/)model/([^/]+)/(?:converse|converse-stream|invoke|invoke-with-response-stream)$"),
)


@dataclass(frozen=True)
class RequestKey:
    """A request's key and what was read from the request to make it."""

    key: str
    method: str
    path: str
    model: str | None
    model_version: str
    # the canonical body (JSON value) or None when the body is not JSON
    body: Any
    query: tuple[tuple[str, str], ...]
    host: str = ""
    # the n-th identical request of a test marked sequence=True (0: not sequenced), and the
    # key it would have without sequence=True (what each occurrence's key is made from)
    occurrence: int = 0
    unsequenced: str = ""

    @property
    def prefix(self) -> str:
        return self.key[:12]


def _normalise(value: Any) -> Any:
    # JSON says 1 and 1.0 are the same number; Python's json does not.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def _drop(value: Any, parts: list[str]) -> None:
    """Remove the field at a dotted path; ``*`` matches every key or item."""
    head, rest = parts[0], parts[1:]
    if isinstance(value, dict):
        targets = list(value) if head == "*" else [head]
        for name in targets:
            if name not in value:
                continue
            if rest:
                _drop(value[name], rest)
            else:
                del value[name]
    elif isinstance(value, list):
        if head == "*":
            indices = list(range(len(value)))
        elif head.lstrip("-").isdigit():
            indices = [int(head)]
        else:
            return
        for index in sorted(indices, reverse=True):
            if -len(value) <= index < len(value):
                if rest:
                    _drop(value[index], rest)
                else:
                    del value[index]


def canonical_body(body: bytes, ignore_fields: Iterable[str] = ()) -> Any:
    """The JSON value of a body with ignored fields removed, or None when it is not JSON."""
    stripped = body.lstrip()
    if not stripped or stripped[:1] not in (b"{", b"["):
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    value = _normalise(value)
    if isinstance(value, dict):
        for name in DEFAULT_IGNORED_FIELDS:
            value.pop(name, None)
    for dotted in ignore_fields:
        _drop(value, dotted.split("."))
    return value


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _api_version_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """The API-version headers; ``headers`` is a dict, or a mapping whose get ignores case."""
    if isinstance(headers, dict):
        headers = {k.lower(): v for k, v in headers.items()}
    found = {}
    for name in API_VERSION_HEADERS:
        value = headers.get(name)
        if value is not None:
            found[name] = _text(value)
    return found


def model_in_path(path: str) -> str | None:
    """The model a URL path names (see ``MODEL_IN_PATH``), or None."""
    for pattern in MODEL_IN_PATH:
        found = pattern.search(path)
        if found:
            return unquote(found.group(1))
    return None


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if value is None and isinstance(headers, dict):
        value = next((v for k, v in headers.items() if str(k).lower() == name), None)
    return None if value is None else _text(value)


def _content_type(headers: Mapping[str, Any]) -> str | None:
    return _header(headers, "content-type")


def is_urlencoded(content_type: str | None) -> bool:
    """Whether a body of ``content_type`` is an ``application/x-www-form-urlencoded`` form."""
    return "x-www-form-urlencoded" in (content_type or "").lower()


def _form_fields(raw: bytes, headers: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | None:
    """An ``application/x-www-form-urlencoded`` body's fields, sorted, without its credentials
    (``SECRET_QUERY_PARAMS``, as in a query): an OAuth token request keyed without its
    ``client_secret``, so that it replays for whoever holds another. None for any other body,
    and for a form with no credential field, keyed by its bytes as it always was."""
    if not is_urlencoded(_content_type(headers)):
        return None
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return None
    kept = tuple(sorted((k, v) for k, v in pairs if k.lower() not in SECRET_QUERY_PARAMS))
    return kept if len(kept) < len(pairs) else None


def plain_body(raw: bytes, headers: Mapping[str, Any]) -> bytes:
    """A request body with its Content-Encoding undone: what the key, the cassette and the
    secret search read. A gzip body differs on every call (its header holds the time) and
    hides what it says; one that does not decode is taken as it is."""
    encoding = _header(headers, "content-encoding") if raw else None
    if not encoding or encoding.strip().lower() == "identity":
        return raw
    from .encoding import UndecodableBody, decode_content  # loaded by the first such body

    try:
        return decode_content(raw, encoding)
    except UndecodableBody:
        return raw


_NO_RULES = KeyRules()  # the default: nothing changed


def make_key(
    method: str,
    url: str,
    body: bytes | None,
    headers: Mapping[str, Any],
    rules: KeyRules = _NO_RULES,
    *,
    form: Sequence[Mapping[str, Any]] | None = None,
) -> RequestKey:
    """Compute the key of one HTTP request under ``rules``.

    ``form``, the parts of a form as a cassette describes them, stands for a
    multipart body that is no longer at hand (``llm-cache verify`` passes it)."""
    parts = urlsplit(url)
    query = tuple(
        sorted(
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k.lower() not in SECRET_QUERY_PARAMS
        )
    )
    raw = plain_body(body or b"", headers)
    canonical = None if form is not None else canonical_body(raw, rules.ignore_fields)
    model = canonical.get("model") if isinstance(canonical, dict) else None
    if model is not None and not isinstance(model, str):
        model = str(model)
    form_key = None
    if form is not None or (canonical is None and raw):
        from . import multipart  # loaded by the first body that is not JSON, not before

        if form is None:
            form = multipart.describe(raw, _content_type(headers))
        if form is not None:
            model = multipart.text_field(form, "model")
            ignored = {*DEFAULT_IGNORED_FIELDS, *(f for f in rules.ignore_fields if "." not in f)}
            form_key = multipart.key_form([p for p in form if p.get("name") not in ignored])
    fields = None
    if canonical is None and form_key is None and raw:
        fields = _form_fields(raw, headers)
        if fields is not None and model is None:
            model = next((v for k, v in fields if k == "model"), None)
    if model is None:
        model = model_in_path(parts.path)
    version = rules.version_label(model)
    material: dict[str, Any] = {
        "v": KEY_VERSION,
        "method": method.upper(),
        "path": parts.path or "/",
        "query": query,
        "headers": _api_version_headers(headers),
        "model_version": version,
    }
    # Two different fields, so a JSON body can never collide with a raw one.
    if canonical is not None:
        material["body"] = canonical
    elif form_key is not None:
        material["multipart"] = form_key
    elif fields is not None:
        material["form"] = fields
    else:
        material["raw_body_sha256"] = hashlib.sha256(raw).hexdigest()
    # the userinfo (user:password@) is a credential, never part of the host
    host = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    if rules.match_host:
        material["host"] = host
    digest = hashlib.sha256(_dumps(material).encode("utf-8")).hexdigest()
    return RequestKey(
        key=digest,
        method=method.upper(),
        path=parts.path or "/",
        model=model,
        model_version=version,
        body=canonical,
        query=query,
        host=host,
    )


def sequenced(key: str, occurrence: int) -> str:
    """The key of the n-th identical request within a test marked ``sequence=True``."""
    return hashlib.sha256(f"{key}#{occurrence}".encode()).hexdigest()


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf paths of a JSON value, written like ``messages[1].content``."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        if not value and prefix:
            out[prefix] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list):
        if not value and prefix:
            out[prefix] = []
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out
