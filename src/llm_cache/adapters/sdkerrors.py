"""A cache error raised on an SDK's request as that SDK's own kind, where the SDK would
take anything else for a connection error.

The anthropic SDK (2.x) wraps any exception its transport raises in
``APIConnectionError("Connection error.")`` and retries it: ``max_retries`` times, 2 by
default, sleeping 0.5 to 8 s between tries. A replay miss would then cost seconds and
read as a network failure. The SDK lets its own errors through untouched, unwrapped
and not retried, so an error of the cache raised on one of its requests is made an
instance of ``anthropic.AnthropicError`` as well: the same ``CacheMiss`` (or
``NetworkBlocked``, ``StaleCassette``, ``StoreError``...), message and attributes. It is
not an ``anthropic.APIError``: ``except anthropic.APIConnectionError`` (a fall-back, a
retry on connection errors) no longer catches a miss, which is not a network failure;
``except anthropic.AnthropicError`` still does.

The SDK's requests are known by their ``anthropic-version`` header or their user agent
(``Anthropic/Python``, ``AsyncAnthropic/Python``, ``AnthropicBedrock/Python``...): a
client given another ``User-Agent`` and no ``anthropic-version`` (Bedrock, Vertex) is
not recognised. The openai SDK, google-genai, mistralai and ollama let the cache's
errors through as they are.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from ..errors import LLMCacheError

__all__ = ["as_sdk_error"]

# anthropic's clients send "<ClassName>/Python <version>": Anthropic, AsyncAnthropic,
# AnthropicBedrock, AnthropicVertex...
_ANTHROPIC_AGENT = re.compile(r"(Async)?Anthropic\w*/Python")
_twins: dict[tuple[type, type], type] = {}


def _twin(cls: type, base: type) -> type:
    twin = _twins.get((cls, base))
    if twin is None:
        # named as the cache's class: pytest and tracebacks show llm_cache.errors.CacheMiss
        attrs = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "_plain": cls}
        twin = _twins.setdefault((cls, base), type(cls.__name__, (cls, base), attrs))
    return twin


def _header(headers: Any, name: str) -> str | None:
    """A header of any of the clients' kinds: a mapping (case-insensitive or not), pairs."""
    if headers is None:
        return None
    pairs = headers.items() if hasattr(headers, "items") else headers
    try:
        for key, value in pairs:
            if isinstance(key, bytes):
                key = key.decode("latin-1")
            if isinstance(key, str) and key.lower() == name:
                return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    except (TypeError, ValueError):  # not headers after all
        return None
    return None


def _anthropic_base(headers: Any) -> type | None:
    module = sys.modules.get("anthropic")
    if module is None:
        return None  # not loaded: not its request
    if _header(headers, "anthropic-version") is None and not _ANTHROPIC_AGENT.match(_header(headers, "user-agent") or ""):
        return None
    base = getattr(module, "AnthropicError", None)
    return base if isinstance(base, type) and issubclass(base, Exception) else None


def as_sdk_error(exc: LLMCacheError, headers: Any) -> None:
    """Make ``exc`` an instance of the base error of the SDK that sent the request (its
    ``headers``), when that SDK would otherwise retry it; otherwise leave it as it is."""
    base = _anthropic_base(headers)
    if base is None or isinstance(exc, base):
        return
    try:
        exc.__class__ = _twin(exc.__class__, base)
    except TypeError:  # a layout the two classes cannot share: raised as it is
        pass
