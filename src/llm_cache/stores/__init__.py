"""Where entries live. Each store implements ``protocol.Store``; ``open_store`` picks one by URL.

- ``file://PATH`` (or a plain path): YAML cassettes under PATH, relative to the rootdir;
- ``memory://`` (``?max_entries=N&max_bytes=SIZE``): bounded, nothing persisted;
- ``redis://host:port/db`` (``?prefix=llm-cache:&timeout=2&grace=0s``): shared by machines.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from ..errors import ConfigError
from ..values import STORE_FORM, parse_count, parse_duration, parse_size
from .files import FileStore
from .memory import MemoryStore
from .protocol import EntryMeta, Store

__all__ = ["Store", "EntryMeta", "FileStore", "MemoryStore", "open_store", "STORE_FORM"]



def open_store(url: str, root: Path, ttl: timedelta | None = None, setting: str = "--llm-cache-store") -> Store:
    """The store a URL names. Relative file paths are taken from ``root``."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if parts.scheme in ("", "file"):
        path = (parts.netloc + parts.path) if parts.scheme == "file" else url
        if not path:
            raise ConfigError(setting=setting, value=url, expected=STORE_FORM)
        return FileStore(root / path)
    if parts.scheme == "memory":
        unknown = set(query) - {"max_entries", "max_bytes"}
        if unknown:
            raise ConfigError(setting=setting, value=url, expected="memory:// with max_entries= and max_bytes= only")
        return MemoryStore(
            max_entries=parse_count(query.get("max_entries", "10000"), f"{setting} max_entries"),
            max_bytes=parse_size(query.get("max_bytes"), f"{setting} max_bytes"),
        )
    if parts.scheme in ("redis", "rediss", "unix"):
        from .redis import RedisStore

        return RedisStore.from_url(
            url,
            ttl=ttl,
            grace=parse_duration(query["grace"], f"{setting} grace") if "grace" in query else None,
        )
    raise ConfigError(setting=setting, value=url, expected=STORE_FORM)
