"""What eviction, pruning and listing know of an entry without parsing all of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["EntryMeta"]


@dataclass(frozen=True)
class EntryMeta:
    """An entry's key, model version, recording time, size and location."""

    key: str
    model_version: str
    recorded_at: datetime | None  # None: the entry is unreadable
    size: int
    location: str
