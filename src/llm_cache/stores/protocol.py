"""The small surface every store offers; serialisation stays out of it (see cassette.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from ..cassette import Entry

__all__ = ["Store"]


class Store(Protocol):
    """Entries by key, grouped by model version."""

    def location(self, key: str, model_version: str) -> str:
        """Where the entry for ``key`` is (or would be) kept, for messages."""

    def get(self, key: str, model_version: str) -> Entry | None:
        """The entry, None when there is none; ``CassetteError`` when it is unusable."""

    def put(self, entry: Entry) -> str:
        """Store ``entry`` atomically, replacing any entry with its key; returns its location."""

    def quarantine(self, key: str, model_version: str) -> str | None:
        """Move an unusable entry aside; returns where it went."""

    def entries(self, model_version: str | None = None, limit: int | None = None) -> Iterator[Entry]:
        """Stored entries (of one model version), skipping unusable ones."""

    def size(self) -> tuple[int, int]:
        """(number of entries, bytes)."""
