"""The usage index: when each entry was last used and how often it was hit.

Kept apart from the cassettes so that a hit never rewrites a cassette (git
would show churn): one small JSON file, ``<dir>/.llm-cache/usage.json``,
merged once at session end under a lock. It is derived bookkeeping: a missing
or damaged index is started again, never fatal. The ``.llm-cache`` directory
carries its own ``.gitignore``.

Nothing here goes through a symlink: ``.llm-cache`` and the files in it must be real
directories and regular files, or they are left alone (``UnsafePath``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from .atomic import UnsafePath, file_kind, read_regular, real_dir, write_atomic

__all__ = ["MAX_INDEX_BYTES", "META_DIR", "Usage", "UsageIndex", "ensure_meta_dir", "merge_usage"]

log = logging.getLogger("llm_cache")

META_DIR = ".llm-cache"
FORMAT = 1
LOCK_TIMEOUT = 30.0
# The largest index (usage, scan, digests) read: about two million keys.
MAX_INDEX_BYTES = 256 * 1024 * 1024


@dataclass
class Usage:
    """One key's use: ``last_used`` as a POSIX timestamp, ``hits`` served from the cache."""

    last_used: float
    hits: int = 0

    def merged(self, other: Usage) -> Usage:
        return Usage(max(self.last_used, other.last_used), self.hits + other.hits)


def merge_usage(into: dict[str, Usage], more: Mapping[str, Usage]) -> None:
    """Add ``more`` into ``into``, key by key (``Usage.merged``)."""
    for key, use in more.items():
        old = into.get(key)
        into[key] = use if old is None else old.merged(use)


def ensure_meta_dir(root: Path) -> Path:
    """``<root>/.llm-cache``, created with a .gitignore that keeps it out of git.

    ``UnsafePath`` when it (or the root) is a symlink's target no one asked for: a
    ``.llm-cache`` that is a symlink or a file is never written through."""
    meta = root / META_DIR
    try:
        return real_dir(meta, create=False)
    except FileNotFoundError:
        pass
    root.mkdir(parents=True, exist_ok=True)
    real_dir(meta)
    ignore = meta / ".gitignore"
    if not os.path.lexists(ignore):
        write_atomic(ignore, "# derived data of pytest-llm-cache: usage index, locks\n*\n")
    return meta


def _lock_file(path: Path) -> Path:
    """``path`` for filelock, which opens it following symlinks and truncating: only a
    regular file of one link, or nothing yet, is given to it."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePath(errno.EINVAL, f"is {file_kind(info.st_mode)}; remove it (it is made again)", str(path))
    if info.st_nlink != 1:
        raise UnsafePath(errno.EINVAL, "is a hard link to another file; remove it (it is made again)", str(path))
    return path


class UsageIndex:
    """The usage index file of one cassette directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / META_DIR / "usage.json"

    def load(self) -> dict[str, Usage]:
        """The index, or an empty one when it is missing, damaged, or not a regular file."""
        try:
            real_dir(self.path.parent, create=False)
            data = json.loads(read_regular(self.path, MAX_INDEX_BYTES))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}")
            return {key: Usage(float(v[0]), int(v[1])) for key, v in data["keys"].items()}
        except FileNotFoundError:
            return {}
        except UnsafePath as exc:
            log.warning("usage index %s %s; not read", exc.filename, exc.strerror)
            return {}
        except OSError as exc:
            log.warning("usage index %s cannot be read (%s); starting it again", self.path, exc.strerror)
            return {}
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError) as exc:
            log.warning("usage index %s is damaged (%s); starting it again", self.path, exc)
            return {}

    def update(self, deltas: Mapping[str, Usage], keep: set[str] | None = None) -> dict[str, Usage]:
        """Merge ``deltas`` into the file under its lock; drop keys not in ``keep`` when given.

        ``OSError`` (``UnsafePath`` included) when it cannot be written: the caller decides
        whether that is worth a warning."""
        meta = ensure_meta_dir(self.root)
        with suppress(FileNotFoundError):
            mode = os.lstat(self.path).st_mode
            if not stat.S_ISREG(mode):
                raise UnsafePath(errno.EINVAL, f"is {file_kind(mode)}; remove it (it is made again)", str(self.path))
        from filelock import FileLock  # only a session that writes usage needs it

        with FileLock(str(_lock_file(meta / "usage.lock")), timeout=LOCK_TIMEOUT):
            current = self.load()
            merge_usage(current, deltas)
            if keep is not None:
                current = {k: v for k, v in current.items() if k in keep}
            self._write(current)
        return current

    def _write(self, index: Mapping[str, Usage]) -> None:
        data = {"format": FORMAT, "keys": {k: [round(u.last_used, 3), u.hits] for k, u in sorted(index.items())}}
        write_atomic(self.path, json.dumps(data, separators=(",", ":")))
