"""A cache error raised on an SDK's request as that SDK's own kind, where the SDK would
take anything else for a connection error.

The anthropic SDK (2.x) wraps any exception its transport raises in
``APIConnectionError("Connection error.")`` and retries it: ``max_retries`` times, 2 by
default, sleeping 0.5 to 8 s between tries. A replay miss would then cost seconds and
read as a network failure. The SDK lets its own errors through untouched, unwrapped
and not retried, so an error of the cache raised on one of its requests is made an
instance of ``anthropic.AnthropicError`` as well: the same ``CacheMiss`` (or
``NetworkBlocked``, ``StaleCassette``...), message and attributes, that
``except anthropic.AnthropicError`` also catches, as it caught the wrapper before.
The openai SDK, google-genai, mistralai and ollama let the cache's errors through as
they are.
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
        twin = _twins[(cls, base)] = type(cls.__name__, (cls, base), attrs)
    return twin


def _anthropic_base(headers: Any) -> type | None:
    module = sys.modules.get("anthropic")
    if module is None:
        return None  # not loaded: not its request
    if headers.get("anthropic-version") is None and not _ANTHROPIC_AGENT.match(headers.get("user-agent") or ""):
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
