"""Where entries live. Each store implements ``protocol.Store``; ``open_store`` picks one by URL.

- ``file://PATH`` (or a plain path): YAML cassettes under PATH, relative to the rootdir;
- ``memory://`` (``?max_entries=N&max_bytes=SIZE``): bounded, nothing persisted;
- ``redis://host:port/db`` (``?prefix=llm-cache:&timeout=2&grace=0s``): shared by machines;
  ``rediss://`` with TLS, ``unix://PATH`` on a socket;
- ``redis+cluster://host:port[,host:port...]/`` (``rediss+cluster://`` with TLS, same
  query): a Redis Cluster, each prefix's keys in one hash slot (see ``redis_keys``).
"""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from ..atomic import nearest_existing
from ..errors import ConfigError
from ..values import STORE_FORM, parse_count, parse_duration, parse_size
from .files import FileStore
from .memory import MemoryStore
from .protocol import EntryMeta, Store
from .redis_url import SCHEMES as REDIS_SCHEMES

__all__ = ["STORE_FORM", "EntryMeta", "FileStore", "MemoryStore", "Store", "open_store"]


_DRIVE = re.compile(r"[A-Za-z]:[\\/]")


def open_store(url: str, root: Path, ttl: timedelta | None = None, setting: str = "--llm-cache-store") -> Store:
    """The store a URL names. Relative file paths are taken from ``root``; a ``file://``
    path is percent-decoded (``file:///tmp/my%20dir`` is ``/tmp/my dir``)."""
    try:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
    except ValueError as exc:  # an unclosed [ of an IPv6 host, say
        raise ConfigError(setting=setting, value=_masked(url), expected=f"{STORE_FORM} ({exc})") from None
    if _DRIVE.match(url):  # C:\cache or C:/cache: a Windows path, not a URL of scheme "c"
        parts = parts._replace(scheme="", netloc="", path=url)
    if parts.scheme in ("", "file"):
        if parts.scheme == "file" and query:  # said, not ignored: a ttl= here would have done nothing
            raise ConfigError(setting=setting, value=_masked(url),
                              expected=f"file://PATH with no parameters (got {', '.join(sorted(query))}); a TTL "
                                       "is --llm-cache-ttl or LLMCache(ttl=...)")
        path = unquote(parts.netloc + parts.path) if parts.scheme == "file" else url
        if parts.scheme == "file" and sys.platform == "win32" and _DRIVE.match(path[1:]):
            path = path[1:]  # file:///C:/cache is C:/cache (RFC 8089)
        if not path or "\x00" in path:
            raise ConfigError(setting=setting, value=url, expected=STORE_FORM)
        directory = root / path
        found = _nearest(directory, setting, url)
        if not found.is_dir():  # a directory can be neither used nor made there
            what = "it names a file" if found == directory else f"{found} is a file"
            raise ConfigError(
                setting=setting, value=url, expected=f"file://PATH where PATH is a directory or can be one ({what})"
            )
        return FileStore(directory)
    if parts.scheme == "memory":
        unknown = set(query) - {"max_entries", "max_bytes"}
        if unknown:
            raise ConfigError(setting=setting, value=url, expected="memory:// with max_entries= and max_bytes= only")
        return MemoryStore(
            max_entries=parse_count(query.get("max_entries", "10000"), f"{setting} max_entries"),
            max_bytes=parse_size(query.get("max_bytes"), f"{setting} max_bytes"),
        )
    if parts.scheme in REDIS_SCHEMES:
        from .redis import RedisStore

        return RedisStore.from_url(
            url,
            ttl=ttl,
            grace=parse_duration(query["grace"], f"{setting} grace") if "grace" in query else None,
            setting=setting,
        )
    raise ConfigError(setting=setting, value=_masked(url), expected=STORE_FORM)


def _nearest(path: Path, setting: str, url: str) -> Path:
    """``path`` or its nearest ancestor that exists (ConfigError when it cannot be looked up)."""
    try:
        return nearest_existing(path)
    except OSError as exc:  # a name too long, a loop of links
        raise ConfigError(setting=setting, value=url, expected=f"file://PATH ({exc.strerror})") from None


def _masked(url: str) -> str:
    """A URL that may not parse, with whatever precedes an ``@`` (a password) hidden."""
    return re.sub(r"(//)[^/@]*@", r"\1***@", url)
