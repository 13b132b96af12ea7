"""The ``llm-cache`` command: list, inspect, prune, verify, compare and upgrade cassettes.

Exit status: 0 on success, 1 when a command found a problem (a missing
directory, a bad cassette, an unknown key), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from . import __version__, cassette
from .atomic import UnsafePath, read_regular, write_atomic
from .cassette import FORMAT_VERSION, Entry, dump_entry, load_doc, load_entry, parse_entry
from .errors import CassetteError, ConfigError, StoreUnavailable
from .key import flatten
from .llm import completion_text, last_user_text, prompt_messages, tool_calls
from .policy import Cap, is_expired, plan_eviction
from .settings import (
    DEFAULT_TTL,
    format_duration,
    parse_count,
    parse_duration,
    parse_eviction,
    parse_mode,
    parse_regexes,
    parse_size,
)
from .stores.files import FileStore
from .stores.protocol import EntryMeta
from .verify import Problem as VerifyProblem
from .verify import examine_file

__all__ = ["build_parser", "main"]

OK, PROBLEM, USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments: exit status 2."""


class Problem(Exception):
    """The command found a problem: exit status 1."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _age(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "?"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _store(args: argparse.Namespace) -> FileStore:
    root = Path(args.dir)
    if not root.is_dir():
        raise Problem(f"no cassette directory at {root} (give one with --dir)")
    return FileStore(root)


def _parse(parser: Callable[[object, str], Any], value: object, flag: str) -> Any:
    try:
        return parser(value, flag)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _ttl(args: argparse.Namespace) -> timedelta | None:
    return _parse(parse_duration, args.ttl, "--ttl") if args.ttl is not None else DEFAULT_TTL


def _words(text: str, count: int = 8) -> str:
    words = text.split()
    return " ".join(words[:count]) + (" ..." if len(words) > count else "")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if getattr(args, "json", False) else text)


@dataclass
class _Loaded:
    path: Path
    entry: Entry | None
    error: str | None = None


def _read_cassette(path: Path) -> Entry:
    """A cassette read as replay reads it: a regular file, not through a symlink, size checked."""
    try:
        data = read_regular(path, cassette.MAX_CASSETTE_BYTES)
    except UnsafePath as exc:
        raise CassetteError(path=str(path), reason=f"it {exc.strerror}") from None
    except OSError as exc:
        raise CassetteError(path=str(path), reason=f"cannot be read: {exc.strerror or exc}") from None
    return load_entry(data, str(path))


def _load_all(store: FileStore) -> tuple[list[_Loaded], int]:
    """The cassettes, and those of ours that cannot be used; and how many files are not
    cassettes (listed by ``verify``, touched by nothing)."""
    out = []
    foreign = 0
    for listed in store.census():
        if listed.kind == "foreign":
            foreign += 1
        elif listed.refused:
            out.append(_Loaded(listed.path, None, listed.problem))
        else:
            try:
                out.append(_Loaded(listed.path, _read_cassette(listed.path)))
            except CassetteError as exc:
                out.append(_Loaded(listed.path, None, exc.reason))
    return sorted(out, key=lambda item: str(item.path)), foreign


def _not_cassettes(foreign: int) -> str:
    return f"\n({_plural(foreign, 'file')} under it not cassettes, left alone: llm-cache verify lists them)" if foreign else ""


# -- commands ----------------------------------------------------------------


def cmd_ls(args: argparse.Namespace) -> int:
    store, ttl, now = _store(args), _ttl(args), _now()
    rows: list[list[str]] = []
    data: list[dict[str, Any]] = []
    loaded, foreign = _load_all(store)
    for item in loaded:
        if item.entry is None:
            rows.append([item.path.stem[:12], item.path.parent.name, "-", "-", "-", "-", "-", f"UNREADABLE: {item.error}"])
            data.append({"path": str(item.path), "error": item.error})
            continue
        e = item.entry
        expired = is_expired(e.recorded_at, ttl, now)
        size = item.path.stat().st_size
        prompt = _words(last_user_text(e.request_body.value if e.request_body.kind == "json" else None))
        rows.append([e.key[:12], e.model_version, e.recorded_at.strftime("%Y-%m-%d %H:%M"), _age(e.recorded_at, now),
                     "yes" if expired else "no", str(size), f"{e.method} {e.path}", prompt])
        data.append({"key": e.key, "model_version": e.model_version, "recorded_at": e.recorded_at.isoformat(),
                     "age_seconds": int((now - e.recorded_at).total_seconds()), "expired": expired, "size": size,
                     "endpoint": e.path, "method": e.method, "prompt": prompt, "path": str(item.path)})
    header = ["KEY", "MODEL VERSION", "RECORDED", "AGE", "EXPIRED", "SIZE", "ENDPOINT", "PROMPT"]
    _emit(args, data, (_table(rows, header) if rows else f"no cassettes in {store.root}") + _not_cassettes(foreign))
    return OK


def _group() -> dict[str, Any]:
    return {"entries": 0, "bytes": 0, "expired": 0, "unreadable": 0, "oldest": None, "newest": None, "hits": 0}


def cmd_stats(args: argparse.Namespace) -> int:
    store, ttl, now = _store(args), _ttl(args), _now()
    usage = store.usage()
    groups: dict[str, dict[str, Any]] = {}
    for listed in store.census():
        meta = listed.meta
        if meta is None:
            if listed.kind == "unusable":  # ours, but replay cannot use it
                name = listed.path.name if listed.path.parent == store.root else listed.path.parent.name
                groups.setdefault(name, _group())["unreadable"] += 1
            continue
        g = groups.setdefault(meta.model_version, _group())
        g["entries"] += 1
        g["bytes"] += meta.size
        g["hits"] += usage[meta.key].hits if meta.key in usage else 0
        if meta.recorded_at is None:
            g["unreadable"] += 1
            continue
        g["expired"] += is_expired(meta.recorded_at, ttl, now)
        g["oldest"] = min(filter(None, [g["oldest"], meta.recorded_at]))
        g["newest"] = max(filter(None, [g["newest"], meta.recorded_at]))
    total = {k: sum(g[k] for g in groups.values()) for k in ("entries", "bytes", "expired", "unreadable", "hits")}

    def day(value: datetime | None) -> str:
        return value.strftime("%Y-%m-%d") if value else "-"

    rows = [[name, str(g["entries"]), str(g["bytes"]), str(g["expired"]), day(g["oldest"]), day(g["newest"]), str(g["hits"])]
            for name, g in sorted(groups.items())]
    rows.append(["total", str(total["entries"]), str(total["bytes"]), str(total["expired"]), "", "", str(total["hits"])])
    text = _table(rows, ["MODEL VERSION", "ENTRIES", "BYTES", "EXPIRED", "OLDEST", "NEWEST", "HITS"])
    text += f"\n(ttl {format_duration(ttl)}; hits from {store.root}/.llm-cache/usage.json)"
    data = {"model_versions": {name: {**g, "oldest": g["oldest"] and g["oldest"].isoformat(),
                                      "newest": g["newest"] and g["newest"].isoformat()}
                               for name, g in sorted(groups.items())},
            "total": total, "ttl": format_duration(ttl)}
    _emit(args, data, text)
    return OK


def _find(store: FileStore, ref: str) -> Path:
    """A cassette by path or by a unique key prefix."""
    as_path = Path(ref)
    if as_path.suffix == ".yaml" and as_path.is_file():
        return as_path
    prefix = ref.lower()
    if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
        raise UsageError(f"{ref!r} is neither a cassette file nor a key prefix of at least 4 hex digits")
    matches = [Path(m.location) for m in store.scan() if m.key.startswith(prefix)]
    if not matches:
        raise Problem(f"no cassette whose key starts with {ref} in {store.root}")
    if len(matches) > 1:
        listed = ", ".join(str(p) for p in matches[:5])
        raise UsageError(f"key prefix {ref} is ambiguous: {len(matches)} cassettes ({listed}); give more digits")
    return matches[0]


def _load(path: Path) -> Entry:
    try:
        return _read_cassette(path)
    except CassetteError as exc:
        raise Problem(str(exc).splitlines()[0]) from None


def cmd_show(args: argparse.Namespace) -> int:
    store = _store(args)
    path = _find(store, args.key)
    e = _load(path)
    now = _now()
    request_json = e.request_body.value if e.request_body.kind == "json" else None
    answered = f", answered by {e.response_model}" if e.response_model else ""
    fingerprint = f", fingerprint {e.system_fingerprint}" if e.system_fingerprint else ""
    lines = [
        f"key:       {e.key}",
        f"file:      {path}",
        f"model:     {e.model or '-'} (version {e.model_version}{answered}{fingerprint})",
        f"recorded:  {e.recorded_at.isoformat()} ({_age(e.recorded_at, now)} ago)",
        f"endpoint:  {e.method} {e.path} -> {e.status}",
    ]
    if e.usage:
        lines.append("usage:     " + ", ".join(f"{v} {k.replace('_tokens', '')}" for k, v in e.usage.items()))
    prompt = prompt_messages(request_json)
    if prompt:
        lines.append("prompt:")
        lines.extend(f"  [{role}] {text}" for role, text in prompt)
    stream = e.response_body.kind == "events"
    text = completion_text(e.response_body)
    label = f"completion (streamed, {len(e.response_body.value)} events):" if stream else "completion:"
    if text:
        lines += [label, *("  " + line for line in text.splitlines())]
    calls = tool_calls(e.response_body)
    if calls:
        lines.append("tool calls:")
        lines.extend(f"  {name}({arguments})" for name, arguments in calls)
    data = {"key": e.key, "path": str(path), "model": e.model, "model_version": e.model_version,
            "response_model": e.response_model, "system_fingerprint": e.system_fingerprint,
            "recorded_at": e.recorded_at.isoformat(), "endpoint": e.path, "status": e.status, "usage": e.usage,
            "prompt": [{"role": r, "text": t} for r, t in prompt], "completion": text, "streamed": stream,
            "tool_calls": [{"name": n, "arguments": a} for n, a in calls]}
    _emit(args, data, "\n".join(lines))
    return OK


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


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


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


def _diff_values(a: Entry, b: Entry) -> list[tuple[str, Any, Any]]:
    def fields(e: Entry) -> dict[str, Any]:
        doc = e.to_doc()
        flat = flatten({k: v for k, v in doc.items() if k not in ("request", "response")})
        for side in ("request", "response"):
            section = doc[side]
            body = e.request_body if side == "request" else e.response_body
            # offsets_ms: timing, which differs between any two recordings
            rest = {k: v for k, v in section.items()
                    if k not in ("json", "events", "text", "base64", "newline", "offsets_ms")}
            flat.update(flatten(rest, side))
            if body.kind == "json":
                flat.update(flatten(body.value, f"{side}.json"))
            elif body.kind == "events":
                flat.update(flatten(body.json_values(), f"{side}.events"))
            else:
                flat[f"{side}.{body.kind}"] = body.value
        if e.response_body.kind == "events":
            flat["response.text (assembled)"] = completion_text(e.response_body)
        return flat

    fa, fb = fields(a), fields(b)
    missing = object()
    out = []
    for name in sorted(fa.keys() | fb.keys()):
        va, vb = fa.get(name, missing), fb.get(name, missing)
        if va != vb:
            out.append((name, None if va is missing else va, None if vb is missing else vb))
    return out


def cmd_diff(args: argparse.Namespace) -> int:
    store = _store(args)
    path_a, path_b = _find(store, args.a), _find(store, args.b)
    differences = _diff_values(_load(path_a), _load(path_b))
    lines = [f"--- {path_a}", f"+++ {path_b}"]
    lines += [f"{name}: {json.dumps(va, default=str)} -> {json.dumps(vb, default=str)}" for name, va, vb in differences]
    if not differences:
        lines.append("(no differences)")
    data = {"a": str(path_a), "b": str(path_b), "differences": [{"field": n, "a": va, "b": vb} for n, va, vb in differences]}
    _emit(args, data, "\n".join(lines))
    return OK


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done == total else ""
    print(f"\rwarming [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True)


def cmd_warm(args: argparse.Namespace) -> int:
    from .library import LLMCache, _read_requests
    from .stores import Store, open_store

    source = Path(args.file)
    if not source.is_file():
        raise Problem(f"no requests file at {source}")
    headers = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header must look like 'Name: value', got {item!r}")
        headers[name.strip()] = value.strip()
    ttl = _ttl(args)
    mode = _parse(parse_mode, args.mode, "--mode")
    try:
        _read_requests(source)  # a bad file stops here, before any store is opened or request sent
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    store: Store
    if args.store:
        try:
            store = open_store(args.store, Path("."), ttl, setting="--store")
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        except ImportError as exc:
            raise Problem(str(exc)) from None
        except StoreUnavailable as exc:
            raise Problem(
                f"cache store {exc.url} is unavailable"
                + (f" within {exc.timeout:g} s" if exc.timeout is not None else "")
                + f": {exc.reason}\nStart it, or give another store with --store (file://DIR, memory://)."
            ) from None
    else:
        store = FileStore(Path(args.dir))
    try:
        cache = LLMCache(store, mode=mode, ttl=ttl, log_every=None)
    except ConfigError as exc:
        store.close()
        raise UsageError(str(exc)) from None
    try:
        report = cache.warm(source, base_url=args.base_url, headers=headers,
                            progress=None if args.json else _progress)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    finally:
        cache.close()
    text = (f"{report.total} requests: {report.fresh} fresh, {report.recorded} recorded, "
            f"{report.refreshed} refreshed, {report.missing} missing, {report.failed} failed "
            f"in {report.seconds:.2f} s")
    _emit(args, {**report.__dict__}, "\n".join([*report.errors, text]))
    return PROBLEM if report.failed or report.missing else OK


# -- parser ------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 on bad usage, as we want
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llm-cache", description="Inspect and manage pytest-llm-cache cassettes.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, func: Callable[[argparse.Namespace], int], text: str, *, json_flag: bool = True,
            ttl: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--dir", default="cassettes", help="the cassette directory (default: ./cassettes)")
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON instead of text")
        if ttl:
            p.add_argument("--ttl", help="age after which a cassette is expired (default 30d)")
        p.set_defaults(func=func)
        return p

    add("ls", cmd_ls, "list cassettes: key, model version, age, expiry, size, endpoint, prompt", ttl=True)
    add("stats", cmd_stats, "entries, bytes, expired and hits per model version", ttl=True)
    show = add("show", cmd_show, "one cassette made readable: prompt, completion, tool calls")
    show.add_argument("key", help="a unique key prefix, or a cassette file")
    prune = add("prune", cmd_prune, "remove cassettes: expired, unused, over a cap, or of one model", ttl=True)
    prune.add_argument("--expired", action="store_true", help="remove cassettes older than the TTL")
    prune.add_argument("--unused-since", metavar="DURATION", help="remove cassettes not used for this long")
    prune.add_argument("--max-size", metavar="SIZE", help="evict down to this size (500KB, 50MB, 1GB)")
    prune.add_argument("--max-entries", metavar="N", help="evict down to this many cassettes")
    prune.add_argument("--eviction", default="lru", help="order for --max-size/--max-entries: lru, lfu or fifo")
    prune.add_argument("--model", metavar="VERSION", help="only cassettes of this model (version)")
    prune.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    verify = add("verify", cmd_verify, "check every cassette: parses, key matches, nothing secret-looking")
    verify.add_argument("--allow", action="append", default=[], metavar="REGEX",
                        help="a secret-looking value that is not a secret (repeatable)")
    warm = add("warm", cmd_warm, "make sure each request of a YAML/JSONL file is cached and fresh", ttl=True)
    warm.add_argument("file", help="requests: a YAML list or JSONL of {url or path, json, method, headers}")
    warm.add_argument("--store", help="store URL (default: file://DIR)")
    warm.add_argument("--base-url", help="prefix for requests given by path, like https://api.openai.com/v1")
    warm.add_argument("--mode", default="record", help="record (default), refresh, or replay to only check")
    warm.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                      help="a header for every request; ${VAR} is read from the environment")
    upgrade = add("upgrade", cmd_upgrade, f"rewrite older cassettes in format {FORMAT_VERSION}, in place, keys unchanged")
    upgrade.add_argument("--dry-run", action="store_true", help="say what would be upgraded, write nothing")
    diff = add("diff", cmd_diff, "field-level differences of two cassettes")
    diff.add_argument("a", help="key prefix or file")
    diff.add_argument("b", help="key prefix or file")
    return parser


def _warning_line(command: str) -> Callable[..., None]:
    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        print(f"llm-cache {command}: warning: {message}", file=sys.stderr)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 problem found, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return OK
    try:
        with warnings.catch_warnings():
            # what the store could not keep (a scan index on a read-only checkout): one line each
            warnings.showwarning = _warning_line(args.command)
            return int(args.func(args))
    except UsageError as exc:
        print(f"llm-cache {args.command}: error: {exc}", file=sys.stderr)
        return USAGE
    except Problem as exc:
        print(f"llm-cache {args.command}: {exc}", file=sys.stderr)
        return PROBLEM
    except ConfigError as exc:
        print(f"llm-cache {args.command}: error: {exc}", file=sys.stderr)
        return USAGE
    except StoreUnavailable as exc:
        print(f"llm-cache {args.command}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return PROBLEM
    except OSError as exc:  # a file system that refuses (read-only, permissions, full): said, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"llm-cache {args.command}: {where}{exc.strerror or exc}", file=sys.stderr)
        return PROBLEM


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
