"""Commands that check or rewrite what is stored: verify (any store), upgrade (files only)."""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .. import cassette
from ..atomic import read_regular, write_atomic
from ..cassette import FORMAT_VERSION, dump_entry, load_doc, load_entry, parse_entry
from ..errors import CassetteError
from ..stores import Store
from ..stores.census import identify
from ..stores.files import FileStore
from ..values import parse_regexes
from ..verify import Note, examine_file, examine_stored
from ..verify import Problem as VerifyProblem
from .common import (
    OK,
    PROBLEM,
    _emit,
    _parse,
    _plural,
)
from .project import project_of
from .stores import StoreArg, stored_bytes


def _verify_files(store: FileStore, allow: tuple[str, ...]) -> tuple[int, list[VerifyProblem], list[Note], list[str]]:
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
        found, noted = examine_file(listed.path, allow, store=store)
        problems.extend(found)
        notes.extend(noted)
    notes += [Note(str(path), "a cassette a recording moved aside as corrupt; look at it, then remove it "
                              "(llm-cache prune --corrupt)") for path in store.set_aside()]
    return count, problems, notes, foreign


def _verify_entries(store: Store, allow: tuple[str, ...]) -> tuple[int, list[VerifyProblem], list[Note], list[str]]:
    """Each entry's stored text, as kept (a store without files: Redis)."""
    problems = []
    notes = []
    count = 0
    for meta in sorted(store.scan(), key=lambda m: m.location):
        data = stored_bytes(store, meta)
        if data is None:  # removed since the scan
            continue
        count += 1
        found, noted = examine_stored(meta, data, allow)
        problems.extend(found)
        notes.extend(noted)
    return count, problems, notes, []


def cmd_verify(args: argparse.Namespace) -> int:
    allow = _parse(parse_regexes, args.allow, "--allow")
    project = project_of(args)
    configured = project.get("allow") if project is not None else None
    if configured is not None:  # what the project allows at record time is allowed here too
        allow = _parse(parse_regexes, configured.value, configured.origin) + allow
    with StoreArg(args) as stores:
        store = stores.store
        if isinstance(store, FileStore):
            count, problems, notes, foreign = _verify_files(store, allow)
        else:
            count, problems, notes, foreign = _verify_entries(store, allow)
    lines = [f"{p.path}: {p.reason}" for p in problems]
    # notes (an older format, a damaged parsed copy) are worth knowing, never a failure
    lines += [f"{n.path}: note: {n.text}" for n in notes]
    lines += [f"{path}: not a cassette; left alone" for path in foreign]
    bad = len({p.path for p in problems})
    lines.append((f"{_plural(count, 'cassette')} checked, {bad} with problems" if problems else
                  f"{_plural(count, 'cassette')} checked, all sound")
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
    with StoreArg(args, file_only=True) as stores:
        store = stores.store
    assert isinstance(store, FileStore)  # file_only: nothing else is opened
    root = store.root
    upgraded: list[str] = []
    current = 0
    unreadable: list[tuple[str, str]] = []
    # a file that is no cassette of ours (a vcrpy cassette, a hand-made YAML) is left alone,
    # as verify leaves it: said, never a failure
    foreign: list[Path] = []
    for path in _cassette_files(root):
        where = str(path)
        if identify(path) == ["f"]:
            foreign.append(path)
            continue
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
    lines += [f"{path}: not a cassette; left alone" for path in foreign]
    lines.append(f"{verb} {_plural(len(upgraded), 'cassette')} to format {FORMAT_VERSION} "
                 f"({current} already current, {len(unreadable)} unreadable)")
    data = {"dry_run": args.dry_run, "format": FORMAT_VERSION, "upgraded": upgraded, "current": current,
            "unreadable": [{"path": where, "reason": reason} for where, reason in unreadable],
            "foreign": [str(path) for path in foreign]}
    _emit(args, data, "\n".join(lines))
    return PROBLEM if unreadable else OK
