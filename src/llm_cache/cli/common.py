"""What the commands share: exit codes, errors that carry them, reading cassettes, tables."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .. import cassette
from ..atomic import UnsafePath, read_regular
from ..cassette import Entry, load_entry
from ..errors import CassetteError, ConfigError
from ..settings import (
    DEFAULT_TTL,
    parse_duration,
)
from ..stores.files import FileStore

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


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
