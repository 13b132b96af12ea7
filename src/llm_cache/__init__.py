"""llm_cache: record and replay LLM API calls, keyed by a canonical hash of each request.

Importing this package imports nothing heavy: not pytest, not vcrpy, not an HTTP
client, not PyYAML. The public names are loaded when first used (PEP 562); the
pytest plugin lives in ``llm_cache.pytest.plugin`` (the ``pytest11`` entry point).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapters.patches import intercept
    from .cassette import Entry, dump_entry, load_entry
    from .engine.controls import carry
    from .engine.scope import Scope
    from .engine.session import CacheSession
    from .errors import (
        CacheMiss,
        CassetteError,
        ConfigError,
        ControlError,
        LLMCacheError,
        LLMCacheWarning,
        NetworkBlocked,
        NotStoredWarning,
        StaleCassette,
        StoreError,
        StoreUnavailable,
    )
    from .exchange import Request, Response
    from .key import KeyRules, RequestKey, make_key
    from .library import LLMCache, WarmReport
    from .metrics import Metrics
    from .modes import Mode
    from .settings import Settings
    from .stores import FileStore, MemoryStore, Store, open_store

# public name -> the module that defines it
_NAMES = {
    "CacheMiss": "errors",
    "CassetteError": "errors",
    "ConfigError": "errors",
    "ControlError": "errors",
    "LLMCacheError": "errors",
    "LLMCacheWarning": "errors",
    "NetworkBlocked": "errors",
    "NotStoredWarning": "errors",
    "StaleCassette": "errors",
    "StoreError": "errors",
    "StoreUnavailable": "errors",
    "CacheSession": "engine.session",
    "Scope": "engine.scope",
    "Entry": "cassette",
    "dump_entry": "cassette",
    "load_entry": "cassette",
    "FileStore": "stores",
    "MemoryStore": "stores",
    "Store": "stores",
    "open_store": "stores",
    "KeyRules": "key",
    "RequestKey": "key",
    "make_key": "key",
    "LLMCache": "library",
    "WarmReport": "library",
    "Metrics": "metrics",
    "Mode": "modes",
    "Request": "exchange",
    "Response": "exchange",
    "Settings": "settings",
    "intercept": "adapters.patches",
    "carry": "engine.controls",
}

__all__ = [
    "CacheMiss",
    "CacheSession",
    "CassetteError",
    "ConfigError",
    "ControlError",
    "Entry",
    "FileStore",
    "KeyRules",
    "LLMCache",
    "LLMCacheError",
    "LLMCacheWarning",
    "MemoryStore",
    "Metrics",
    "Mode",
    "NetworkBlocked",
    "NotStoredWarning",
    "Request",
    "RequestKey",
    "Response",
    "Scope",
    "Settings",
    "StaleCassette",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "WarmReport",
    "__version__",
    "carry",
    "dump_entry",
    "intercept",
    "load_entry",
    "make_key",
    "open_store",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value: Any = version("pytest-llm-cache")
        except PackageNotFoundError:  # running from a source tree that is not installed
            value = "0.0.0"
    elif name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'llm_cache' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
