"""The terminal summary: lines made from the report model, nothing else."""

from __future__ import annotations

import os
from datetime import timedelta

from ..errors import EMPTY_STORE_HINT
from ..policy import Cap
from ..values import DEFAULT_TTL, format_age, format_duration
from .model import Report, cost_saved

__all__ = ["MAX_MISSES_SHOWN", "summary_lines"]

MAX_MISSES_SHOWN = 10


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


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


def _path(report: Report, path: str) -> str:
    """``path`` as the user can type it where they ran the tests: relative to that directory
    when it lies under it (as pytest shows test files), else whole. A store URL is left as is."""
    base = (report.shown_from or "").rstrip("/\\")
    if base and path.startswith(base + os.sep):
        return path[len(base) + 1:]
    return path


def _cap(cap: Cap) -> str:
    parts = []
    if cap.max_bytes is not None:
        parts.append(_size(cap.max_bytes))
    if cap.max_entries is not None:
        parts.append(_plural(cap.max_entries, "entry", "entries"))
    return ", ".join(parts) + f", {cap.policy.value}"


def summary_lines(report: Report) -> list[str]:
    """The lines of the terminal summary; empty when no test used the cache and there is
    nothing unused to tell of."""
    stats = report.stats
    if not stats.tests_used:
        return _unused_lines(report) if report.unused is not None and report.unused.entries else []
    c = stats.counts
    tokens = sum(stats.tokens_saved.values())
    lines = [
        f"mode: {report.mode}   store: {_path(report, report.location)} "
        f"({_plural(report.entries, 'entry', 'entries')}, {_size(report.bytes)})",
        f"hits: {c.hits}   misses: {c.misses}   recorded: {c.recorded}   refreshed: {c.refreshed}"
        f"   stale: {c.stale}   hit rate: {c.hit_rate:.0%}",
    ]
    extra = []
    # eviction runs after a session that recorded (llm-cache prune evicts on its own): a
    # replay's "evicted: 0" would say it ran
    if report.cap.active and (stats.evicted or c.recorded or c.refreshed):
        extra.append(f"evicted: {stats.evicted} (cap {_cap(report.cap)})")
    if c.not_stored:
        why = ", ".join(f"{reason} {n}" for reason, n in sorted(stats.not_stored_reasons.items()))
        extra.append(f"not stored: {c.not_stored}" + (f" ({why})" if why else ""))
    if c.corrupt:
        extra.append(f"corrupt: {c.corrupt}")
    if extra:
        lines.append("   ".join(extra))
    if stats.warmed or stats.warm_none:
        none = (f"; none of {', '.join(stats.warm_none)}: no entries of that model version "
                "(llm-cache stats lists those stored)") if stats.warm_none else ""
        lines.append(f"warmed: {_plural(stats.warmed, 'entry', 'entries')} in {stats.warm_seconds:.2f} s{none}")
    if tokens:
        per_model = ", ".join(f"{m} {t}" for m, t in sorted(stats.tokens_saved.items()))
        lines.append(f"tokens served from cassettes: {tokens} ({per_model})")
        if report.prices:
            total, priced, unpriced = cost_saved(report)
            if priced:  # none of the models served has a price: no dollar figure to give
                note = f" ({len(unpriced)} without a price: {', '.join(unpriced)})" if unpriced else ""
                lines.append(f"saved: ${total:.6f} at the llm_cache_prices given{note}")
            else:
                lines.append(f"saved: no price in llm_cache_prices for {', '.join(unpriced)}")
    if stats.misses_detail:
        shown = stats.misses_detail[:MAX_MISSES_SHOWN]
        lines.append(f"misses ({c.misses}):")
        lines.extend(
            f"  {m.test_id}  {m.model or '-'}  {m.endpoint}  {m.key[:12]}" for m in shown
        )
        if c.misses > len(shown):
            lines.append(f"  ... and {c.misses - len(shown)} more")
        lines.append("record them with --llm-cache=record")
        if report.entries == 0 and "://" not in report.location:  # shown whole: the relative path misleads here
            lines.append(f"no cassette at all in {report.location}: {EMPTY_STORE_HINT}")
    if stats.drift:
        lines.append(f"drift ({len(stats.drift)}): re-recorded answers that changed")
        lines.extend(f"  {d.test_id}  {d.key[:12]}  {d.field}: {_short(d.old)!r} -> {_short(d.new)!r}" for d in stats.drift[:MAX_MISSES_SHOWN])
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
    lines.extend(_stale_lines(report))
    lines.extend(_unused_lines(report))
    return lines


def refresh_command(report: Report) -> str:
    """The flags that re-record what this session found stale: the TTL goes with them when it
    is not the default, or a refresh with the default TTL would find nothing to refresh."""
    ttl = "" if report.ttl in (None, DEFAULT_TTL) else f" --llm-cache-ttl={format_duration(report.ttl)}"
    return f"--llm-cache=refresh{ttl}"


def _stale_lines(report: Report) -> list[str]:
    stats = report.stats
    listed = report.stale_policy != "serve" and stats.stale_uses
    if not listed:
        c = stats.counts
        return ([f"{_plural(c.stale, 'cassette')} past the TTL served; re-record with {refresh_command(report)}"]
                if c.stale else [])
    uses = stats.stale_uses
    failed = sum(u.failed for u in uses)
    verb = f"{failed} failed their test (llm_cache_stale = fail)" if failed else "served (llm_cache_stale = warn)"
    # a marker's TTL is a test's own: each line then says the TTL it is past
    ttls = {u.ttl_seconds for u in uses}
    one = report.ttl.total_seconds() if report.ttl is not None else None
    same = ttls == {one}
    head = f"past the TTL of {format_duration(report.ttl)}" if same else "past their TTL"
    lines = [f"stale ({len(uses)}): cassettes {head}, {verb}"]
    lines.extend(
        f"  {_path(report, u.location)}  {format_age(u.age_seconds)} old"
        + ("" if same else f" (TTL {format_duration(timedelta(seconds=u.ttl_seconds)) if u.ttl_seconds else 'never'})")
        + f"  {u.test_id}"
        for u in uses[:MAX_MISSES_SHOWN]
    )
    if len(uses) > MAX_MISSES_SHOWN:
        lines.append(f"  ... and {len(uses) - MAX_MISSES_SHOWN} more")
    lines.append(f"re-record them with {refresh_command(report)}")
    return lines


def _unused_lines(report: Report) -> list[str]:
    unused = report.unused
    if unused is None:
        return []
    if not unused.known:
        return [f"unused: cannot tell, {unused.why_not}"]
    if not unused.entries:
        return ["unused: none (every cassette was used)"] if report.unused_policy == "fail" else []
    n = len(unused.entries)
    where = _path(report, report.report_path) if report.report_path else "REPORT.json"
    prune = f"llm-cache prune --unused-in {where}"
    if report.report_path is None:
        prune += " after a run with --llm-cache-report=REPORT.json"
    if report.unused_failed:
        lines = [f"unused: {n} (failing the run, --llm-cache-unused=fail; remove them with {prune})"]
    else:
        lines = [f"unused: {n} ({prune} or --llm-cache-unused=fail)"]
    lines.extend(f"  {_path(report, m.location)}" for m in unused.entries[:MAX_MISSES_SHOWN])
    if n > MAX_MISSES_SHOWN:
        lines.append(f"  ... and {n - MAX_MISSES_SHOWN} more")
    return lines
