"""TTL and eviction decisions, as pure functions of entries, their usage and a clock."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # names in annotations only: loading the settings does not load these
    from .meta import EntryMeta
    from .usage import Usage

__all__ = ["EVICTIONS", "Cap", "Eviction", "EvictionPlan", "is_expired", "plan_eviction"]


class Eviction(str, enum.Enum):
    """Which entries go first once the expired ones are gone."""

    LRU = "lru"  # least recently used
    LFU = "lfu"  # least frequently used (fewest hits), then least recently used
    FIFO = "fifo"  # oldest recording

    def __str__(self) -> str:
        return self.value


EVICTIONS = tuple(e.value for e in Eviction)


@dataclass(frozen=True)
class Cap:
    """A size cap: bytes, entries, or both; None means no limit on that count."""

    max_bytes: int | None = None
    max_entries: int | None = None
    policy: Eviction = Eviction.LRU

    @property
    def active(self) -> bool:
        return self.max_bytes is not None or self.max_entries is not None

    def describe(self) -> str:
        parts = []
        if self.max_bytes is not None:
            parts.append(f"{self.max_bytes} bytes")
        if self.max_entries is not None:
            parts.append(f"{self.max_entries} {'entry' if self.max_entries == 1 else 'entries'}")
        return ", ".join(parts + [self.policy.value]) if parts else "none"

    def over(self, entries: int, size: int) -> bool:
        return (self.max_bytes is not None and size > self.max_bytes) or (
            self.max_entries is not None and entries > self.max_entries
        )


@dataclass(frozen=True)
class EvictionPlan:
    evict: list[EntryMeta]
    # True when the cap could not be met without evicting what this session used
    short: bool
    entries_after: int
    bytes_after: int


def is_expired(recorded_at: datetime | None, ttl: timedelta | None, now: datetime) -> bool:
    return recorded_at is not None and ttl is not None and now - recorded_at > ttl


def _order(policy: Eviction, usage: Mapping[str, Usage]) -> Callable[[EntryMeta], tuple[float, ...]]:
    def recorded(meta: EntryMeta) -> float:
        return meta.recorded_at.timestamp() if meta.recorded_at else 0.0

    def last_used(meta: EntryMeta) -> float:
        use = usage.get(meta.key)
        return max(use.last_used, recorded(meta)) if use else recorded(meta)

    if policy is Eviction.LRU:
        return lambda m: (last_used(m), recorded(m))
    if policy is Eviction.LFU:
        return lambda m: (usage[m.key].hits if m.key in usage else 0, last_used(m), recorded(m))
    return lambda m: (recorded(m),)


def plan_eviction(
    metas: Iterable[EntryMeta],
    cap: Cap,
    usage: Mapping[str, Usage],
    now: datetime,
    ttl: timedelta | None,
    protected: set[str] = frozenset(),  # type: ignore[assignment]
) -> EvictionPlan:
    """Which entries to remove to get under ``cap``: expired first, then the policy's order.

    Entries whose key is ``protected`` (used by the current session) are never chosen.
    """
    metas = list(metas)
    count, size = len(metas), sum(m.size for m in metas)
    if not cap.active or not cap.over(count, size):
        return EvictionPlan([], False, count, size)
    candidates = [m for m in metas if m.key not in protected]
    key = _order(cap.policy, usage)
    expired = sorted((m for m in candidates if is_expired(m.recorded_at, ttl, now)), key=key)
    expired_keys = {m.location for m in expired}
    rest = sorted((m for m in candidates if m.location not in expired_keys), key=key)
    evict = []
    for meta in expired + rest:
        if not cap.over(count, size):
            break
        evict.append(meta)
        count -= 1
        size -= meta.size
    return EvictionPlan(evict, cap.over(count, size), count, size)
