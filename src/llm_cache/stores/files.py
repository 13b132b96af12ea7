"""The file store: ``<root>/<model-version>/<key prefix>.yaml``.

Reading a cassette with PyYAML's C safe loader costs about 0.2 ms, a third of an SDK
call. So each cassette parsed once gets a derived copy in JSON under
``.llm-cache/parsed/``, which holds the SHA-256 of the YAML it was made from. A read
takes the YAML's bytes (one read: a few microseconds), hashes them, and uses the copy
only when its hash is theirs; otherwise it parses those same bytes. So a copy is used
only for the very text it was made from, whatever the file's size and mtime say (an
edit that keeps both, a restored mtime, a copy from another checkout), and a damaged
one (cut short, not JSON, nested too deep, wrong fields) is ignored and written again.
Copies are written at session end (``close``), off the request path, in place: each
holds a hash of its own entry too, so one cut short or mixed from two writers is
known as such, and an atomic write's temporary file and rename are not needed. What a
replay miss compares itself with is kept beside them, as digests of the stored requests
in ``.llm-cache/digests/`` (``request_digests``), reused while a cassette's size, mtime
and inode hold: a stale digest can only name a worse closest request, never serve one.

Where a cassette is written: ``FileStore.put``. A write goes to a temporary file in the
same directory, then ``os.replace`` puts it in place, so a crash or a full disk never
leaves a truncated cassette and a reader sees the old file or the new. A write that
fails raises ``StoreError`` naming the file and the cause.

What the store touches: files that prove to be cassettes (their first lines, or a full
parse), in real model directories one level under the root; nothing else is listed,
changed or deleted. No symlink under the root is followed, to read or to write:
a symlinked model directory or cassette is refused with a ``CassetteError`` that says
so, and ``.llm-cache/`` and everything in it must be real directories and files. Every
read is of a regular file, its size checked first.

Derived data (parsed copies, the scan and digest indexes, the usage index) is never
needed: a failure to write it is one ``LLMCacheWarning`` per kind and store, and a
directory this process cannot write (a read-only checkout) gets no attempt at all.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import cassette
from ..atomic import (
    UnsafePath,
    file_kind,
    overwrite,
    read_head,
    read_regular,
    real_dir,
    write_atomic,
)
from ..cassette import Entry, dump_entry, load_entry, parse_entry
from ..diagnose import Digests, entry_digests
from ..errors import CassetteError, LLMCacheWarning, StoreError, describe_os_error
from ..usage import MAX_INDEX_BYTES, META_DIR, Usage, UsageIndex, ensure_meta_dir
from .locks import KeyLock, LockTable, lock_kind
from .protocol import EntryMeta

__all__ = ["KEY_PREFIX_LENGTH", "FileStore", "KeyLock", "Listed", "lock_kind", "safe_dirname"]

log = logging.getLogger("llm_cache")

# 16 hex digits: 64 bits, no collision in any real cassette dir; the file holds the full key.
KEY_PREFIX_LENGTH = 16
# A temporary file older than this was left by a writer that died.
SWEEP_AFTER = 600.0
SUFFIX = ".yaml"
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")
# The head of a cassette as dump_entry writes it: read without a YAML parse.
_HEAD = re.compile(rb"\Allm_cache: [12]\nkey: ([0-9a-f]{64})\nrecorded_at: '([^'\n]+)'\n")
HEAD_BYTES = 160
# A file whose first two lines are a cassette's is one, or a damaged one.
_OURS = re.compile(rb"\Allm_cache: \d+\r?\nkey: ")
# The name put gives a cassette: a file named so is one, or a damaged one.
_CASSETTE_NAME = re.compile(rf"[0-9a-f]{{{KEY_PREFIX_LENGTH}}}\.yaml\Z")
# The format of the scan index (scan); another is rebuilt.
SCAN_FORMAT = 2
# The format of the parsed copies. A copy is one JSON object, written as
#   {"format":2,"sha256":"<the YAML's>","doc":<the entry>,"check":"<sha256 of <the entry>>"}
# so that its YAML's hash is compared before any JSON is parsed, and a copy cut short or
# mixed from two writers (copies are written in place, see atomic.overwrite) fails its check.
COPY_FORMAT = 2
_COPY_PREFIX = b'{"format":%d,"sha256":"' % COPY_FORMAT
_COPY_DOC = b'","doc":'
_COPY_CHECK = re.compile(rb',"check":"([0-9a-f]{64})"\}')
_CHECK_BYTES = len(b',"check":"') + 64 + len(b'"}')
# A copy larger than this many times its YAML (plus a little) is not read: JSON of a
# YAML document is about its size, at worst a few times it (escapes).
COPY_RATIO = 8
# The format of the digest indexes (request_digests); another is rebuilt.
DIGESTS_FORMAT = 2
# How many digest indexes (model version and ignored fields) a store keeps in memory.
DIGESTS_KEPT = 4
# How many shapes of body (sets of field names) a store shares between digests.
SHAPES_KEPT = 10_000
# Why a write failed when the disk or directory refuses writes at all: no more derived
# writes are tried in this store.
_REFUSING = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}
# A cassette's digests in memory: size, mtime_ns, inode, then (location, method, path,
# digests), or None for an unreadable cassette.
_DigestRow = tuple[int, int, int, "tuple[str, str, str, Digests] | None"]
_NOT_FOLLOWED = "the cache follows no symlink under the cassette dir"


@functools.lru_cache(maxsize=4096)
def safe_dirname(label: str) -> str:
    """A directory name for a model version label that cannot leave the cassette dir.

    Labels made only of safe characters are used as they are; any other gets its
    unsafe characters replaced and a hash of the original appended, so two
    labels never share a directory after replacement.
    """
    cleaned = _UNSAFE.sub("_", label)
    if cleaned == label and label and not label.startswith(".") and len(label) <= 100:
        return label
    cleaned = cleaned.lstrip(".")[:80] or "_"
    return f"{cleaned}-{hashlib.sha256(label.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stamp_of(recorded: datetime | None) -> float | None:
    if recorded is None:
        return None
    if recorded.tzinfo is None:
        recorded = recorded.replace(tzinfo=timezone.utc)
    return recorded.timestamp()


@dataclass(frozen=True)
class Listed:
    """A file where a cassette could be (``<root>/<dir>/*.yaml``, or a symlinked ``<dir>``):
    a cassette (``meta``), one of ours that cannot be used (``problem`` says why: damaged,
    a symlink, not a regular file), or neither: not a cassette, which nothing touches."""

    path: Path
    meta: EntryMeta | None = None
    problem: str | None = None
    # a symlink, a FIFO, a directory: never opened, so there is nothing more to read
    refused: bool = False

    @property
    def kind(self) -> str:
        """``cassette``, ``unusable`` or ``foreign``."""
        if self.meta is not None:
            return "cassette"
        return "unusable" if self.problem is not None else "foreign"


class FileStore:
    """Cassettes as YAML files under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        # parsed copies to write at close: copy path -> (sha256 of the YAML, entry)
        self._pending: dict[str, tuple[str, Entry]] = {}
        self._locks: LockTable | None = None
        self._locks_guard = threading.Lock()
        self._checked: set[str] = set()
        # directories found real (not symlinks) in this store's life, as strings
        self._real: set[str] = set()
        # the digest indexes read or made lately: index path -> rows (see request_digests)
        self._digests: OrderedDict[Path, dict[str, _DigestRow]] = OrderedDict()
        self._digests_guard = threading.Lock()
        self._root_prefix = os.path.join(str(self.root), "")  # the root, and a separator
        self._copies_prefix = os.path.join(str(self.root), META_DIR, "parsed", "")
        self._shapes: dict[frozenset[str], frozenset[str]] = {}
        # derived data: what was warned about, and whether the disk refuses writes
        self._warned: set[str] = set()
        self._refused = False

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    def path_for(self, key: str, model_version: str) -> Path:
        return self.root / safe_dirname(model_version) / (key[:KEY_PREFIX_LENGTH] + SUFFIX)

    def location(self, key: str, model_version: str) -> str:
        return str(self.path_for(key, model_version))

    def get(self, key: str, model_version: str) -> Entry | None:
        # path_for as a string: Path objects cost more than the rest of a cold read's bookkeeping
        path = f"{self._root_prefix}{safe_dirname(model_version)}{os.sep}{key[:KEY_PREFIX_LENGTH]}{SUFFIX}"
        try:
            return self._read(path, key)
        except FileNotFoundError:
            return None

    # -- reading -----------------------------------------------------------------

    def _is_real(self, directory: str | os.PathLike[str]) -> bool:
        """Whether ``directory`` is a real directory (remembered); False when missing.
        ``UnsafePath`` when it is a symlink or not a directory."""
        name = os.fspath(directory)
        if name in self._real:
            return True
        try:
            real_dir(Path(name), create=False)
        except FileNotFoundError:
            return False
        self._real.add(name)
        return True

    def _copy_of(self, dirname: str, stem: str) -> str:
        """Where the parsed copy of ``<dirname>/<stem>.yaml`` is kept."""
        return f"{self._copies_prefix}{dirname}{os.sep}{stem}.json"

    def _parsed_copy(self, path: Path) -> Path:
        return Path(self._copy_of(path.parent.name, path.stem))

    def _read(self, path: str | os.PathLike[str], key: str | None, remember: bool = True) -> Entry:
        """A cassette's entry, from its parsed copy when that was made from these very bytes,
        else from the YAML (whose parsed copy is then written at ``close``, unless not
        ``remember``). ``FileNotFoundError`` when there is no such file."""
        where = os.fspath(path)
        directory, name = os.path.split(where)
        try:
            if not self._is_real(directory):
                raise FileNotFoundError(where)
        except UnsafePath as exc:
            raise CassetteError(
                path=where, reason=f"its directory {exc.strerror}: {_NOT_FOLLOWED}; "
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
            fix = f": {_NOT_FOLLOWED}; replace the link with the file" if exc.errno == errno.ELOOP else ""
            raise CassetteError(path=where, reason=f"it {exc.strerror}{fix}") from None
        except OSError as exc:
            raise CassetteError(path=where, reason=f"cannot be read: {exc.strerror}") from None
        digest = _sha256(data)
        copy = self._copy_of(os.path.basename(directory), name.removesuffix(SUFFIX))
        entry = self._from_copy(copy, digest, len(data), where, key)
        if entry is not None:
            return entry
        entry = load_entry(data, where, expected_key=key)
        if remember:
            self._pending[copy] = (digest, entry)
        return entry

    def _copy_doc(self, copy: str | os.PathLike[str], digest: str, size: int) -> tuple[str, Any]:
        """What the parsed copy at ``copy`` is for the YAML of this ``digest`` and ``size``:
        (``missing`` | ``malformed`` | ``stale`` | ``current``, its document when current)."""
        copy = os.fspath(copy)
        folder = os.path.dirname(copy)
        try:
            if folder not in self._real:
                parsed = os.path.dirname(folder)
                if not (self._is_real(os.path.dirname(parsed)) and self._is_real(parsed) and self._is_real(folder)):
                    return "missing", None
            data = read_regular(copy, COPY_RATIO * size + 65536)
        except FileNotFoundError:
            return "missing", None
        except OSError:  # a symlink, not a regular file, too large, unreadable
            return "malformed", None
        if not data.startswith(_COPY_PREFIX):
            return "malformed", None
        at = len(_COPY_PREFIX)
        if not data.startswith(digest.encode(), at):
            return "stale", None
        at += len(digest)
        if not data.startswith(_COPY_DOC, at):
            return "malformed", None
        at += len(_COPY_DOC)
        end = len(data) - _CHECK_BYTES
        check = _COPY_CHECK.fullmatch(data, end) if end >= at else None
        if check is None or _sha256(data[at:end]).encode() != check.group(1):
            return "malformed", None  # cut short, or mixed from two writers
        try:
            return "current", json.loads(data[at:end])
        except Exception:  # noqa: BLE001 - not JSON, nested too deep, wrong shape: ignored, rebuilt
            return "malformed", None

    def _from_copy(self, copy: str, digest: str, size: int, where: str, key: str | None) -> Entry | None:
        status, doc = self._copy_doc(copy, digest, size)
        if status != "current":
            return None
        try:
            return parse_entry(doc, where, expected_key=key)
        except Exception:  # noqa: BLE001 - a copy that does not validate is ignored and rebuilt
            return None

    def check_copy(self, path: Path, data: bytes, entry: Entry) -> tuple[str | None, str | None]:
        """For ``llm-cache verify``: (a problem, a note) about the parsed copy of the cassette
        at ``path``, whose bytes are ``data`` and entry ``entry``. A copy made from these
        bytes that holds another entry would be served: a problem. A damaged one is ignored
        and written again: a note. A stale or missing one is as it should be."""
        copy = self._parsed_copy(path)
        status, doc = self._copy_doc(copy, _sha256(data), len(data))
        damaged = f"its parsed copy {copy} is damaged; replay ignores it and writes it again"
        if status == "malformed":
            return None, damaged
        if status != "current":
            return None, None
        try:
            held = parse_entry(doc, str(path))
        except Exception:  # noqa: BLE001 - replay ignores a copy that does not validate
            return None, damaged
        if held != entry:
            return (f"its parsed copy {copy} claims to be made from this file but holds another entry, "
                    "which replay would serve: delete the copy (it is rebuilt from the YAML)"), None
        return None, None

    def _checked_dir(self, model_version: str) -> Path:
        directory = self.root / safe_dirname(model_version)
        if model_version in self._checked and directory.is_dir() and not directory.is_symlink():
            return directory
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
        self._pending[self._copy_of(directory.name, path.stem)] = (_sha256(data), entry)
        return str(path)

    def quarantine(self, key: str, model_version: str) -> str | None:
        """Move an unusable cassette aside to ``<name>.corrupt``; never in, or through, a
        symlinked directory (that is a ``CassetteError``, as reading it was)."""
        path = self.path_for(key, model_version)
        try:
            if not self._is_real(path.parent):
                return None
        except UnsafePath as exc:
            raise CassetteError(
                path=str(path), reason=f"its directory {exc.strerror}: {_NOT_FOLLOWED}; not moving anything there"
            ) from None
        target = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError.from_os_error(str(path), exc, action="move aside the unusable cassette") from None
        return str(target)

    # -- listing -----------------------------------------------------------------

    def _files(self, model_version: str | None) -> Iterator[Path]:
        """Regular ``*.yaml`` files in real model directories (of one model version)."""
        if model_version:
            directory = self.root / safe_dirname(model_version)
            try:
                dirs = [directory] if self._is_real(directory) else []
            except UnsafePath:
                dirs = []
        else:
            dirs = self._dirs()
        for directory in dirs:
            try:
                with os.scandir(directory) as it:
                    for item in it:
                        if (item.name.endswith(SUFFIX) and not item.name.startswith(".")
                                and item.is_file(follow_symlinks=False)):
                            yield Path(item.path)
            except (FileNotFoundError, NotADirectoryError):
                continue

    def _dirs(self) -> list[Path]:
        """The real model directories: never a symlink, never a dot-directory."""
        try:
            with os.scandir(self.root) as it:
                return sorted(
                    Path(d.path) for d in it if d.is_dir(follow_symlinks=False) and not d.name.startswith(".")
                )
        except (FileNotFoundError, NotADirectoryError):
            return []

    def entries(self, model_version: str | None = None, limit: int | None = None) -> Iterator[Entry]:
        for count, path in enumerate(self._files(model_version)):
            if limit is not None and count >= limit:
                return
            try:
                yield self._read(path, None)
            except (CassetteError, OSError):
                continue

    def size(self) -> tuple[int, int]:
        """(files named as cassettes are, their bytes): regular files in real model directories."""
        entries = total = 0
        for directory in self._dirs():
            with suppress(OSError), os.scandir(directory) as it:
                for item in it:
                    if _CASSETTE_NAME.match(item.name) and item.is_file(follow_symlinks=False):
                        entries += 1
                        total += item.stat(follow_symlinks=False).st_size
        return entries, total

    def sweep(self, older_than: float = SWEEP_AFTER) -> int:
        """Remove temporary files left by writers that were killed mid-write; returns how many."""
        removed = 0
        cutoff = time.time() - older_than
        for directory in self._dirs():
            with suppress(OSError), os.scandir(directory) as it:
                removed += sum(_swept(item, cutoff) for item in it)
        return removed

    def _identify(self, path: Path) -> list[Any]:
        """What a regular ``*.yaml`` file is, as a scan index row's tail: ``["c", key,
        recorded]`` for a cassette (its first lines prove it, or a full parse), ``["u",
        reason]`` for one named as ours, or beginning as ours, that does not parse, ``["f"]``
        otherwise: not a cassette."""
        try:
            head, _ = read_head(path, HEAD_BYTES)
        except OSError as exc:
            return ["u", f"cannot be read: {exc.strerror}"]
        match = _HEAD.match(head)
        if match:
            try:
                recorded = datetime.fromisoformat(match.group(2).decode().replace("Z", "+00:00"))
                return ["c", match.group(1).decode(), _stamp_of(recorded)]
            except ValueError:
                pass
        if not (_CASSETTE_NAME.match(path.name) or _OURS.match(head)):
            return ["f"]
        try:
            entry = load_entry(read_regular(path, cassette.MAX_CASSETTE_BYTES), str(path))
        except CassetteError as exc:
            return ["u", exc.reason]
        except OSError as exc:
            return ["u", f"it {exc.strerror}" if isinstance(exc, UnsafePath) else f"cannot be read: {exc.strerror}"]
        return ["c", entry.key, _stamp_of(entry.recorded_at)]

    def _proves(self, path: Path, key: str) -> bool:
        """Whether the file at ``path`` is a cassette of ``key``: its first lines, or a full parse."""
        try:
            head, _ = read_head(path, HEAD_BYTES)
        except OSError:
            return False
        match = _HEAD.match(head)
        if match:
            return match.group(1).decode() == key
        row = self._identify(path)
        return bool(row[0] == "c" and row[1] == key)

    def _load_scan(self, index_path: Path) -> dict[str, list[Any]]:
        try:
            if not self._is_real(index_path.parent):
                return {}
            data = json.loads(read_regular(index_path, MAX_INDEX_BYTES))
            if data["format"] != SCAN_FORMAT or not isinstance(data["files"], dict):
                return {}
            return {name: row for name, row in data["files"].items() if _valid_scan_row(row)}
        except Exception:  # noqa: BLE001 - missing, damaged or not ours: every file is read again
            return {}

    def census(self) -> Iterator[Listed]:
        """Every place a cassette could be, and what is there (see ``Listed``), in order:
        the ``*.yaml`` files of the real model directories, and the symlinked model
        directories (refused: never followed). What the last census read of each file is
        kept in ``.llm-cache/scan.json`` and reused while its size and mtime are unchanged,
        so a census of 100,000 cassettes costs a directory listing, not 100,000 opens.
        Temporary files left by killed writers are swept on the way."""
        index_path = self.root / META_DIR / "scan.json"
        known = self._load_scan(index_path)
        seen: dict[str, list[Any]] = {}
        cutoff = time.time() - SWEEP_AFTER
        try:
            with os.scandir(self.root) as it:
                tops = sorted((d for d in it if not d.name.startswith(".")), key=lambda d: d.name)
        except (FileNotFoundError, NotADirectoryError):
            tops = []
        for top in tops:
            try:
                if top.is_symlink():
                    if top.is_dir():  # a symlinked model directory: reported, never followed
                        yield Listed(Path(top.path), problem=f"{_symlink_text(top.path)}: {_NOT_FOLLOWED}; "
                                     "replace the link with the directory it points to", refused=True)
                    continue
                if not top.is_dir(follow_symlinks=False):
                    continue
                items = sorted(os.scandir(top.path), key=lambda i: i.name)
            except OSError:
                continue
            for item in items:
                listed = self._listed(top.name, item, known, seen, cutoff)
                if listed is not None:
                    yield listed
        if seen != known:
            self._write_derived("scan index", index_path, lambda: json.dumps(
                {"format": SCAN_FORMAT, "files": seen}, separators=(",", ":")))

    def _listed(self, dirname: str, item: os.DirEntry[str], known: dict[str, list[Any]],
                seen: dict[str, list[Any]], cutoff: float) -> Listed | None:
        name = item.name
        if name.startswith("."):
            _swept(item, cutoff)
            return None
        if not name.endswith(SUFFIX):
            return None
        path = Path(item.path)
        try:
            info = item.stat(follow_symlinks=False)
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            return Listed(path, problem=f"{_symlink_text(item.path)}: {_NOT_FOLLOWED}; replace the link with the file",
                          refused=True)
        if not stat.S_ISREG(info.st_mode):
            return Listed(path, problem=f"it is {file_kind(info.st_mode)}, not a regular file; not read", refused=True)
        rel = f"{dirname}/{name}"
        row = known.get(rel)
        if row is None or row[0] != info.st_size or row[1] != info.st_mtime_ns:
            row = [info.st_size, info.st_mtime_ns, *self._identify(path)]
        seen[rel] = row
        if row[2] == "c":
            when = datetime.fromtimestamp(row[4], timezone.utc) if row[4] is not None else None
            return Listed(path, meta=EntryMeta(row[3], dirname, when, info.st_size, item.path))
        if row[2] == "u":
            return Listed(path, problem=row[3])
        return Listed(path)

    def scan(self) -> Iterator[EntryMeta]:
        """Every cassette's metadata: only files that prove to be cassettes (see ``census``)."""
        for listed in self.census():
            if listed.meta is not None:
                yield listed.meta

    # -- derived data ------------------------------------------------------------

    def _may_write_derived(self) -> bool:
        """False when derived data is not worth trying to write: the disk refused a write
        already, or this process cannot write the directory (a read-only checkout)."""
        if self._refused:
            return False
        meta = self.root / META_DIR
        return os.access(meta if os.path.isdir(meta) else self.root, os.W_OK)

    def _derived_failed(self, what: str, path: Path, exc: OSError) -> None:
        """One warning per kind of derived data; none after the disk refused writes."""
        # a disk that refuses writes, or a .llm-cache that is not a real directory: no more tries
        unusable_meta = isinstance(exc, UnsafePath) and exc.filename == str(self.root / META_DIR)
        if exc.errno in _REFUSING or unusable_meta:
            if self._refused:
                return
            self._refused = True
        if what in self._warned:
            log.debug("%s not written: %s: %s", what, path, exc)
            return
        self._warned.add(what)
        cause = exc.strerror if isinstance(exc, UnsafePath) else describe_os_error(exc)
        # what is in the way, as the system names it, unless that is a temporary file
        named = os.path.basename(str(exc.filename or ""))
        where = str(exc.filename) if named and not (named.startswith(".") and named.endswith(".tmp")) else str(path)
        consequence = ("hits of this session are not counted for eviction"
                       if what == "usage index" else "the next run is only slower")
        warnings.warn(
            LLMCacheWarning(f"{what} not written: {where}: {cause}. The cache works without it; {consequence}."),
            stacklevel=3,
        )

    def _write_derived(self, what: str, path: Path, body: Callable[[], str | bytes]) -> None:
        if not self._may_write_derived():
            log.debug("%s not written: %s cannot be written", what, self.root)
            return
        try:
            self._real_meta(path.parent)
            write_atomic(path, body())
        except OSError as exc:
            self._derived_failed(what, path, exc)
        except (TypeError, ValueError):  # what cannot be encoded is only not kept
            pass

    def _real_meta(self, directory: Path) -> Path:
        """``directory`` (``.llm-cache`` or under it) as a real directory, made when missing."""
        if str(directory) in self._real:
            return directory
        meta = self.root / META_DIR
        ensure_meta_dir(self.root)
        self._real.add(str(meta))
        if directory != meta:
            self._real_meta(directory.parent)
            real_dir(directory)
            self._real.add(str(directory))
        return directory

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
        return iter(self._digest_rows(model_version, tuple(ignore_fields), limit))

    def _digest_index(self, dirname: str, ignore: tuple[str, ...]) -> Path:
        name = dirname
        if ignore:
            rules = json.dumps(ignore, ensure_ascii=False).encode("utf-8", "surrogatepass")
            name += "~" + hashlib.sha256(rules).hexdigest()[:16]
        return self.root / META_DIR / "digests" / f"{name}.json"

    def _load_digests(self, index: Path, ignore: tuple[str, ...]) -> dict[str, _DigestRow]:
        """An index as written: ``shapes``, the lists of field names bodies have, and ``files``,
        cassette name -> ``[size, mtime_ns, inode]`` and, for a readable cassette, its location
        under the root, method, path, shape number and its pair hashes joined by spaces."""
        try:
            if not (self._is_real(index.parent.parent) and self._is_real(index.parent)):
                return {}
            data = json.loads(read_regular(index, MAX_INDEX_BYTES))
            if data["format"] != DIGESTS_FORMAT or data["ignore"] != list(ignore):
                return {}
            rows, shapes = data["files"], data["shapes"]
            if not (isinstance(rows, dict) and isinstance(shapes, list)):
                return {}
            names = []
            for shape in shapes:
                if type(shape) is not list:
                    return {}
                "".join(shape)  # TypeError unless all are strings, at C speed
                names.append(frozenset(shape))
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return {}  # missing, damaged or not a regular file: rebuilt from the cassettes
        known: dict[str, _DigestRow] = {}
        prefix = self._root_prefix
        for name, row in rows.items():
            try:
                size, mtime_ns, inode, *rest = row
                if not (type(size) is int and type(mtime_ns) is int and type(inode) is int):
                    continue
                if not rest:
                    known[name] = (size, mtime_ns, inode, None)
                    continue
                where, method, path, shape, pairs = rest
                if not (type(where) is type(method) is type(path) is type(pairs) is str
                        and type(shape) is int and shape >= 0):
                    continue
                digests = Digests(names[shape], frozenset(pairs.split()))
            except (ValueError, TypeError, IndexError):
                continue  # that row is read again from its cassette
            known[name] = (size, mtime_ns, inode, (prefix + where, method, path, digests))
        return known

    def _digest_rows(
        self, model_version: str, ignore: tuple[str, ...], limit: int | None
    ) -> list[tuple[str, str, str, Digests]]:
        directory = self.root / safe_dirname(model_version)
        try:
            if not self._is_real(directory):
                return []
            with os.scandir(directory) as it:
                items = [i for i in it if i.name.endswith(SUFFIX) and not i.name.startswith(".")]
        except OSError:
            return []
        index = self._digest_index(directory.name, ignore)
        with self._digests_guard:
            known = self._digests.get(index)
        if known is None:
            known = self._load_digests(index, ignore)
        kept: dict[str, _DigestRow] = {}
        out: list[tuple[str, str, str, Digests]] = []
        changed = False
        for item in items if limit is None else items[:limit]:
            try:
                stat_ = item.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(stat_.st_mode):
                continue  # a symlink, FIFO or directory: never read
            row = known.get(item.name)
            if (
                row is None
                or row[0] != stat_.st_size
                or row[1] != stat_.st_mtime_ns
                or row[2] != stat_.st_ino
            ):
                row = (stat_.st_size, stat_.st_mtime_ns, stat_.st_ino, self._digest_row(Path(item.path), ignore))
                changed = True
            kept[item.name] = row
            if row[3] is not None:
                out.append(row[3])
        with self._digests_guard:
            self._digests[index] = kept
            self._digests.move_to_end(index)
            while len(self._digests) > DIGESTS_KEPT:
                self._digests.popitem(last=False)
        if changed or len(kept) != len(known):
            self._write_derived("digest index", index, lambda: self._digests_body(ignore, kept))
        return out

    def _digest_row(self, path: Path, ignore: tuple[str, ...]) -> tuple[str, str, str, Digests] | None:
        try:
            entry = self._read(path, None, remember=False)
        except (CassetteError, OSError):
            return None
        digests = entry_digests(entry, ignore)
        # where a miss message says it is: the entry's own key and model version decide
        location = str(self.path_for(entry.key, entry.model_version))
        # bodies of one shape share one set of names, in memory as in the index
        names = self._shapes.setdefault(digests.names, digests.names)
        if len(self._shapes) > SHAPES_KEPT:
            self._shapes.clear()
        return location, entry.method, entry.path, Digests(names, digests.pairs)

    def _digests_body(self, ignore: tuple[str, ...], kept: dict[str, _DigestRow]) -> str:
        shapes: dict[frozenset[str], int] = {}
        files: dict[str, list[Any]] = {}
        cut = len(self._root_prefix)
        for name, (size, mtime_ns, inode, row) in kept.items():
            if row is None:
                files[name] = [size, mtime_ns, inode]
                continue
            location, method, path, digests = row
            shape = shapes.setdefault(digests.names, len(shapes))
            files[name] = [size, mtime_ns, inode, location[cut:], method, path, shape,
                           " ".join(sorted(digests.pairs))]
        body = {"format": DIGESTS_FORMAT, "ignore": list(ignore),
                "shapes": [sorted(names) for names in shapes], "files": files}
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))

    # -- changing ------------------------------------------------------------------

    def delete(self, meta: EntryMeta) -> None:
        """Remove one cassette, only once it proves to be the cassette of ``meta.key`` in a
        real model directory of this root (whatever an index said); anything else stays."""
        path = Path(meta.location)
        try:
            if path.parent.parent != self.root or not self._is_real(path.parent):
                return
        except UnsafePath:
            return
        if not self._proves(path, meta.key):
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
                        self._locks = LockTable(self._real_meta(locks))
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
        if not self._refused:
            try:
                return index.update(deltas, keep)
            except OSError as exc:  # filelock's Timeout is one too
                self._derived_failed("usage index", index.path, exc)
        current = index.load()
        for key, use in deltas.items():
            current[key] = current[key].merged(use) if key in current else use
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
        if not pending:
            return
        if not self._may_write_derived():
            log.debug("parsed copies not written: %s cannot be written", self.root)
            return
        for copy, (digest, entry) in pending.items():
            target = Path(copy)
            try:
                self._real_meta(target.parent)
                body = copy_body(digest, json.dumps(entry.to_doc(), ensure_ascii=False, separators=(",", ":")))
                # in place: half the cost of a temporary file and a rename, and safe, for a
                # copy proves itself whole when read; a symlink or hard link is replaced instead
                if not overwrite(target, body):
                    write_atomic(target, body)
            except OSError as exc:
                self._derived_failed("parsed copies", target, exc)
                if self._refused:
                    return
            except (TypeError, ValueError):
                continue  # derived data: a copy not written is only a slower next read


def copy_body(digest: str, doc: str) -> bytes:
    """A parsed copy's bytes: for the YAML of SHA-256 ``digest``, the entry's document ``doc``
    (JSON), and the check that proves the copy whole."""
    data = doc.encode("utf-8")
    return b"".join((_COPY_PREFIX, digest.encode(), _COPY_DOC, data,
                     b',"check":"', _sha256(data).encode(), b'"}'))


def _valid_scan_row(row: Any) -> bool:
    if type(row) is not list or len(row) < 3 or type(row[0]) is not int or type(row[1]) is not int:
        return False
    kind = row[2]
    if kind == "c":
        return (len(row) == 5 and type(row[3]) is str and len(row[3]) == 64
                and (row[4] is None or type(row[4]) in (int, float)))
    if kind == "u":
        return len(row) == 4 and type(row[3]) is str
    return kind == "f" and len(row) == 3


def _symlink_text(path: str) -> str:
    try:
        return f"it is a symlink (to {os.readlink(path)}), not followed"
    except OSError:
        return "it is a symlink, not followed"


def _swept(item: os.DirEntry[str], cutoff: float) -> bool:
    """Remove ``item`` if it is a temporary file older than ``cutoff``."""
    if not (item.name.startswith(".") and item.name.endswith(".tmp")):
        return False
    with suppress(OSError):
        if item.stat(follow_symlinks=False).st_mtime < cutoff:
            os.unlink(item.path)
            return True
    return False
