"""llm_cache: record and replay LLM API calls, keyed by a canonical hash of each request.

Importing this package never imports pytest; the pytest plugin lives in
``llm_cache.pytest_plugin`` and is loaded through the ``pytest11`` entry point.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .cassette import Entry, dump_entry, load_entry
from .errors import (
    CacheMiss,
    CassetteError,
    ConfigError,
    LLMCacheError,
    LLMCacheWarning,
    StoreUnavailable,
)
from .intercept import intercept
from .key import KeyRules, RequestKey, make_key
from .library import LLMCache, WarmReport
from .modes import Mode
from .session import CacheSession, Scope
from .settings import Settings
from .stores import FileStore, MemoryStore, Store, open_store

try:
    __version__ = version("pytest-llm-cache")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "CacheMiss",
    "CacheSession",
    "CassetteError",
    "ConfigError",
    "Entry",
    "FileStore",
    "KeyRules",
    "LLMCache",
    "LLMCacheError",
    "LLMCacheWarning",
    "Mode",
    "RequestKey",
    "Scope",
    "Settings",
    "MemoryStore",
    "Store",
    "StoreUnavailable",
    "WarmReport",
    "__version__",
    "dump_entry",
    "intercept",
    "load_entry",
    "make_key",
    "open_store",
]
