"""The session summary, as pure functions of a stats value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .policy import Cap
from .stats import SessionStats

__all__ = ["Report", "summary_lines", "report_json", "MAX_MISSES_SHOWN"]

MAX_MISSES_SHOWN = 10


@dataclass(frozen=True)
class Report:
    """A session's stats and what surrounds them."""

    stats: SessionStats
    mode: str
    location: str
    entries: int
    bytes: int
    cap: Cap = Cap()


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"


def _size(n: int) -> str:
    """Bytes in the units the size options read (KB = 1000 bytes)."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _cap(cap: Cap) -> str:
    parts = []
    if cap.max_bytes is not None:
        parts.append(_size(cap.max_bytes))
    if cap.max_entries is not None:
        parts.append(_plural(cap.max_entries, "entry", "entries"))
    return ", ".join(parts) + f", {cap.policy.value}"


def summary_lines(report: Report) -> list[str]:
    """The lines of the terminal summary; empty when no test used the cache."""
    stats = report.stats
    if not stats.tests_used:
        return []
    c = stats.counts
    tokens = sum(stats.tokens_saved.values())
    lines = [
        f"mode: {report.mode}   store: {report.location} "
        f"({_plural(report.entries, 'entry', 'entries')}, {_size(report.bytes)})",
        f"hits: {c.hits}   misses: {c.misses}   recorded: {c.recorded}   refreshed: {c.refreshed}"
        f"   stale: {c.stale}   hit rate: {c.hit_rate:.0%}",
    ]
    extra = []
    if report.cap.active:
        extra.append(f"evicted: {stats.evicted} (cap {_cap(report.cap)})")
    if c.not_stored:
        extra.append(f"not stored: {c.not_stored}")
    if c.corrupt:
        extra.append(f"corrupt: {c.corrupt}")
    if extra:
        lines.append("   ".join(extra))
    if stats.warmed:
        lines.append(f"warmed: {_plural(stats.warmed, 'entry', 'entries')} in {stats.warm_seconds:.2f} s")
    if tokens:
        per_model = ", ".join(f"{m} {t}" for m, t in sorted(stats.tokens_saved.items()))
        lines.append(f"tokens served from cassettes: {tokens} ({per_model})")
    if stats.misses_detail:
        shown = stats.misses_detail[:MAX_MISSES_SHOWN]
        lines.append(f"misses ({c.misses}):")
        lines.extend(
            f"  {m.test_id}  {m.model or '-'}  {m.endpoint}  {m.key[:12]}" for m in shown
        )
        if c.misses > len(shown):
            lines.append(f"  ... and {c.misses - len(shown)} more")
        lines.append("record them with --llm-cache=record")
    if stats.cap_short:
        lines.append("the cap is smaller than what this session used; nothing it used was evicted")
    if c.stale:
        lines.append(f"{_plural(c.stale, 'cassette')} past the TTL served; re-record with --llm-cache=refresh")
    return lines


def report_json(report: Report) -> dict[str, Any]:
    """The JSON report: the summary's figures as data."""
    stats = report.stats
    c = stats.counts
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
        "hit_rate": round(c.hit_rate, 4),
        "tokens_saved": sum(stats.tokens_saved.values()),
        "tokens_saved_by_model": dict(sorted(stats.tokens_saved.items())),
        "entries": report.entries,
        "bytes": report.bytes,
        "tests": stats.tests_used,
        "evicted": stats.evicted,
        "warmed": stats.warmed,
        "warm_seconds": round(stats.warm_seconds, 3),
        "cap": {
            "max_bytes": report.cap.max_bytes,
            "max_entries": report.cap.max_entries,
            "eviction": report.cap.policy.value,
        },
        "misses_detail": [
            {"test_id": m.test_id, "model": m.model, "endpoint": m.endpoint, "key": m.key}
            for m in stats.misses_detail
        ],
    }
