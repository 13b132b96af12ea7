"""What never reaches a cassette.

- Request headers are dropped except ``REQUEST_HEADERS``; response headers
  except ``RESPONSE_HEADERS``. Authorization, cookies, organisation and
  request ids never get written.
- Secret-looking query parameters are dropped (see ``key.SECRET_QUERY_PARAMS``).
- The value of every environment variable whose name ends in ``_API_KEY``,
  ``_TOKEN`` or ``_SECRET``, and of the request's own credential headers,
  is replaced by ``<redacted>`` wherever it appears (an API that echoes the
  key into its body included).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "REDACTED",
    "REQUEST_HEADERS",
    "RESPONSE_HEADERS",
    "CREDENTIAL_HEADERS",
    "keep_headers",
    "secret_values",
    "redact",
    "SECRET_PATTERNS",
    "SecretFinding",
    "find_secrets",
]

REDACTED = "<redacted>"

REQUEST_HEADERS = frozenset({"content-type", "openai-beta", "anthropic-version", "anthropic-beta"})
RESPONSE_HEADERS = frozenset({"content-type", "openai-version", "anthropic-version"})
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "proxy-authorization", "x-goog-api-key")
SECRET_ENV_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET")
# Shorter values would redact ordinary words ("test", "1").
MIN_SECRET_LENGTH = 8


def keep_headers(headers: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, str]:
    """The allow-listed headers, names lowercased, several values joined."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in allowed:
            if isinstance(value, (list, tuple)):
                value = ", ".join(str(v) for v in value)
            out[lower] = str(value)
    return out


def secret_values(request_headers: Mapping[str, Any] = {}, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every value that must not appear in a cassette, longest first."""
    env = os.environ if environ is None else environ
    found = {
        value
        for name, value in env.items()
        if name.upper().endswith(SECRET_ENV_SUFFIXES) and len(value) >= MIN_SECRET_LENGTH
    }
    for name, value in request_headers.items():
        if name.lower() in CREDENTIAL_HEADERS:
            values = value if isinstance(value, (list, tuple)) else [value]
            for item in values:
                text = item.decode("latin-1") if isinstance(item, bytes) else str(item)
                found.add(text)
                scheme, _, token = text.partition(" ")
                if token and scheme.lower() in ("bearer", "basic", "token"):
                    found.add(token.strip())
    return sorted((v for v in found if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` with every secret replaced by ``<redacted>``, in strings and mapping keys."""
    secrets = list(secrets)
    if not secrets:
        return value

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            for secret in secrets:
                if secret in item:
                    item = item.replace(secret, REDACTED)
            return item
        if isinstance(item, dict):
            return {walk(k): walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        return item

    return walk(value)


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


@dataclass(frozen=True)
class SecretFinding:
    kind: str
    line: int
    # the match with its middle masked, so the report itself leaks nothing
    excerpt: str


def _mask(text: str) -> str:
    return text[:6] + "..." + text[-2:] if len(text) > 10 else "..."


def find_secrets(text: str, allow: Iterable[str] = ()) -> list[SecretFinding]:
    """Secret-looking values in ``text``, except those matching an ``allow`` regex."""
    allowed = [re.compile(a) for a in allow]
    found = []
    for kind, pattern in SECRET_PATTERNS.items():
        for match in pattern.finditer(text):
            value = match.group(0)
            if any(a.search(value) for a in allowed):
                continue
            found.append(SecretFinding(kind, text.count("\n", 0, match.start()) + 1, _mask(value)))
    return sorted(found, key=lambda f: (f.line, f.kind))
