"""The prune command: remove entries that are expired, unused, over a cap, of one model, or
that a run's JSON report listed as unused."""

from __future__ import annotations

import argparse
import errno
import fnmatch
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ..errors import StoreError, describe_os_error
from ..policy import Cap, is_expired, plan_eviction
from ..settings import parse_eviction
from ..stores.files import FileStore
from ..stores.protocol import EntryMeta
from ..values import format_duration, parse_count, parse_duration, parse_size
from .common import (
    OK,
    PROBLEM,
    Problem,
    UsageError,
    _emit,
    _now,
    _parse,
    _plural,
    _ttl,
)
from .stores import StoreArg

__all__ = ["REPORT_FORM", "Listed", "cmd_prune", "read_unused"]

# What to do when a cassette cannot be removed, by errno: said once, under the files it names.
_FIX = {
    errno.EROFS: "the file system is read-only: prune in a writable checkout, and commit what it removes",
    errno.EACCES: "make the cassette directory writable by this user (chmod, chown), or prune as its owner",
    errno.EPERM: "make the cassette directory writable by this user (chmod, chown), or prune as its owner",
}
_FIX_ANY = "check that this user may remove files in the cassette directory"

REPORT_FORM = ('a JSON report written by --llm-cache-report, with "unused" (a list, or null) '
               'and "unused_entries" ([{"key", "model_version", "path", "size"}])')


@dataclass(frozen=True)
class Listed:
    """An entry a report listed as unused."""

    key: str
    model_version: str
    path: str


def read_unused(name: str) -> list[Listed]:
    """The entries the JSON report ``name`` lists as unused.

    A report that could not tell (``unused`` null) is a Problem saying why; a file that is
    not such a report is a UsageError naming the form."""
    path = Path(name)
    if path.is_dir():  # read, it is IsADirectoryError here and PermissionError on Windows
        raise UsageError(f"--unused-in must be {REPORT_FORM}; {path} is a directory")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise Problem(f"no report at {path}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--unused-in must be {REPORT_FORM}; {path} is not UTF-8 text") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--unused-in must be {REPORT_FORM}; {path} is not JSON ({exc})") from None
    if not isinstance(doc, dict) or "unused" not in doc:
        raise UsageError(f"--unused-in must be {REPORT_FORM}; {path} has no \"unused\"")
    if doc["unused"] is None:
        why = doc.get("unused_why_not") or (
            "the run did not look for them (--llm-cache-unused=off)" if doc.get("unused_policy") == "off"
            else "the report does not say why")
        raise Problem(f"{path} cannot tell which cassettes are unused: {why}")
    rows = doc.get("unused_entries")
    if not isinstance(doc["unused"], list) or not isinstance(rows, list):
        raise UsageError(f"--unused-in must be {REPORT_FORM}; in {path} they are not lists")
    out = []
    for index, row in enumerate(rows):
        if not (isinstance(row, dict) and isinstance(row.get("key"), str)
                and isinstance(row.get("model_version"), str)):
            raise UsageError(f"--unused-in must be {REPORT_FORM}; in {path} unused_entries[{index}] "
                             "has no key and model_version")
        out.append(Listed(row["key"], row["model_version"], str(row.get("path") or row["key"])))
    return out


def cmd_prune(args: argparse.Namespace) -> int:
    now = _now()
    ttl = _ttl(args)
    unused = _parse(parse_duration, args.unused_since, "--unused-since") if args.unused_since else None
    cap = Cap(
        max_bytes=_parse(parse_size, args.max_size, "--max-size") if args.max_size else None,
        max_entries=_parse(parse_count, args.max_entries, "--max-entries") if args.max_entries else None,
        policy=_parse(parse_eviction, args.eviction, "--eviction"),
    )
    if not (args.expired or unused or args.unused_in or cap.active or args.model or args.corrupt):
        raise UsageError("prune needs at least one of --expired, --unused-since, --unused-in, --max-size, "
                         "--max-entries, --model, --corrupt")
    stores = StoreArg(args)  # bad usage is said before the report is read
    listed = {(e.key, e.model_version): e for e in read_unused(args.unused_in)} if args.unused_in else None
    with stores:
        files = stores.store if isinstance(stores.store, FileStore) else None
        if args.corrupt and files is None:
            raise UsageError("--corrupt removes the *.yaml.corrupt files of a file store (--dir); "
                             "another store keeps no such files")
        if files is not None and args.corrupt and not (args.expired or unused or args.unused_in or cap.active
                                                       or args.model):
            return _prune_set_aside(args, files)
        status = _prune(args, stores, now, ttl, unused, cap, listed)
        if files is not None and args.corrupt:
            status = max(status, _prune_set_aside(args, files))
        return status


def _prune_set_aside(args: argparse.Namespace, store: FileStore) -> int:
    """Remove (or, in a dry run, name) the cassettes a recording moved aside as corrupt."""
    verb = "would remove" if args.dry_run else "removed"
    removed, failed = [], []
    for path in store.set_aside():
        try:
            if not args.dry_run:
                path.unlink()
            removed.append(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            failed.append((path, describe_os_error(exc)))
    lines = [f"{verb} {path} (moved aside as corrupt)" for path in removed]
    lines += [f"could not remove {path}: {reason}" for path, reason in failed]
    lines.append(f"{verb} {_plural(len(removed), 'cassette')} moved aside as corrupt")
    data = {"dry_run": args.dry_run, "corrupt_removed": [str(p) for p in removed],
            "failed": [{"path": str(p), "error": reason} for p, reason in failed]}
    _emit(args, data, "\n".join(lines))
    return PROBLEM if failed else OK


def _of_model(version: str, wanted: str) -> bool:
    """Whether a model version label (``gpt-4o``, ``gpt-4o@2024-08-06``, a namespace's
    ``acme+gpt-4o``) is of ``wanted``: the label, its model before ``@``, or a glob over
    either (``'*+gpt-4o'``: that model in every namespace)."""
    model = version.split("@")[0]
    if version == wanted or model == wanted:
        return True
    return any(c in wanted for c in "*?[") and (fnmatch.fnmatchcase(version, wanted) or fnmatch.fnmatchcase(model, wanted))


def _prune(args: argparse.Namespace, stores: StoreArg, now: datetime, ttl: timedelta | None,
           unused: timedelta | None, cap: Cap, listed: dict[tuple[str, str], Listed] | None) -> int:
    store = stores.store
    metas = list(store.scan())
    usage = store.usage()
    chosen: dict[str, tuple[EntryMeta, str]] = {}
    selected = [m for m in metas if not args.model or _of_model(m.model_version, args.model)]
    if args.model and not selected:
        print(f"llm-cache prune: no cassettes of model {args.model} in the store "
              f"(its model versions: {', '.join(sorted({m.model_version for m in metas})) or 'none'})", file=sys.stderr)
    only_model = args.model and not (args.expired or unused or cap.active or listed is not None)
    for meta in selected:
        if only_model:
            chosen[meta.location] = (meta, f"model {meta.model_version}")
        elif listed is not None and (meta.key, meta.model_version) in listed:
            chosen[meta.location] = (meta, f"unused in {args.unused_in}")
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
    present = {(m.key, m.model_version) for m in metas}
    gone = [e for pair, e in (listed or {}).items() if pair not in present]
    verb = "would remove" if args.dry_run else "removed"
    removed = sorted(chosen.values(), key=lambda pair: pair[0].location)
    failed: list[tuple[EntryMeta, str]] = []
    fixes: list[str] = []
    if not args.dry_run:
        for pair in list(removed):
            try:
                store.delete(pair[0])
            except OSError as exc:  # a read-only checkout, a file we may not remove
                removed.remove(pair)
                failed.append((pair[0], exc.cause if isinstance(exc, StoreError) else describe_os_error(exc)))
                fix = _FIX.get(exc.errno or -1, _FIX_ANY)
                if fix not in fixes:
                    fixes.append(fix)
        deleted = {meta.location for meta, _ in removed}
        try:
            store.touch({}, keep={m.key for m in metas if m.location not in deleted})
        except OSError as exc:  # the usage index is a record of use, not worth failing for
            print(f"llm-cache prune: warning: usage index not updated: {exc.strerror or exc}", file=sys.stderr)
    freed = sum(meta.size for meta, _ in removed)
    lines = [f"{verb} {meta.location} ({reason})" for meta, reason in removed]
    lines += [f"could not remove {meta.location}: {reason}" for meta, reason in failed]
    lines += [f"Fix: {fix}." for fix in fixes]
    lines += [f"listed in {args.unused_in} but not in the store (already gone): {e.path}" for e in gone]
    lines.append(f"{verb} {len(removed)} of {len(metas)} cassettes, {freed} bytes"
                 + (f"; {len(failed)} could not be removed" if failed else "")
                 + (f"; {_plural(len(gone), 'listed cassette')} already gone" if gone else ""))
    data = {"dry_run": args.dry_run, "removed": [{"path": m.location, "key": m.key, "reason": r, "size": m.size}
                                                 for m, r in removed], "bytes": freed, "before": len(metas),
            "failed": [{"path": m.location, "error": reason} for m, reason in failed],
            "gone": [{"path": e.path, "key": e.key, "model_version": e.model_version} for e in gone]}
    _emit(args, data, "\n".join(lines))
    return PROBLEM if failed else OK
