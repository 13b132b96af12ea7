"""The memory tier: a bounded LRU of parsed entries in front of the file and Redis stores.

A hit on an entry already in the tier parses nothing and touches no disk or
network; warming fills it at start-up. Entries are kept slim (``Entry.slim``): the
response's bytes, not its parsed body, so memory stays near the size on disk.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..cassette import Entry

__all__ = ["MemoryTier"]


class MemoryTier:
    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            try:
                self._entries.move_to_end(key)
            except KeyError:  # dropped by another thread meanwhile
                pass
        return entry

    def put(self, entry: Entry) -> None:
        entry = entry.slim()
        with self._lock:
            self._entries[entry.key] = entry
            self._entries.move_to_end(entry.key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def grow(self, max_entries: int) -> None:
        """Make room for at least ``max_entries`` (warming asks for all it loads)."""
        self.max_entries = max(self.max_entries, max_entries)

    def discard(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)
