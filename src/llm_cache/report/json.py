"""The JSON report: the report model as data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..stats import Counts
from ..values import format_duration
from .model import AGE_BUCKETS, Inventory, Report, cost_saved

__all__ = ["report_json"]


def report_json(report: Report) -> dict[str, Any]:
    """The JSON report: the summary's figures as data."""
    stats = report.stats
    c = stats.counts
    unused = report.unused
    return {
        "mode": report.mode,
        "store": report.location,
        "hits": c.hits,
        "misses": c.misses,
        "recorded": c.recorded,
        "refreshed": c.refreshed,
        "stale": c.stale,
        "not_stored": c.not_stored,
        "corrupt": c.corrupt,
        # stale cassettes refused under llm_cache_stale = fail: requests, no hits
        "refused": c.refused,
        "hit_rate": round(c.hit_rate, 4),
        "tokens_saved": sum(stats.tokens_saved.values()),
        "tokens_saved_by_model": dict(sorted(stats.tokens_saved.items())),
        "tokens_by_model": {m: {"input": io[0], "output": io[1]} for m, io in sorted(stats.tokens_io.items())},
        "cost_saved": cost_saved(report)[0] if report.prices else None,
        "cost_saved_by_model": cost_saved(report)[1],
        "not_stored_reasons": dict(sorted(stats.not_stored_reasons.items())),
        "drift": [
            {"test_id": d.test_id, "key": d.key, "field": d.field, "old": d.old, "new": d.new} for d in stats.drift
        ],
        "entries": report.entries,
        "bytes": report.bytes,
        "tests": stats.tests_used,
        "evicted": stats.evicted,
        "warmed": stats.warmed,
        "warm_seconds": round(stats.warm_seconds, 3),
        "warm_none": list(stats.warm_none),
        "cap": {
            "max_bytes": report.cap.max_bytes,
            "max_entries": report.cap.max_entries,
            "eviction": report.cap.policy.value,
        },
        "misses_detail": [
            {"test_id": m.test_id, "model": m.model, "endpoint": m.endpoint, "key": m.key,
             "closest": m.closest, "differences": list(m.differences)}
            for m in stats.misses_detail
        ],
        "unseen": [{"host": u.host, "test_id": u.test_id} for u in stats.unseen],
        "ttl": format_duration(report.ttl),
        "stale_policy": report.stale_policy,
        "stale_cassettes": [
            {"test_id": u.test_id, "key": u.key, "path": u.location, "age_seconds": round(u.age_seconds, 3),
             "ttl_seconds": u.ttl_seconds, "failed": u.failed}
            for u in stats.stale_uses
        ],
        "unused_policy": report.unused_policy,
        # null when it cannot be told (a partial run: unused_why_not says why) or was not looked for
        "unused": [m.location for m in unused.entries] if unused is not None and unused.known else None,
        "unused_entries": [
            {"key": m.key, "model_version": m.model_version, "path": m.location, "size": m.size}
            for m in (unused.entries if unused is not None else ())
        ],
        "unused_why_not": unused.why_not if unused is not None else None,
        "per_test": [{"test_id": test_id, **_counts(c)} for test_id, c in sorted(stats.tests.items())],
        "inventory": _inventory(report.inventory) if report.inventory is not None else None,
        "stale_served": stats.stale_served,
        "revalidated": stats.revalidated,
        "created_at": report.created_at.isoformat(),
    }


def _counts(c: Counts) -> dict[str, int]:
    return {"hits": c.hits, "misses": c.misses, "recorded": c.recorded, "refreshed": c.refreshed,
            "stale": c.stale, "not_stored": c.not_stored}


def _inventory(inventory: Inventory) -> dict[str, Any]:
    def day(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "store": inventory.location,
        "taken_at": inventory.taken_at.isoformat(),
        "ttl": format_duration(inventory.ttl),
        "entries": inventory.entries,
        "bytes": inventory.bytes,
        "expired": inventory.expired,
        "age_buckets": [label for label, _ in AGE_BUCKETS],
        "model_versions": [
            {"model_version": v.model_version, "entries": v.entries, "bytes": v.bytes, "expired": v.expired,
             "unreadable": v.unreadable, "ages": list(v.ages), "oldest": day(v.oldest), "newest": day(v.newest)}
            for v in inventory.versions
        ],
    }
