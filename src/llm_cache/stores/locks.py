"""Per-key recording locks of the file store, portable: one holder per key across
processes and threads, a dead holder never blocks, waits are bounded.

``fcntl`` (POSIX record locks on a byte of one lock file per store) where the system has
it, ``msvcrt`` byte-range locks on the same file on Windows, filelock's lock file per key
elsewhere; chosen once per process by ``lock_kind``. Nothing is imported at module level
that a platform may lack.
"""

from __future__ import annotations

import functools
import importlib
import os
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

__all__ = ["KeyLock", "LockTable", "lock_kind"]

# hex digits of the key in the name of its lock file (filelock backend)
LOCK_NAME_LENGTH = 16


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
        lock = FileLock(str(self.directory / f"{key[:LOCK_NAME_LENGTH]}.lock"), thread_local=False)
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


class LockTable:
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
    """The recording lock of one key (see ``LockTable``). Its holder is this object, which
    one thread uses: never a thread id, which Python gives again to a later thread."""

    POLL = 0.005

    def __init__(self, table: LockTable, key: str) -> None:
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
