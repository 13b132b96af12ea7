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
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "REDACTED",
    "REQUEST_HEADERS",
    "RESPONSE_HEADERS",
    "CREDENTIAL_HEADERS",
    "keep_headers",
    "secret_values",
    "redact",
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
