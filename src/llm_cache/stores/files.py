"""The file store: ``<root>/<model-version>/<key prefix>.yaml``.

Where a cassette is written: ``FileStore.put``. A write goes to a temporary file in the
same directory, then ``os.replace`` puts it in place, so a crash or a full disk never
leaves a truncated cassette and a reader sees the old file or the new. A write that
fails raises ``StoreError`` naming the file and the cause.

What the store touches: files that prove to be cassettes (their first lines, or a full
parse: ``census``), in real model directories one level under the root; nothing else is
listed, changed or deleted. No symlink under the root is followed, to read or to write
(``paths``): a symlinked model directory or cassette is refused with a ``CassetteError``
that says so. Every read is of a regular file, its size checked first.

What it keeps beside the cassettes, only to be faster, each in a module of its own: the
parsed copies a read uses instead of the YAML when made from its very bytes (``parsed``),
the scan index of the census (``census``), the digest indexes a replay miss compares
itself with (``digests``), and the usage index (``llm_cache.usage``); ``derived`` says how
such data is written and what a failure to write it costs: one warning, never an error.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from .. import cassette
from ..atomic import UnsafePath, read_regular, write_atomic
from ..cassette import Entry, dump_entry, load_entry
from ..diagnose import Digests
from ..errors import CassetteError, OversizeCassette, StoreError, describe_os_error
from ..usage import META_DIR, Usage, UsageIndex, merge_usage
from .census import CASSETTE_NAME, SWEEP_AFTER, Listed, proves, swept, take_census
from .derived import Derived
from .digests import DIGESTS_FORMAT, DIGESTS_KEPT, RequestDigests
from .locks import KeyLock, LockTable, lock_kind
from .parsed import COPY_FORMAT, ParsedCopies, copy_body
from .parsed import sha256 as _sha256
from .paths import KEY_PREFIX_LENGTH, NOT_FOLLOWED, SUFFIX, Tree, cassette_path, safe_dirname
from .protocol import EntryMeta
from .refusals import Refusals

# the store, and the constants of its layout and derived data that are read from here
__all__ = [
    "COPY_FORMAT",
    "DIGESTS_FORMAT",
    "DIGESTS_KEPT",
    "KEY_PREFIX_LENGTH",
    "SUFFIX",
    "FileStore",
    "KeyLock",
    "Listed",
    "copy_body",
    "lock_kind",
    "safe_dirname",
]

log = logging.getLogger("llm_cache")


class FileStore:
    """Cassettes as YAML files under ``root``."""

    def __init__(self, root: str | os.PathLike[str], *, copies_from: int | None = 0) -> None:
        self.root = Path(root)
        self._tree = Tree(self.root)
        self._derived = Derived(self._tree)
        self._copies = ParsedCopies(self._tree, self._derived)
        self._digests = RequestDigests(self._tree, self._derived)
        # parsed copies to write at close: copy path -> (sha256 of the YAML, entry)
        self._pending: dict[str, tuple[str, Entry]] = {}
        self._locks: LockTable | None = None
        self._locks_guard = threading.Lock()
        self._checked: set[str] = set()
        # the smallest cassette (bytes of YAML) whose parsed copy is written; None: none is
        # (llm_cache_parsed_copies; a CI clone, thrown away after its run, would pay to write
        # them for nothing). Copies already there are read, of cassettes this size or more
        # (of every one when none is written: a CI that keeps .llm-cache/ in its cache).
        self.copies_from = copies_from
        # answers a recording did not keep, so that replay's miss can say why
        self.refusals = Refusals(self.root, KEY_PREFIX_LENGTH)

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    def path_for(self, key: str, model_version: str) -> Path:
        return cassette_path(self.root, key, model_version)

    def location(self, key: str, model_version: str) -> str:
        # str(path_for(...)) without the Path objects (every lookup and recording asks)
        return f"{self._tree.prefix}{safe_dirname(model_version)}{os.sep}{key[:KEY_PREFIX_LENGTH]}{SUFFIX}"

    def get(self, key: str, model_version: str) -> Entry | None:
        try:  # the path as a string: Path objects cost more than the rest of a cold read's bookkeeping
            return self._read(self.location(key, model_version), key)
        except FileNotFoundError:
            return None

    def entry_at(self, location: str) -> Entry:
        """The entry of the cassette at ``location`` (as ``location()`` gives it), from its
        parsed copy when there is one; nothing is remembered for copies to be written."""
        return self._read(location, None, remember=False)

    # -- reading -----------------------------------------------------------------

    def _read(self, path: str | os.PathLike[str], key: str | None, remember: bool = True) -> Entry:
        """A cassette's entry, from its parsed copy when that was made from these very bytes,
        else from the YAML (whose parsed copy is then written at ``close``, unless not
        ``remember``). ``FileNotFoundError`` when there is no such file."""
        where = os.fspath(path)
        directory, name = os.path.split(where)
        try:
            if not self._tree.is_real(directory):
                raise FileNotFoundError(where)
        except UnsafePath as exc:
            raise CassetteError(
                path=where, reason=f"its directory {exc.strerror}: {NOT_FOLLOWED}; "
                "replace the link with the directory it points to"
            ) from None
        except NotADirectoryError:  # the root, or the model directory, is a file
            raise FileNotFoundError(where) from None
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise CassetteError(path=where, reason=f"cannot be read: {exc.strerror}") from None
        try:
            data = read_regular(where, cassette.MAX_CASSETTE_BYTES)
        except FileNotFoundError:
            raise
        except UnsafePath as exc:
            if exc.errno == errno.EFBIG:
                raise OversizeCassette(path=where, size=_size_of(where), limit=cassette.MAX_CASSETTE_BYTES) from None
            fix = f": {NOT_FOLLOWED}; replace the link with the file" if exc.errno == errno.ELOOP else ""
            raise CassetteError(path=where, reason=f"it {exc.strerror}{fix}") from None
        except OSError as exc:
            raise CassetteError(path=where, reason=f"cannot be read: {exc.strerror}") from None
        if self.copies_from is not None and len(data) < self.copies_from:
            return load_entry(data, where, expected_key=key)  # too small for a copy to pay
        digest = _sha256(data)
        copy = self._copies.path(os.path.basename(directory), name.removesuffix(SUFFIX))
        entry = self._copies.entry(copy, digest, len(data), where, key)
        if entry is not None:
            return entry
        entry = load_entry(data, where, expected_key=key)
        if remember and self.copies_from is not None:
            self._pending[copy] = (digest, entry)
        return entry

    def _read_any(self, path: Path) -> Entry:
        """The entry of the cassette at ``path``, whatever its key; its copy is not queued."""
        return self._read(path, None, remember=False)

    def _parsed_copy(self, path: Path) -> Path:
        """Where the parsed copy of the cassette at ``path`` is kept."""
        return self._copies.of(path)

    def _copy_doc(self, copy: str | os.PathLike[str], digest: str, size: int) -> tuple[str, Any]:
        """What the parsed copy at ``copy`` is for the YAML of this ``digest`` and ``size``
        (see ``ParsedCopies.read``)."""
        return self._copies.read(copy, digest, size)

    def check_copy(self, path: Path, data: bytes, entry: Entry) -> tuple[str | None, str | None]:
        """For ``llm-cache verify``: (a problem, a note) about the parsed copy of the cassette
        at ``path``, whose bytes are ``data`` and entry ``entry`` (see ``ParsedCopies.check``)."""
        return self._copies.check(path, data, entry)

    def request_digests(
        self, model_version: str, ignore_fields: tuple[str, ...] = (), limit: int | None = None
    ) -> Iterator[tuple[str, str, str, Digests]]:
        """(location, method, path, digests) of the first ``limit`` cassettes of a model
        version, in directory order, for naming the closest to a miss (``llm_cache.diagnose``).

        The digests of each request's body under ``ignore_fields`` (``diagnose.entry_digests``)
        are kept per model version and ignored fields in ``.llm-cache/digests/``, and in memory,
        and reused while a cassette's size, mtime and inode are those they were made from; a
        cassette changed since is read again. A missing or damaged index is rebuilt; one that
        cannot be written is only slower next time. Unreadable cassettes are skipped. Every
        row is checked against the directory before the first is given.
        """
        return iter(self._digests.rows(model_version, tuple(ignore_fields), limit, self._read_any))

    # -- writing -------------------------------------------------------------------

    def _checked_dir(self, model_version: str) -> Path:
        """The model version's directory, made when missing, never a symlink. Once found
        real, later writes check it with one ``lstat``, not the whole check again."""
        directory = self.root / safe_dirname(model_version)
        if model_version in self._checked:
            try:
                if stat.S_ISDIR(os.lstat(directory).st_mode):  # a real directory still
                    return directory
            except OSError:
                pass  # gone: made again below
            self._checked.discard(model_version)
        if not directory.is_symlink():
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError.from_os_error(str(directory), exc, action="create the cassette directory") from None
        root = self.root.resolve()
        # A directory that is a symlink to elsewhere is never written through.
        if directory.is_symlink() or directory.resolve().parent != root:
            raise CassetteError(
                path=str(directory), reason="is a symlink or lies outside the cassette dir; not writing there"
            )
        self._checked.add(model_version)
        return directory

    def put(self, entry: Entry, text: str | None = None) -> str:
        """Write ``entry``'s cassette atomically; ``StoreError`` naming the file and the
        cause (disk full, read-only, permission) when it cannot be, and nothing is left."""
        directory = self._checked_dir(entry.model_version)
        path = directory / (entry.key[:KEY_PREFIX_LENGTH] + SUFFIX)
        data = (dump_entry(entry) if text is None else text).encode("utf-8")
        try:
            write_atomic(path, data)
        except OSError as exc:
            raise StoreError.from_os_error(str(path), exc) from None
        copy = self._copies.path(directory.name, path.stem)
        if self.copies_from is not None and len(data) >= self.copies_from:
            self._pending[copy] = (_sha256(data), entry)
        else:  # a copy queued when the cassette was read would be stale as soon as written
            self._pending.pop(copy, None)
        return str(path)

    def quarantine(self, key: str, model_version: str) -> str | None:
        """Move an unusable cassette aside to ``<name>.corrupt``; never in, or through, a
        symlinked directory (that is a ``CassetteError``, as reading it was)."""
        path = self.path_for(key, model_version)
        try:
            if not self._tree.is_real(path.parent):
                return None
        except UnsafePath as exc:
            raise CassetteError(
                path=str(path), reason=f"its directory {exc.strerror}: {NOT_FOLLOWED}; not moving anything there"
            ) from None
        target = _free_name(path.with_name(path.name + ".corrupt"))
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError.from_os_error(str(path), exc, action="move aside the unusable cassette") from None
        return str(target)

    def set_aside(self) -> list[Path]:
        """The cassettes ``quarantine`` moved aside (``<name>.yaml.corrupt``, ``.corrupt.2``...),
        regular files in the real model directories, for ``verify`` to name and ``prune
        --corrupt`` to remove once looked at."""
        found = []
        for directory in self._tree.model_dirs():
            try:
                with os.scandir(directory) as it:
                    found += [Path(e.path) for e in it if _SET_ASIDE.match(e.name) and e.is_file(follow_symlinks=False)]
            except OSError:
                continue
        return sorted(found)

    # -- listing -----------------------------------------------------------------

    def entries(self, model_version: str | None = None, limit: int | None = None) -> Iterator[Entry]:
        for count, path in enumerate(self._tree.files(model_version)):
            if limit is not None and count >= limit:
                return
            try:
                yield self._read(path, None)
            except (CassetteError, OSError):
                continue

    def size(self) -> tuple[int, int]:
        """(files named as cassettes are, their bytes): regular files in real model directories."""
        entries = total = 0
        for directory in self._tree.model_dirs():
            with suppress(OSError), os.scandir(directory) as it:
                for item in it:
                    if CASSETTE_NAME.match(item.name) and item.is_file(follow_symlinks=False):
                        entries += 1
                        total += item.stat(follow_symlinks=False).st_size
        return entries, total

    def sweep(self, older_than: float = SWEEP_AFTER) -> int:
        """Remove temporary files left by writers that were killed mid-write; returns how many."""
        removed = 0
        cutoff = time.time() - older_than
        for directory in self._tree.model_dirs():
            with suppress(OSError), os.scandir(directory) as it:
                removed += sum(swept(item, cutoff) for item in it)
        return removed

    def census(self) -> Iterator[Listed]:
        """Every place a cassette could be, and what is there (see ``Listed``), in order:
        the ``*.yaml`` files of the real model directories, and the symlinked model
        directories (refused: never followed). What the last census read of each file is
        kept in ``.llm-cache/scan.json`` and reused while its size and mtime are unchanged,
        so a census of 100,000 cassettes costs a directory listing, not 100,000 opens.
        Temporary files left by killed writers are swept on the way."""
        return take_census(self._tree, self._derived)

    def scan(self) -> Iterator[EntryMeta]:
        """Every cassette's metadata: only files that prove to be cassettes (see ``census``)."""
        for listed in self.census():
            if listed.meta is not None:
                yield listed.meta

    # -- changing ------------------------------------------------------------------

    def delete(self, meta: EntryMeta) -> None:
        """Remove one cassette, only once it proves to be the cassette of ``meta.key`` in a
        real model directory of this root (whatever an index said); anything else stays."""
        path = Path(meta.location)
        try:
            if path.parent.parent != self.root or not self._tree.is_real(path.parent):
                return
        except UnsafePath:
            return
        if not proves(path, meta.key):
            log.warning("not removing %s: it is not the cassette of %s", path, meta.key[:12])
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError.from_os_error(str(path), exc, action="remove the cassette") from None

    def lock(self, key: str) -> KeyLock:
        """``key``'s recording lock, under ``.llm-cache/locks/``: a byte of ``keys.lock``, or a
        lock file of its own where the system has no byte locks (see ``lock_kind``). A killed
        holder never keeps it. ``StoreError`` when the lock cannot be made (a read-only
        directory, ``.llm-cache`` a symlink)."""
        if self._locks is None:
            with self._locks_guard:
                if self._locks is None:
                    locks = self.root / META_DIR / "locks"
                    try:
                        self._locks = LockTable(self._tree.meta_dir(locks))
                    except OSError as exc:
                        cause = exc.strerror if isinstance(exc, UnsafePath) else describe_os_error(exc)
                        raise StoreError(path=str(exc.filename or locks), cause=str(cause), errno=exc.errno,
                                         action="make the recording lock in") from None
        return KeyLock(self._locks, key)

    def usage(self) -> dict[str, Usage]:
        return UsageIndex(self.root).load()

    def touch(self, deltas: dict[str, Usage], keep: set[str] | None = None) -> dict[str, Usage]:
        """Merge use into the usage index; when it cannot be written, one warning, and the
        merged use is only returned."""
        index = UsageIndex(self.root)
        if not self._derived.refused:
            try:
                return index.update(deltas, keep)
            except OSError as exc:  # filelock's Timeout is one too
                self._derived.failed("usage index", index.path, exc)
        current = index.load()
        merge_usage(current, deltas)
        return {k: v for k, v in current.items() if keep is None or k in keep}

    def clear(self) -> int:
        count = 0
        for meta in list(self.scan()):
            self.delete(meta)
            count += 1
        return count

    def close(self) -> None:
        """Write the parsed copies of the cassettes read or written since the last close."""
        pending, self._pending = self._pending, {}
        if pending:
            self._copies.write(pending)


# What quarantine names a cassette it moves aside.
_SET_ASIDE = re.compile(r"[0-9a-f]{16}\.yaml\.corrupt(?:\.\d+)?\Z")


def _free_name(target: Path) -> Path:
    """``target``, or ``<target>.2``, ``.3``... when a file is there already: a cassette moved
    aside earlier, or a file of the user's, which the cache never overwrites."""
    candidate, number = target, 1
    while os.path.lexists(candidate):
        number += 1
        candidate = target.with_name(f"{target.name}.{number}")
    return candidate


def _size_of(path: str) -> int:
    """The size of the file at ``path``, 0 when it went meanwhile."""
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0
