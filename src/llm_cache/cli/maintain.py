"""Commands that check or change files: prune, verify, upgrade."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from .. import cassette
from ..atomic import read_regular, write_atomic
from ..cassette import FORMAT_VERSION, dump_entry, load_doc, load_entry, parse_entry
from ..errors import CassetteError
from ..policy import Cap, is_expired, plan_eviction
from ..settings import (
    format_duration,
    parse_count,
    parse_duration,
    parse_eviction,
    parse_regexes,
    parse_size,
)
from ..stores.protocol import EntryMeta
from ..verify import Problem as VerifyProblem
from ..verify import examine_file
from .common import (
    OK,
    PROBLEM,
    UsageError,
    _emit,
    _now,
    _parse,
    _plural,
    _store,
    _ttl,
)


def cmd_prune(args: argparse.Namespace) -> int:
    store, now = _store(args), _now()
    ttl = _ttl(args)
    unused = _parse(parse_duration, args.unused_since, "--unused-since") if args.unused_since else None
    cap = Cap(
        max_bytes=_parse(parse_size, args.max_size, "--max-size") if args.max_size else None,
        max_entries=_parse(parse_count, args.max_entries, "--max-entries") if args.max_entries else None,
        policy=_parse(parse_eviction, args.eviction, "--eviction"),
    )
    if not (args.expired or unused or cap.active or args.model):
        raise UsageError("prune needs at least one of --expired, --unused-since, --max-size, --max-entries, --model")
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
        gone = {meta.location for meta, _ in removed}
        try:
            store.touch({}, keep={m.key for m in metas if m.location not in gone})
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


def cmd_verify(args: argparse.Namespace) -> int:
    _parse(parse_regexes, args.allow, "--allow")
    store = _store(args)
    problems = []
    notes = []
    count = 0
    foreign: list[str] = []
    for listed in store.census():
        if listed.kind == "foreign":  # never touched; said, so that a --dir one level too high shows
            foreign.append(str(listed.path))
            continue
        count += 1
        if listed.refused:
            problems.append(VerifyProblem(str(listed.path), listed.problem or "unusable"))
            continue
        found, noted = examine_file(listed.path, tuple(args.allow), store=store)
        problems.extend(found)
        notes.extend(noted)
    lines = [f"{p.path}: {p.reason}" for p in problems]
    # notes (an older format, a damaged parsed copy) are worth knowing, never a failure
    lines += [f"{n.path}: note: {n.text}" for n in notes]
    lines += [f"{path}: not a cassette; left alone" for path in foreign]
    bad = len({p.path for p in problems})
    lines.append((f"{count} cassettes checked, {bad} with problems" if problems else
                  f"{count} cassettes checked, all sound")
                 + (f"; {_plural(len(foreign), 'file')} not cassettes" if foreign else ""))
    data = {"checked": count, "problems": [{"path": p.path, "reason": p.reason} for p in problems],
            "notes": [{"path": n.path, "note": n.text} for n in notes], "not_cassettes": foreign}
    _emit(args, data, "\n".join(lines))
    return PROBLEM if problems else OK


def _cassette_files(root: Path) -> Iterator[Path]:
    """The ``*.yaml`` files of the model-version directories under ``root``, in order.

    Dot-directories (``.llm-cache``) and files beside the directories are not cassettes;
    symlinks, to directories or files, are never followed, so nothing outside ``root`` is reached.
    """
    with os.scandir(root) as it:
        dirs = sorted((d for d in it if d.is_dir(follow_symlinks=False) and not d.name.startswith(".")),
                      key=lambda d: d.name)
    for directory in dirs:
        with os.scandir(directory.path) as it:
            files = sorted((f for f in it if f.name.endswith(".yaml") and not f.name.startswith(".")
                            and f.is_file(follow_symlinks=False)), key=lambda f: f.name)
        yield from (Path(f.path) for f in files)


def _read_no_symlink(path: Path) -> bytes:
    # a file swapped for a symlink or a FIFO since the listing is not read, nor one too large
    return read_regular(path, cassette.MAX_CASSETTE_BYTES)


def cmd_upgrade(args: argparse.Namespace) -> int:
    root = _store(args).root
    upgraded: list[str] = []
    current = 0
    unreadable: list[tuple[str, str]] = []
    for path in _cassette_files(root):
        where = str(path)
        try:
            doc = load_doc(_read_no_symlink(path), where)
            entry = parse_entry(doc, where)
        except CassetteError as exc:
            unreadable.append((where, exc.reason))
            continue
        except OSError as exc:
            unreadable.append((where, f"cannot be read: {exc.strerror}"))
            continue
        if doc["llm_cache"] == FORMAT_VERSION:
            current += 1
            continue
        text = dump_entry(entry)
        # only a rewrite that reads back as the same entry (so the same key) replaces a file
        if load_entry(text, where, expected_key=entry.key) != entry:
            unreadable.append((where, f"would not read back the same in format {FORMAT_VERSION}; left as it is"))
            continue
        if not args.dry_run:
            try:
                mode = stat.S_IMODE(os.stat(path).st_mode)
                write_atomic(path, text)
                os.chmod(path, mode)
            except OSError as exc:
                unreadable.append((where, f"cannot be written: {exc.strerror}"))
                continue
        upgraded.append(where)
    verb = "would upgrade" if args.dry_run else "upgraded"
    lines = [f"{verb} {where}" for where in upgraded]
    lines += [f"{where}: {reason}" for where, reason in unreadable]
    lines.append(f"{verb} {_plural(len(upgraded), 'cassette')} to format {FORMAT_VERSION} "
                 f"({current} already current, {len(unreadable)} unreadable)")
    data = {"dry_run": args.dry_run, "format": FORMAT_VERSION, "upgraded": upgraded, "current": current,
            "unreadable": [{"path": where, "reason": reason} for where, reason in unreadable]}
    _emit(args, data, "\n".join(lines))
    return PROBLEM if unreadable else OK
