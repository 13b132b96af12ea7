"""The file store: ``<root>/<model-version>/<key prefix>.yaml``.

Reading a cassette with PyYAML's C safe loader costs about 0.2 ms, a third of an SDK
call. So each cassette parsed once gets a derived copy in JSON (about 7 us to read)
under ``.llm-cache/parsed/``, valid while the cassette's size and mtime are those it
was made from. The YAML stays the source of truth: a stale or damaged copy is ignored
and rewritten; copies are written at session end (``close``), off the request path.
What a replay miss compares itself with is kept the same way, as digests of the stored
requests in ``.llm-cache/digests/`` (``request_digests``).

Where a cassette is written: ``FileStore.put``. A write goes to a temporary
file in the same directory, then ``os.replace`` puts it in place, so a crash
never leaves a truncated cassette and a reader sees the old file or the new.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..cassette import Entry, dump_entry, load_entry, parse_entry
from ..diagnose import Digests, entry_digests
from ..errors import CassetteError
from ..usage import META_DIR, Usage, UsageIndex, ensure_meta_dir
from .protocol import EntryMeta

__all__ = ["KEY_PREFIX_LENGTH", "FileStore", "KeyLock", "lock_kind", "safe_dirname"]

# 16 hex digits: 64 bits, no collision in any real cassette dir; the file holds the full key.
KEY_PREFIX_LENGTH = 16
# A temporary file older than this was left by a writer that died.
SWEEP_AFTER = 600.0
SUFFIX = ".yaml"
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")
# The head of a cassette as dump_entry writes it: read without a YAML parse.
_HEAD = re.compile(rb"\Allm_cache: [12]\nkey: ([0-9a-f]{64})\nrecorded_at: '([^'\n]+)'\n")
HEAD_BYTES = 160
# The format of the digest indexes (request_digests); another is rebuilt.
DIGESTS_FORMAT = 2
# How many digest indexes (model version and ignored fields) a store keeps in memory.
DIGESTS_KEPT = 4
# How many shapes of body (sets of field names) a store shares between digests.
SHAPES_KEPT = 10_000
# A cassette's digests in memory: size, mtime_ns, inode, then (location, method, path,
# digests), or None for an unreadable cassette.
_DigestRow = tuple[int, int, int, "tuple[str, str, str, Digests] | None"]


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


class FileStore:
    """Cassettes as YAML files under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        # parsed copies to write at close: copy path -> ((size, mtime_ns), entry)
        self._pending: dict[Path, tuple[tuple[int, int], Entry]] = {}
        self._locks: _LockTable | None = None
        self._locks_guard = threading.Lock()
        self._checked: set[str] = set()
        # the digest indexes read or made lately: index path -> rows (see request_digests)
        self._digests: OrderedDict[Path, dict[str, _DigestRow]] = OrderedDict()
        self._digests_guard = threading.Lock()
        self._root_prefix = os.path.join(str(self.root), "")  # the root, and a separator
        self._shapes: dict[frozenset[str], frozenset[str]] = {}

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    def path_for(self, key: str, model_version: str) -> Path:
        return self.root / safe_dirname(model_version) / (key[:KEY_PREFIX_LENGTH] + SUFFIX)

    def location(self, key: str, model_version: str) -> str:
        return str(self.path_for(key, model_version))

    def get(self, key: str, model_version: str) -> Entry | None:
        path = self.path_for(key, model_version)
        try:
            return self._read(path, key)
        except FileNotFoundError:
            return None

    def _parsed_copy(self, path: Path) -> Path:
        return self.root / META_DIR / "parsed" / path.parent.name / (path.stem + ".json")

    def _read(self, path: Path, key: str | None, remember: bool = True) -> Entry:
        """A cassette's entry, from its parsed copy when that is current, else from the YAML
        (whose parsed copy is then written at ``close``, unless not ``remember``)."""
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise CassetteError(path=str(path), reason=f"cannot be read: {exc.strerror}") from None
        stamp = (stat.st_size, stat.st_mtime_ns)
        copy = self._parsed_copy(path)
        try:
            with open(copy, "rb") as handle:
                data = json.loads(handle.read())
            if (data["size"], data["mtime_ns"]) == stamp:
                return parse_entry(data["doc"], str(path), expected_key=key)
        except (OSError, ValueError, KeyError, TypeError, CassetteError):
            pass  # missing, stale or damaged: the YAML decides
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise CassetteError(path=str(path), reason=f"cannot be read: {exc.strerror}") from None
        entry = load_entry(text, str(path), expected_key=key)
        if remember:
            self._pending[copy] = (stamp, entry)
        return entry

    def _checked_dir(self, model_version: str) -> Path:
        directory = self.root / safe_dirname(model_version)
        if model_version in self._checked and directory.is_dir() and not directory.is_symlink():
            return directory
        if not directory.is_symlink():
            directory.mkdir(parents=True, exist_ok=True)
        root = self.root.resolve()
        # A directory that is a symlink to elsewhere is never written through.
        if directory.is_symlink() or directory.resolve().parent != root:
            raise CassetteError(
                path=str(directory), reason="is a symlink or lies outside the cassette dir; not writing there"
            )
        self._checked.add(model_version)
        return directory

    def put(self, entry: Entry, text: str | None = None) -> str:
        directory = self._checked_dir(entry.model_version)
        path = directory / (entry.key[:KEY_PREFIX_LENGTH] + SUFFIX)
        write_atomic(path, dump_entry(entry) if text is None else text)
        with suppress(OSError):
            stat = os.stat(path)
            self._pending[self._parsed_copy(path)] = ((stat.st_size, stat.st_mtime_ns), entry)
        return str(path)

    def quarantine(self, key: str, model_version: str) -> str | None:
        path = self.path_for(key, model_version)
        target = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return None
        return str(target)

    def _files(self, model_version: str | None) -> Iterator[Path]:
        dirs = [self.root / safe_dirname(model_version)] if model_version else self._dirs()
        for directory in dirs:
            try:
                with os.scandir(directory) as it:
                    for item in it:
                        if item.name.endswith(SUFFIX) and not item.name.startswith("."):
                            yield Path(item.path)
            except (FileNotFoundError, NotADirectoryError):
                continue

    def _dirs(self) -> list[Path]:
        try:
            with os.scandir(self.root) as it:
                return sorted(
                    Path(d.path) for d in it if d.is_dir(follow_symlinks=False) and not d.name.startswith(".")
                )
        except FileNotFoundError:
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
        entries = total = 0
        for directory in self._dirs():
            with os.scandir(directory) as it:
                for item in it:
                    if item.name.endswith(SUFFIX) and not item.name.startswith(".") and item.is_file():
                        entries += 1
                        total += item.stat().st_size
        return entries, total

    def sweep(self, older_than: float = SWEEP_AFTER) -> int:
        """Remove temporary files left by writers that were killed mid-write; returns how many."""
        removed = 0
        cutoff = time.time() - older_than
        for directory in self._dirs():
            with suppress(OSError), os.scandir(directory) as it:
                removed += sum(_swept(item, cutoff) for item in it)
        return removed

    def _head(self, path: Path) -> tuple[str, datetime | None]:
        """Key and recording time from a cassette's first lines; a full parse only for hand-edited files."""
        try:
            with open(path, "rb") as handle:
                head = handle.read(HEAD_BYTES)
        except OSError:
            return path.stem, None
        match = _HEAD.match(head)
        if match:
            try:
                recorded = datetime.fromisoformat(match.group(2).decode().replace("Z", "+00:00"))
                return match.group(1).decode(), recorded
            except ValueError:
                pass
        try:
            entry = load_entry(path.read_bytes(), str(path))
        except (CassetteError, OSError):
            return path.stem, None
        return entry.key, entry.recorded_at

    def scan(self) -> Iterator[EntryMeta]:
        """Every cassette's metadata. What the last scan read is kept in ``.llm-cache/scan.json``
        and reused while a file's size and mtime are unchanged, so a scan of 100,000
        cassettes costs a directory listing, not 100,000 opens. Temporary files left
        by killed writers are swept on the way."""
        index_path = self.root / META_DIR / "scan.json"
        try:
            known = json.loads(index_path.read_text(encoding="utf-8"))["files"]
            if not isinstance(known, dict):
                known = {}
        except (OSError, ValueError, KeyError, TypeError):
            known = {}
        seen: dict[str, list[Any]] = {}
        cutoff = time.time() - SWEEP_AFTER
        for directory in self._dirs():
            try:
                items = list(os.scandir(directory))
            except OSError:
                continue
            for item in items:
                name = item.name
                try:
                    if name.startswith("."):
                        _swept(item, cutoff)
                        continue
                    if not name.endswith(SUFFIX):
                        continue
                    stat = item.stat()
                except OSError:
                    continue
                rel = f"{directory.name}/{name}"
                row = known.get(rel)
                if isinstance(row, list) and len(row) == 4 and row[:2] == [stat.st_size, stat.st_mtime_ns]:
                    key, stamp = row[2], row[3]
                else:
                    key, recorded = self._head(Path(item.path))
                    if recorded is not None and recorded.tzinfo is None:
                        recorded = recorded.replace(tzinfo=timezone.utc)
                    stamp = recorded.timestamp() if recorded is not None else None
                seen[rel] = [stat.st_size, stat.st_mtime_ns, key, stamp]
                when = datetime.fromtimestamp(stamp, timezone.utc) if stamp is not None else None
                yield EntryMeta(key, directory.name, when, stat.st_size, item.path)
        if seen != known:
            with suppress(OSError):
                ensure_meta_dir(self.root)
                write_atomic(index_path, json.dumps({"format": 1, "files": seen}, separators=(",", ":")))

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
            data = json.loads(index.read_bytes())
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
        except (OSError, ValueError, KeyError, TypeError):
            return {}  # missing or damaged: rebuilt from the cassettes
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
                stat = item.stat()
            except OSError:
                continue
            row = known.get(item.name)
            if (
                row is None
                or row[0] != stat.st_size
                or row[1] != stat.st_mtime_ns
                or row[2] != stat.st_ino
            ):
                row = (stat.st_size, stat.st_mtime_ns, stat.st_ino, self._digest_row(Path(item.path), ignore))
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
            with suppress(OSError, ValueError, TypeError):
                self._write_digests(index, ignore, kept)
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

    def _write_digests(self, index: Path, ignore: tuple[str, ...], kept: dict[str, _DigestRow]) -> None:
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
        ensure_meta_dir(self.root)
        index.parent.mkdir(exist_ok=True)
        write_atomic(index, json.dumps(body, ensure_ascii=False, separators=(",", ":")))

    def delete(self, meta: EntryMeta) -> None:
        try:
            os.unlink(meta.location)
        except FileNotFoundError:
            pass

    def lock(self, key: str) -> KeyLock:
        """``key``'s recording lock, under ``.llm-cache/locks/``: a byte of ``keys.lock``, or a
        lock file of its own where the system has no byte locks (see ``lock_kind``). A killed
        holder never keeps it."""
        if self._locks is None:
            with self._locks_guard:
                if self._locks is None:
                    locks = ensure_meta_dir(self.root) / "locks"
                    locks.mkdir(exist_ok=True)
                    self._locks = _LockTable(locks)
        return KeyLock(self._locks, key)

    def usage(self) -> dict[str, Usage]:
        return UsageIndex(self.root).load()

    def touch(self, deltas: dict[str, Usage], keep: set[str] | None = None) -> dict[str, Usage]:
        return UsageIndex(self.root).update(deltas, keep)

    def clear(self) -> int:
        count = 0
        for meta in list(self.scan()):
            self.delete(meta)
            count += 1
        return count

    def close(self) -> None:
        """Write the parsed copies of the cassettes read or written since the last close."""
        pending, self._pending = self._pending, {}
        made: set[Path] = set()
        for copy, (stamp, entry) in pending.items():
            try:
                if copy.parent not in made:
                    ensure_meta_dir(self.root)
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    made.add(copy.parent)
                body = json.dumps({"size": stamp[0], "mtime_ns": stamp[1], "doc": entry.to_doc()},
                                  ensure_ascii=False, separators=(",", ":"))
                write_atomic(copy, body)
            except (OSError, TypeError, ValueError):
                continue  # derived data: a copy not written is only a slower next read


def _swept(item: os.DirEntry[str], cutoff: float) -> bool:
    """Remove ``item`` if it is a temporary file older than ``cutoff``."""
    if not (item.name.startswith(".") and item.name.endswith(".tmp")):
        return False
    with suppress(OSError):
        if item.stat(follow_symlinks=False).st_mtime < cutoff:
            os.unlink(item.path)
            return True
    return False


def _posix_module() -> Any | None:
    """``fcntl`` where the system has it (imported here: it does not exist on Windows)."""
    try:
        return importlib.import_module("fcntl")
    except ImportError:
        return None


def _windows_module() -> Any | None:
    try:
        return importlib.import_module("msvcrt")
    except ImportError:
        return None


@functools.lru_cache(maxsize=1)
def lock_kind() -> str:
    """How this process locks a key, chosen once: ``fcntl`` (POSIX record locks on a byte of
    one file), ``msvcrt`` (Windows byte-range locks on the same file) or ``filelock``
    (filelock's ``FileLock``, one file per key, where neither exists)."""
    if _posix_module() is not None:
        return "fcntl"
    if _windows_module() is not None:
        return "msvcrt"
    return "filelock"


class _PosixBytes:
    """One byte per key of ``keys.lock``, locked with ``lockf``: two system calls per lock."""

    def __init__(self, directory: Path) -> None:
        self.fcntl: Any = importlib.import_module("fcntl")
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        # opened once and never closed while locks may be held: closing any descriptor
        # of the file would drop every record lock this process holds on it
        self.fd = os.open(directory / "keys.lock", flags, 0o644)

    def try_lock(self, key: str) -> bool:
        fcntl = self.fcntl
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(key[:12], 16))
        except OSError:  # held by another process
            return False
        return True

    def unlock(self, key: str) -> None:
        with suppress(OSError):
            self.fcntl.lockf(self.fd, self.fcntl.LOCK_UN, 1, int(key[:12], 16))


class _WindowsBytes:
    """One byte per key of ``keys.lock``, locked with ``msvcrt.locking``; Windows releases
    the locks of a process that ends, however it ends."""

    def __init__(self, directory: Path) -> None:
        self.msvcrt: Any = importlib.import_module("msvcrt")
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOINHERIT", 0)
        self.fd = os.open(directory / "keys.lock", flags, 0o644)
        # locking() acts at the descriptor's position, which every thread shares
        self.seek = threading.Lock()

    @staticmethod
    def _offset(key: str) -> int:
        # below 2**31, for any C runtime; two keys sharing a byte only wait for each other
        return int(key[:7], 16)

    def try_lock(self, key: str) -> bool:
        with self.seek:
            os.lseek(self.fd, self._offset(key), os.SEEK_SET)
            try:
                self.msvcrt.locking(self.fd, self.msvcrt.LK_NBLCK, 1)
            except OSError:  # held by another process
                return False
        return True

    def unlock(self, key: str) -> None:
        with self.seek, suppress(OSError):
            os.lseek(self.fd, self._offset(key), os.SEEK_SET)
            self.msvcrt.locking(self.fd, self.msvcrt.LK_UNLCK, 1)


class _LockFiles:
    """filelock's ``FileLock`` on ``<key prefix>.lock``: a lock file per key. Where the system
    has no native lock it is filelock's soft lock, whose marker names the holding process, so
    a holder that died is found dead and its lock taken over."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # the lock a thread of this process holds, by key; the key's slot lock guards its entry
        self.held: dict[str, Any] = {}

    def try_lock(self, key: str) -> bool:
        from filelock import FileLock, Timeout

        # not thread-local: a lock taken in one thread may be released in another
        lock = FileLock(str(self.directory / f"{key[:KEY_PREFIX_LENGTH]}.lock"), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        self.held[key] = lock
        return True

    def unlock(self, key: str) -> None:
        lock = self.held.pop(key, None)
        if lock is not None:
            with suppress(OSError):
                lock.release()


_BACKENDS: dict[str, Callable[[Path], _PosixBytes | _WindowsBytes | _LockFiles]] = {
    "fcntl": _PosixBytes,
    "msvcrt": _WindowsBytes,
    "filelock": _LockFiles,
}


class _LockTable:
    """A store's recording locks in one process.

    Each key takes its own thread lock for the other threads of this process (record locks
    belong to the process, not the thread), then its own lock for other processes: a byte
    of one lock file (``lockf`` or ``msvcrt.locking``), or a lock file of its own. Keys never
    wait for one another, and a dead process's locks are released by the system (byte locks)
    or taken over (filelock). Opening or creating a lock file per key, or filelock's portable
    lock, measured about a millisecond per recorded call here; a byte lock costs two system
    calls, which is why it is used wherever the system has one.
    """

    def __init__(self, directory: Path) -> None:
        self.kind = lock_kind()
        self.backend = _BACKENDS[self.kind](directory)
        self.guard = threading.Lock()
        # key -> [its thread lock, how many KeyLocks are using the slot]
        self.slots: dict[str, list[Any]] = {}


class KeyLock:
    """The recording lock of one key (see ``_LockTable``). Its holder is this object, which
    one thread uses: never a thread id, which Python gives again to a later thread."""

    POLL = 0.005

    def __init__(self, table: _LockTable, key: str) -> None:
        self.table = table
        self.key = key
        self.held = False

    def acquire(self, timeout: float = -1) -> bool:
        table = self.table
        deadline = None if timeout < 0 else time.monotonic() + timeout
        with table.guard:
            slot = table.slots.setdefault(self.key, [threading.Lock(), 0])
            slot[1] += 1
        if not slot[0].acquire(timeout=timeout):
            self._leave()
            raise TimeoutError(f"{self.key[:12]} still locked after {timeout} s")
        try:
            while not table.backend.try_lock(self.key):
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"{self.key[:12]} still locked after {timeout} s")
                time.sleep(self.POLL)
        except BaseException:
            slot[0].release()
            self._leave()
            raise
        self.held = True
        return True

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                self.table.backend.unlock(self.key)
            finally:
                self.table.slots[self.key][0].release()
                self._leave()

    def _leave(self) -> None:
        with self.table.guard:
            slot = self.table.slots[self.key]
            slot[1] -= 1
            if slot[1] == 0:
                del self.table.slots[self.key]
