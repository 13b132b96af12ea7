"""Derived data: what the file store keeps under ``.llm-cache/`` only to be faster.

Parsed copies, the scan and digest indexes and the usage index are never needed: a failure
to write one is one ``LLMCacheWarning`` per kind and store, after a write the disk or
directory refused (read-only, full, no permission) no more are tried, and a directory this
process cannot write (a read-only checkout) gets no attempt at all.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..atomic import UnsafePath, is_temporary, write_atomic
from ..errors import LLMCacheWarning, describe_os_error, warn
from ..usage import META_DIR
from .paths import Tree

__all__ = ["Derived"]

log = logging.getLogger("llm_cache")

# Why a write failed when the disk or directory refuses writes at all: no more derived
# writes are tried in this store.
_REFUSING = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}


class Derived:
    """Whether a store's derived data is worth writing, its writes, and their warnings."""

    def __init__(self, tree: Tree) -> None:
        self.root = tree.root
        self._tree = tree
        # what was warned about, and whether the disk refuses writes
        self._warned: set[str] = set()
        self.refused = False

    def may_write(self) -> bool:
        """False when derived data is not worth trying to write: the disk refused a write
        already, or this process cannot write the directory (a read-only checkout)."""
        if self.refused:
            return False
        meta = self.root / META_DIR
        return os.access(meta if os.path.isdir(meta) else self.root, os.W_OK)

    def failed(self, what: str, path: Path, exc: OSError) -> None:
        """One warning per kind of derived data; none after the disk refused writes."""
        # a disk that refuses writes, or a .llm-cache that is not a real directory: no more tries
        unusable_meta = isinstance(exc, UnsafePath) and exc.filename == str(self.root / META_DIR)
        if exc.errno in _REFUSING or unusable_meta:
            if self.refused:
                return
            self.refused = True
        if what in self._warned:
            log.debug("%s not written: %s: %s", what, path, exc)
            return
        self._warned.add(what)
        cause = exc.strerror if isinstance(exc, UnsafePath) else describe_os_error(exc)
        # what is in the way, as the system names it, unless that is a temporary file
        named = os.path.basename(str(exc.filename or ""))
        where = str(exc.filename) if named and not is_temporary(named) else str(path)
        consequence = ("hits of this session are not counted for eviction"
                       if what == "usage index" else "the next run is only slower")
        warn(LLMCacheWarning(f"{what} not written: {where}: {cause}. The cache works without it; {consequence}."))

    def write(self, what: str, path: Path, body: Callable[[], str | bytes]) -> None:
        """Write ``body()`` to ``path`` (under ``.llm-cache``) atomically, when worth it."""
        if not self.may_write():
            log.debug("%s not written: %s cannot be written", what, self.root)
            return
        try:
            self._tree.meta_dir(path.parent)
            write_atomic(path, body())
        except OSError as exc:
            self.failed(what, path, exc)
        except (TypeError, ValueError):  # what cannot be encoded is only not kept
            pass
