"""plan_eviction: expired first, then the policy's order; protected entries never chosen."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from llm_cache.policy import Cap, Eviction, is_expired, plan_eviction
from llm_cache.stores.protocol import EntryMeta
from llm_cache.usage import Usage

NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)


def meta(name: str, days_ago: float, size: int = 100) -> EntryMeta:
    return EntryMeta(name * 64, "m", NOW - timedelta(days=days_ago), size, f"/c/m/{name}.yaml")


# recorded: a oldest ... d newest; used: a often and recently, b once long ago, c once recently, d never
METAS = [meta("a", 10), meta("b", 8), meta("c", 6), meta("d", 4)]
USAGE = {
    "a" * 64: Usage((NOW - timedelta(hours=1)).timestamp(), 9),
    "b" * 64: Usage((NOW - timedelta(days=7)).timestamp(), 1),
    "c" * 64: Usage((NOW - timedelta(hours=2)).timestamp(), 1),
}


def names(plan_evict: list[EntryMeta]) -> list[str]:
    return [m.key[0] for m in plan_evict]


@pytest.mark.parametrize(
    ("policy", "order"),
    [
        (Eviction.FIFO, ["a", "b", "c", "d"]),  # by recording time
        (Eviction.LRU, ["b", "d", "c", "a"]),  # b used 7 days ago, d never (recorded 4 days ago), c 2h, a 1h
        (Eviction.LFU, ["d", "b", "c", "a"]),  # 0 hits; then 1 hit (b used before c); a has 9
    ],
)
def test_policy_order(policy: Eviction, order: list[str]) -> None:
    for keep in range(4):
        plan = plan_eviction(METAS, Cap(max_entries=keep, policy=policy), USAGE, NOW, ttl=None)
        assert names(plan.evict) == order[: 4 - keep]
        assert plan.entries_after == keep and not plan.short


def test_lru_and_lfu_disagree_when_a_frequent_entry_is_old() -> None:
    usage = {"a" * 64: Usage((NOW - timedelta(days=3)).timestamp(), 50), "b" * 64: Usage(NOW.timestamp(), 1)}
    metas = [meta("a", 10), meta("b", 8)]
    assert names(plan_eviction(metas, Cap(max_entries=1, policy=Eviction.LRU), usage, NOW, None).evict) == ["a"]
    assert names(plan_eviction(metas, Cap(max_entries=1, policy=Eviction.LFU), usage, NOW, None).evict) == ["b"]


def test_expired_go_first() -> None:
    # LFU alone would take d (no hits); past a 5-day TTL are a, b and c, so one of them goes
    assert names(plan_eviction(METAS, Cap(max_entries=3, policy=Eviction.LFU), USAGE, NOW, None).evict) == ["d"]
    plan = plan_eviction(METAS, Cap(max_entries=3, policy=Eviction.LFU), USAGE, NOW, ttl=timedelta(days=5))
    assert names(plan.evict) == ["b"]


def test_bytes_cap() -> None:
    metas = [meta("a", 3, 500), meta("b", 2, 300), meta("c", 1, 300)]
    plan = plan_eviction(metas, Cap(max_bytes=700, policy=Eviction.FIFO), {}, NOW, None)
    assert names(plan.evict) == ["a"] and plan.bytes_after == 600


def test_under_the_cap_or_no_cap_evicts_nothing() -> None:
    assert plan_eviction(METAS, Cap(max_entries=4), USAGE, NOW, None).evict == []
    assert plan_eviction(METAS, Cap(), USAGE, NOW, None).evict == []


def test_protected_entries_are_never_evicted_and_shortfall_is_reported() -> None:
    protected = {"a" * 64, "b" * 64, "c" * 64}
    plan = plan_eviction(METAS, Cap(max_entries=1, policy=Eviction.FIFO), USAGE, NOW, None, protected=protected)
    assert names(plan.evict) == ["d"]
    assert plan.short and plan.entries_after == 3


def test_is_expired() -> None:
    assert is_expired(NOW - timedelta(days=2), timedelta(days=1), NOW)
    assert not is_expired(NOW - timedelta(hours=2), timedelta(days=1), NOW)
    assert not is_expired(NOW - timedelta(days=900), None, NOW)
    assert not is_expired(None, timedelta(days=1), NOW)
