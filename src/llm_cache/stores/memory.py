"""The memory store: bounded, least recently used out first, nothing persisted.

For development and fast tests, and the library API's default. Entries are
kept parsed, so a hit costs a dict lookup.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator

from ..cassette import Entry, dump_entry
from ..usage import Usage, merge_usage
from .protocol import EntryMeta

__all__ = ["MemoryStore"]


class MemoryStore:
    """Entries in a dict, bounded by count and bytes (their YAML size)."""

    def __init__(self, max_entries: int | None = 10_000, max_bytes: int | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[Entry, int]] = OrderedDict()
        self._bytes = 0
        self._usage: dict[str, Usage] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.RLock()

    def __repr__(self) -> str:
        return f"MemoryStore(max_entries={self.max_entries}, max_bytes={self.max_bytes})"

    def location(self, key: str, model_version: str) -> str:
        return f"memory://{model_version}/{key[:16]}"

    def get(self, key: str, model_version: str) -> Entry | None:
        with self._guard:
            item = self._entries.get(key)
            if item is None:
                return None
            self._entries.move_to_end(key)
            return item[0]

    def put(self, entry: Entry, text: str | None = None) -> str:
        size = len((text if text is not None else dump_entry(entry)).encode("utf-8"))
        with self._guard:
            old = self._entries.pop(entry.key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[entry.key] = (entry, size)
            self._bytes += size
            # bounded: least recently used out first, never the entry just stored
            while len(self._entries) > 1 and (
                (self.max_entries is not None and len(self._entries) > self.max_entries)
                or (self.max_bytes is not None and self._bytes > self.max_bytes)
            ):
                gone, (_, gone_size) = self._entries.popitem(last=False)
                self._bytes -= gone_size
                self._usage.pop(gone, None)
        return self.location(entry.key, entry.model_version)

    def delete(self, meta: EntryMeta) -> None:
        with self._guard:
            item = self._entries.pop(meta.key, None)
            if item is not None:
                self._bytes -= item[1]
            self._usage.pop(meta.key, None)

    def quarantine(self, key: str, model_version: str) -> str | None:
        """Entries are kept parsed, so none is ever unreadable: nothing to move."""
        return None

    def scan(self) -> Iterator[EntryMeta]:
        with self._guard:
            items = list(self._entries.values())
        for entry, size in items:
            yield EntryMeta(entry.key, entry.model_version, entry.recorded_at, size,
                            self.location(entry.key, entry.model_version))

    def entries(self, model_version: str | None = None, limit: int | None = None) -> Iterator[Entry]:
        with self._guard:
            items = [e for e, _ in self._entries.values() if model_version in (None, e.model_version)]
        yield from items[:limit] if limit is not None else items

    def size(self) -> tuple[int, int]:
        with self._guard:
            return len(self._entries), self._bytes

    def lock(self, key: str) -> _ThreadLock:
        with self._guard:
            return _ThreadLock(self._locks.setdefault(key, threading.Lock()))

    def usage(self) -> dict[str, Usage]:
        with self._guard:
            return dict(self._usage)

    def touch(self, deltas: dict[str, Usage], keep: set[str] | None = None) -> dict[str, Usage]:
        with self._guard:
            merge_usage(self._usage, deltas)
            if keep is not None:
                self._usage = {k: v for k, v in self._usage.items() if k in keep}
            return dict(self._usage)

    def clear(self) -> int:
        with self._guard:
            count = len(self._entries)
            self._entries.clear()
            self._usage.clear()
            self._bytes = 0
            return count

    def close(self) -> None:
        """Nothing to release."""


class _ThreadLock:
    """A per-key lock with the FileLock calling convention (timeout in seconds, -1 forever)."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def acquire(self, timeout: float = -1) -> bool:
        if not self._lock.acquire(timeout=timeout):
            raise TimeoutError(f"lock not acquired within {timeout} s")
        return True

    def release(self) -> None:
        self._lock.release()
