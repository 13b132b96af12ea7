"""The session summary, as pure functions of a stats value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .policy import Cap
from .redact import mask_url
from .stats import SessionStats

if TYPE_CHECKING:
    from .engine.session import CacheSession

__all__ = ["MAX_MISSES_SHOWN", "Report", "build_report", "report_json", "summary_lines"]

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
    # model (version) -> dollars per million (input, output) tokens, from llm_cache_prices
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)


def build_report(session: CacheSession) -> Report:
    """The one report model of a session, for the terminal summary, the JSON report and stats()."""
    entries, size = session.size() if session.stats.tests_used else (0, 0)
    settings = session.settings
    root = getattr(session.store, "root", None)
    # a store URL is shown with its password masked, wherever the report goes
    location = mask_url(settings.store_url) if settings.store_url else (
        str(root) if root == settings.cassette_dir else repr(session.store)
    )
    return Report(session.stats, settings.mode.value, location, entries, size, settings.cap, settings.prices)


def _price(prices: Mapping[str, tuple[float, float]], model: str) -> tuple[float, float] | None:
    """The price of a model version label: the label itself, else its model (before '@')."""
    return prices.get(model) or prices.get(model.split("@", 1)[0])


def cost_saved(report: Report) -> tuple[float, dict[str, float], list[str]]:
    """Dollars saved (total, per model) and the models served without a price."""
    per_model: dict[str, float] = {}
    unpriced = []
    for model, (inp, out) in sorted(report.stats.tokens_io.items()):
        price = _price(report.prices, model)
        if price is None:
            unpriced.append(model)
            continue
        per_model[model] = (inp * price[0] + out * price[1]) / 1_000_000
    return sum(per_model.values()), per_model, unpriced


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
        why = ", ".join(f"{reason} {n}" for reason, n in sorted(stats.not_stored_reasons.items()))
        extra.append(f"not stored: {c.not_stored}" + (f" ({why})" if why else ""))
    if c.corrupt:
        extra.append(f"corrupt: {c.corrupt}")
    if extra:
        lines.append("   ".join(extra))
    if stats.warmed:
        lines.append(f"warmed: {_plural(stats.warmed, 'entry', 'entries')} in {stats.warm_seconds:.2f} s")
    if tokens:
        per_model = ", ".join(f"{m} {t}" for m, t in sorted(stats.tokens_saved.items()))
        lines.append(f"tokens served from cassettes: {tokens} ({per_model})")
        if report.prices:
            total, _, unpriced = cost_saved(report)
            note = f" ({len(unpriced)} without a price: {', '.join(unpriced)})" if unpriced else ""
            lines.append(f"saved: ${total:.6f} at the llm_cache_prices given{note}")
    if stats.misses_detail:
        shown = stats.misses_detail[:MAX_MISSES_SHOWN]
        lines.append(f"misses ({c.misses}):")
        lines.extend(
            f"  {m.test_id}  {m.model or '-'}  {m.endpoint}  {m.key[:12]}" for m in shown
        )
        if c.misses > len(shown):
            lines.append(f"  ... and {c.misses - len(shown)} more")
        lines.append("record them with --llm-cache=record")
    if stats.drift:
        lines.append(f"drift ({len(stats.drift)}): re-recorded answers that changed")
        lines.extend(f"  {d.test_id}  {d.key}  {d.field}: {d.old!r} -> {d.new!r}" for d in stats.drift[:MAX_MISSES_SHOWN])
        if len(stats.drift) > MAX_MISSES_SHOWN:
            lines.append(f"  ... and {len(stats.drift) - MAX_MISSES_SHOWN} more")
    if stats.unseen:
        lines.append(f"unseen ({len(stats.unseen)}): connections the cache could not see, nothing of them recorded")
        lines.extend(f"  {u.host}  {u.test_id}" for u in stats.unseen[:MAX_MISSES_SHOWN])
        if len(stats.unseen) > MAX_MISSES_SHOWN:
            lines.append(f"  ... and {len(stats.unseen) - MAX_MISSES_SHOWN} more")
        lines.append("make them through a client the cache can see, or allow their hosts with llm_cache_allowed_hosts")
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
        "cap": {
            "max_bytes": report.cap.max_bytes,
            "max_entries": report.cap.max_entries,
            "eviction": report.cap.policy.value,
        },
        "misses_detail": [
            {"test_id": m.test_id, "model": m.model, "endpoint": m.endpoint, "key": m.key}
            for m in stats.misses_detail
        ],
        "unseen": [{"host": u.host, "test_id": u.test_id} for u in stats.unseen],
    }
