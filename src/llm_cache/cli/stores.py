"""The store a command works on (``--dir D`` or ``--store URL``), and reading entries from it.

A file store keeps its richer paths (files that are not cassettes, files replay refuses,
reads that never follow a symlink); any other store is read through the Store protocol.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import final
from urllib.parse import urlsplit

from .. import cassette
from ..atomic import UnsafePath, read_regular
from ..cassette import Entry, load_entry
from ..errors import CassetteError, ConfigError, StoreUnavailable
from ..meta import EntryMeta
from ..redact import mask_url
from ..stores import Store, open_store
from ..stores.files import FileStore
from ..values import STORE_URL, parse_size
from .common import Problem, UsageError
from .project import project_of, shown

__all__ = [
    "CLI_STORE_FORM",
    "DEFAULT_DIR",
    "Found",
    "Loaded",
    "StoreArg",
    "census",
    "find",
    "load_all",
    "read_cassette",
    "stored_bytes",
    "where",
]

DEFAULT_DIR = "cassettes"
CLI_STORE_FORM = ("file://PATH, redis://host:port/db?prefix=..., rediss://host:port/db, unix://PATH "
                  "or redis+cluster://host:port,host:port/?prefix=...")
_SCHEMES = ("", "file", "redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def where(store: Store) -> str:
    """The store as messages name it: its directory, or its URL with any password masked."""
    if isinstance(store, FileStore):
        return str(store.root)
    return str(getattr(store, "url", None) or repr(store))


@final
class StoreArg:
    """The store of ``--dir``/``--store``, or else of the project's pytest configuration
    (``llm_cache_store``, ``llm_cache_dir``, ``cassettes/`` under its rootdir; ``./cassettes``
    outside a project), opened when first needed and closed at the end.

    Bad usage of the flags (both, an unknown or memory:// URL) is found at once, before
    anything is opened; the configuration is read only when a store is needed, so that
    commands that need none (``diff`` of two files) never read it. ``file_only`` refuses any
    store but a directory (upgrade); ``creates`` lets a missing directory be made (warm)."""

    def __init__(self, args: argparse.Namespace, *, file_only: bool = False, creates: bool = False,
                 ttl: timedelta | None = None) -> None:
        self.url: str | None = getattr(args, "store", None)
        self.dir: str | None = getattr(args, "dir", None)
        self.root = Path(".")
        self.origin = "--store" if self.url is not None else "--dir"
        self._args, self._file_only, self._creates, self._ttl = args, file_only, creates, ttl
        self._store: Store | None = None
        self._resolved = self.url is not None or self.dir is not None
        if self.url is not None and self.dir is not None:
            raise UsageError("give the store with --dir or with --store, not both")
        if self.url is not None:
            self._check_url("--store")

    def _check_url(self, setting: str) -> None:
        assert self.url is not None
        flag = setting == "--store"
        try:
            scheme = urlsplit(self.url).scheme
        except ValueError:  # an unclosed [ of an IPv6 host: open_store names the form
            scheme = "redis"
        if not flag and not STORE_URL.match(self.url):  # as the plugin refuses it
            raise UsageError(f"{setting} must be a store URL: {CLI_STORE_FORM}, got {mask_url(self.url)!r}")
        if scheme == "memory":
            if self._creates and not flag:  # warm into the project's memory store: a mistake
                raise UsageError(f"{setting} is memory://, which keeps nothing once the command ends: warm a store "
                                 f"the tests read with --dir DIR or --store {CLI_STORE_FORM}")
            if not self._creates:  # warm --store memory:// is a check that the requests run
                what = "--store memory://" if flag else f"{setting} is memory://, which"
                other = "--store file://PATH" if self._file_only else f"--store {CLI_STORE_FORM}"
                raise UsageError(f"{what} cannot be inspected: a memory store lives in one process only, "
                                 f"and is gone when it ends; give --dir DIR or {other}")
        elif scheme not in _SCHEMES:
            raise UsageError(f"{setting} must be a store URL: {CLI_STORE_FORM}, got {mask_url(self.url)!r}")
        if self._file_only and scheme not in ("", "file"):
            command = getattr(self._args, "command", "this command")
            raise UsageError(f"{command} rewrites cassette files: {setting} must be file://PATH "
                             f"(or use --dir), got {mask_url(self.url)!r}")

    def _resolve(self) -> None:
        """With neither flag: the project's store, said by where it was read."""
        if self._resolved:
            return
        self._resolved = True
        project = project_of(self._args)
        if project is None:
            self.dir, self.origin = DEFAULT_DIR, "the default ./cassettes"
            return
        self.root = project.root
        limit = project.get("cassette_size")
        if limit is not None:  # what the tests replay, the command reads (the plugin sets it the same way)
            size = parse_size(limit.value, limit.origin)
            if size:
                cassette.MAX_CASSETTE_BYTES = size
        store, folder = project.get("store"), project.get("dir")
        if store is not None:  # as in a test run: a store, when one is set, is where cassettes go
            self.url, self.origin = str(store.value).strip(), store.origin
            self._check_url(store.origin)
        elif folder is not None:
            self.dir, self.origin = shown(project.root / str(folder.value)), folder.origin
        else:
            self.dir, self.origin = shown(project.root / DEFAULT_DIR), f"cassettes/ beside {project.shown}"

    @property
    def store(self) -> Store:
        if self._store is None:
            self._resolve()
            self._store = self._open()
        return self._store

    def _hint(self) -> str:
        return "give one" if self.origin == "--dir" else f"{self.origin}; give another"

    def _open(self) -> Store:
        if self.url is None:
            root = Path(self.dir or DEFAULT_DIR)
            if root.exists() and not root.is_dir():
                raise Problem(f"{root} is not a directory ({self._hint()} with --dir or --store)")
            if not root.is_dir() and not self._creates:
                raise Problem(f"no cassette directory at {root} ({self._hint()} with --dir or --store)")
            return FileStore(root)
        try:
            store = open_store(self.url, self.root, self._ttl, setting=self.origin)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        except ImportError as exc:  # redis-py not installed
            raise Problem(str(exc)) from None
        except StoreUnavailable as exc:
            named = "" if self.origin == "--store" else f" (this one is {self.origin})"
            first = exc.fix.split(",", 1)[0]  # start it, or check its password
            raise Problem(f"{str(exc).splitlines()[0].rstrip('.')}. "  # one line, as every command's problem
                          f"{first}, or give another store with --store or --dir{named}.") from None
        if isinstance(store, FileStore) and not store.root.is_dir() and not self._creates:
            if self.origin == "--store":
                raise Problem(f"no cassette directory at {store.root} (--store {mask_url(self.url)})")
            raise Problem(f"no cassette directory at {shown(store.root)} ({self._hint()} with --dir or --store)")
        return store

    def __enter__(self) -> StoreArg:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._store is not None:
            self._store.close()


# -- reading entries -----------------------------------------------------------


def read_cassette(path: Path) -> Entry:
    """A cassette read as replay reads it: a regular file, not through a symlink, size checked."""
    try:
        data = read_regular(path, cassette.MAX_CASSETTE_BYTES)
    except UnsafePath as exc:
        raise CassetteError(path=str(path), reason=f"it {exc.strerror}") from None
    except OSError as exc:
        raise CassetteError(path=str(path), reason=f"cannot be read: {exc.strerror or exc}") from None
    return load_entry(data, str(path))


@dataclass
class Loaded:
    """One entry of a listing: where it is, what names it (a key, or a file's stem, and a
    model version or a directory), its size, and the entry or why it cannot be read."""

    location: str
    key: str
    group: str
    size: int
    entry: Entry | None
    error: str | None = None


def load_all(store: Store) -> tuple[list[Loaded], int]:
    """The entries, and those that cannot be used; and how many files are not cassettes
    (listed by ``verify``, touched by nothing), in location order."""
    out = []
    foreign = 0
    if isinstance(store, FileStore):
        for listed in store.census():
            path = listed.path
            if listed.kind == "foreign":
                foreign += 1
                continue
            size = listed.meta.size if listed.meta is not None else 0
            item = Loaded(str(path), path.stem, path.parent.name, size, None, listed.problem)
            if not listed.refused:
                try:
                    item.entry = read_cassette(path)
                    item.error = None
                except CassetteError as exc:
                    item.error = exc.reason
            out.append(item)
    else:
        for meta in store.scan():
            item = Loaded(meta.location, meta.key, meta.model_version, meta.size, None)
            try:
                entry = store.get(meta.key, meta.model_version)
            except CassetteError as exc:
                item.error = exc.reason
            else:
                if entry is None:  # removed since the scan
                    continue
                item.entry = entry
            out.append(item)
    return sorted(out, key=lambda item: item.location), foreign


def census(store: Store) -> Iterator[tuple[EntryMeta | None, str]]:
    """Every entry's metadata (with None, the entries replay cannot use: their group)."""
    if not isinstance(store, FileStore):
        for meta in store.scan():
            yield meta, meta.model_version
        return
    for listed in store.census():
        if listed.meta is not None:
            yield listed.meta, listed.meta.model_version
        elif listed.kind == "unusable":  # ours, but replay cannot use it
            path = listed.path
            yield None, (path.name if path.parent == store.root else path.parent.name)


def stored_bytes(store: Store, meta: EntryMeta) -> bytes | None:
    """An entry's text as its store keeps it (None: gone); a store that cannot say gives
    the entry written again, which is what replay would read."""
    raw = getattr(store, "raw", None)
    if raw is not None:
        data = raw(meta.key)
        return None if data is None else bytes(data)
    entry = store.get(meta.key, meta.model_version)
    return None if entry is None else cassette.dump_entry(entry).encode("utf-8")


# -- one entry, by key prefix or file ------------------------------------------


@dataclass(frozen=True)
class Found:
    location: str
    entry: Entry
    in_file: bool = True


def _read(path: Path) -> Entry:
    try:
        return read_cassette(path)
    except CassetteError as exc:
        raise Problem(str(exc).splitlines()[0]) from None


def _unusable(store: Store, prefix: str) -> None:
    """A key prefix that only names cassettes ``ls`` lists as UNREADABLE: a Problem saying why
    (a file's name is its key's first 16 digits), rather than "no cassette"."""
    if not isinstance(store, FileStore):
        return
    named = [listed for listed in store.census()
             if listed.kind == "unusable" and (listed.path.stem.startswith(prefix) or prefix.startswith(listed.path.stem))]
    if len(named) == 1:
        listed = named[0]
        if not listed.refused:
            _read(listed.path)  # raises the reason it cannot be read, as replay would say it
        raise Problem(f"cassette {listed.path} is unusable: {listed.problem}")
    if named:
        shown = ", ".join(str(listed.path) for listed in named[:5])
        raise Problem(f"no readable cassette whose key starts with {prefix}; {len(named)} unusable files are "
                      f"named by it ({shown}): llm-cache verify says why")


def find(stores: StoreArg, ref: str) -> Found:
    """A cassette by file (no store needed) or by a unique key prefix (of the store's keys)."""
    as_path = Path(ref)
    if as_path.suffix == ".yaml":
        if as_path.is_file():
            return Found(str(as_path), _read(as_path))
        if as_path.exists() or "/" in ref:
            raise Problem(f"no cassette file at {ref}")
    prefix = ref.lower()
    if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
        raise UsageError(f"{ref!r} is neither a cassette file nor a key prefix of at least 4 hex digits")
    store = stores.store
    matches = [m for m in store.scan() if m.key.startswith(prefix)]
    if not matches:
        _unusable(store, prefix)
        raise Problem(f"no cassette whose key starts with {ref} in {where(store)}")
    if len(matches) > 1:
        listed = ", ".join(m.location for m in sorted(matches, key=lambda m: m.location)[:5])
        raise UsageError(f"key prefix {ref} is ambiguous: {len(matches)} cassettes ({listed}); give more digits")
    meta = matches[0]
    if isinstance(store, FileStore):
        return Found(meta.location, _read(Path(meta.location)))
    try:
        entry = store.get(meta.key, meta.model_version)
    except CassetteError as exc:
        raise Problem(str(exc).splitlines()[0]) from None
    if entry is None:
        raise Problem(f"{meta.location} was removed while it was being read")
    return Found(meta.location, entry, in_file=False)
