"""The prune command: remove entries that are expired, unused, over a cap, or of one model."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta

from ..policy import Cap, is_expired, plan_eviction
from ..settings import parse_eviction
from ..stores.protocol import EntryMeta
from ..values import format_duration, parse_count, parse_duration, parse_size
from .common import (
    OK,
    PROBLEM,
    UsageError,
    _emit,
    _now,
    _parse,
    _ttl,
)
from .stores import StoreArg

__all__ = ["cmd_prune"]


def cmd_prune(args: argparse.Namespace) -> int:
    now = _now()
    ttl = _ttl(args)
    unused = _parse(parse_duration, args.unused_since, "--unused-since") if args.unused_since else None
    cap = Cap(
        max_bytes=_parse(parse_size, args.max_size, "--max-size") if args.max_size else None,
        max_entries=_parse(parse_count, args.max_entries, "--max-entries") if args.max_entries else None,
        policy=_parse(parse_eviction, args.eviction, "--eviction"),
    )
    if not (args.expired or unused or cap.active or args.model):
        raise UsageError("prune needs at least one of --expired, --unused-since, --max-size, --max-entries, --model")
    with StoreArg(args) as stores:
        return _prune(args, stores, now, ttl, unused, cap)


def _prune(args: argparse.Namespace, stores: StoreArg, now: datetime, ttl: timedelta | None,
           unused: timedelta | None, cap: Cap) -> int:
    store = stores.store
    metas = list(store.scan())
    usage = store.usage()
    chosen: dict[str, tuple[EntryMeta, str]] = {}
    selected = [m for m in metas if not args.model or m.model_version == args.model or
                m.model_version.split("@")[0] == args.model]
    only_model = args.model and not (args.expired or unused or cap.active)
    for meta in selected:
        if only_model:
            chosen[meta.location] = (meta, f"model {meta.model_version}")
        elif args.expired and is_expired(meta.recorded_at, ttl, now):
            chosen[meta.location] = (meta, f"expired (older than {format_duration(ttl)})")
        elif unused is not None:
            last = usage[meta.key].last_used if meta.key in usage else (
                meta.recorded_at.timestamp() if meta.recorded_at else 0.0)
            if now.timestamp() - last > unused.total_seconds():
                chosen[meta.location] = (meta, f"unused for {format_duration(unused)}")
    if cap.active:
        remaining = [m for m in metas if m.location not in chosen]
        candidates = [m for m in remaining if m in selected]
        protected = {m.key for m in remaining if m not in selected}
        plan = plan_eviction(remaining, cap, usage, now, ttl, protected=protected)
        for meta in plan.evict:
            if meta in candidates:
                chosen[meta.location] = (meta, f"over the cap ({cap.describe()})")
    verb = "would remove" if args.dry_run else "removed"
    removed = sorted(chosen.values(), key=lambda pair: pair[0].location)
    failed: list[tuple[EntryMeta, str]] = []
    if not args.dry_run:
        for pair in list(removed):
            try:
                store.delete(pair[0])
            except OSError as exc:  # a read-only checkout, a file we may not remove
                removed.remove(pair)
                failed.append((pair[0], exc.strerror or str(exc)))
        deleted = {meta.location for meta, _ in removed}
        try:
            store.touch({}, keep={m.key for m in metas if m.location not in deleted})
        except OSError as exc:  # the usage index is a record of use, not worth failing for
            print(f"llm-cache prune: warning: usage index not updated: {exc.strerror or exc}", file=sys.stderr)
    freed = sum(meta.size for meta, _ in removed)
    lines = [f"{verb} {meta.location} ({reason})" for meta, reason in removed]
    lines += [f"could not remove {meta.location}: {reason}" for meta, reason in failed]
    lines.append(f"{verb} {len(removed)} of {len(metas)} cassettes, {freed} bytes"
                 + (f"; {len(failed)} could not be removed" if failed else ""))
    data = {"dry_run": args.dry_run, "removed": [{"path": m.location, "key": m.key, "reason": r, "size": m.size}
                                                 for m, r in removed], "bytes": freed, "before": len(metas),
            "failed": [{"path": m.location, "error": reason} for m, reason in failed]}
    _emit(args, data, "\n".join(lines))
    return PROBLEM if failed else OK
