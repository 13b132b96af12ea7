"""Safe file access under the cassette directory: atomic writes, bounded reads, real directories.

A write goes to a temporary file in the same directory, then ``os.replace``: a reader sees
the old file or the new one, never half of one, and a writer killed or stopped midway (a
full disk) leaves at most a hidden ``.*.tmp`` file, removed at once or by
``FileStore.sweep`` later. ``os.replace`` replaces a symlink at the target, never what it
points to.

The file gets the mode any new file of the process gets (0666 less the umask, and the
directory's default ACL), as ``open()`` would give it: a team that shares a cassette
directory through its umask can read what each other records. (``tempfile.mkstemp``
would make every file 0600.)

A read opens the file itself, never a symlink (``O_NOFOLLOW``), never blocks on a FIFO
(``O_NONBLOCK``), refuses anything but a regular file and checks the size before reading,
so a link to ``/dev/zero`` or a named pipe costs one ``open`` and one ``fstat``.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = [
    "UnsafePath", "file_kind", "holds_subdirectory", "is_temporary", "overwrite", "read_head", "read_regular", "real_dir",
    "write_atomic",
]


def holds_subdirectory(path: str | os.PathLike[str]) -> bool:
    """Whether the directory ``path`` holds a directory whose name does not start with ``.``
    (a file store's model versions; ``.llm-cache`` is not one); False when it cannot be read."""
    try:
        with os.scandir(path) as entries:
            return any(e.is_dir(follow_symlinks=False) and not e.name.startswith(".") for e in entries)
    except OSError:
        return False

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_ATTEMPTS = 100


_TEMP_HEX = 12  # the hex digits of a temporary file's name: ``.<12 hex>.tmp``
_HEX = frozenset("0123456789abcdef")


def is_temporary(name: str) -> bool:
    """Whether ``name`` is one of the temporary files this module creates (``.<12 hex>.tmp``),
    not a user's ``.notes.tmp``: only ours are ever swept."""
    return (
        len(name) == _TEMP_HEX + 5 and name[0] == "." and name.endswith(".tmp")
        and _HEX.issuperset(name[1:1 + _TEMP_HEX])
    )


def _create(directory: Path) -> tuple[int, str]:
    """A new hidden ``.*.tmp`` file in ``directory``, opened for writing, mode 0666 less the umask."""
    for _ in range(_ATTEMPTS):
        tmp = os.path.join(directory, f".{os.urandom(_TEMP_HEX // 2).hex()}.tmp")
        try:
            return os.open(tmp, _FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory} after {_ATTEMPTS} attempts")


_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class UnsafePath(OSError):
    """A path the cache will not read or write through: a symlink, a FIFO or device, a
    directory where a file belongs, or a file larger than allowed. ``strerror`` says which."""


def file_kind(mode: int) -> str:
    """What a stat mode is, in words: ``a directory``, ``a symlink``, ``a named pipe (FIFO)``."""
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "something else"


def _symlink(path: str | os.PathLike[str]) -> UnsafePath:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return UnsafePath(errno.ELOOP, f"is a symlink (to {target}), not followed", str(path))


def _open_regular(path: str | os.PathLike[str]) -> tuple[int, os.stat_result]:
    """A descriptor of the regular file at ``path`` and its stat; the refusals of ``read_regular``."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.EMLINK and os.path.islink(path)):
            raise _symlink(path) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(errno.EINVAL, f"is {file_kind(info.st_mode)}, not a regular file", str(path))
        if not hasattr(os, "O_NOFOLLOW") and os.path.islink(path):  # no O_NOFOLLOW (Windows)
            raise _symlink(path)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.

    ``FileNotFoundError`` when it is missing; ``UnsafePath`` when it is a symlink, not a
    regular file, or larger than ``limit``; any other ``OSError`` as the system gives it."""
    fd, info = _open_regular(path)
    try:
        if info.st_size > limit:
            raise UnsafePath(errno.EFBIG, f"is {info.st_size} bytes, more than the {limit} allowed", str(path))
        # the size fstat gave and one byte more, so that a file that grew since is caught;
        # then on while there is more, never past one byte over the limit
        chunks = [os.read(fd, info.st_size + 1)]
        read = len(chunks[0])
        while chunks[-1] and read <= limit and read > info.st_size:
            chunks.append(os.read(fd, min(limit + 1 - read, 1 << 20)))
            read += len(chunks[-1])
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if len(data) > limit:
            raise UnsafePath(errno.EFBIG, f"grew past the {limit} bytes allowed while read", str(path))
        return data
    finally:
        os.close(fd)


def read_head(path: str | os.PathLike[str], count: int) -> tuple[bytes, int]:
    """The first ``count`` bytes of the regular file at ``path``, and its size; refused as
    ``read_regular`` refuses, whatever the file's size."""
    fd, info = _open_regular(path)
    try:
        return os.read(fd, count), info.st_size
    finally:
        os.close(fd)


def real_dir(path: Path, create: bool = True) -> Path:
    """``path`` as a real directory (made when missing and ``create``), never a symlink.

    ``UnsafePath`` when it is a symlink or not a directory; ``FileNotFoundError`` when it is
    missing and not ``create``; the system's ``OSError`` when it cannot be made."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if not create:
            raise
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise _symlink(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePath(errno.ENOTDIR, f"is {file_kind(info.st_mode)}, not a directory", str(path))
    return path


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``; on any failure
    (a full disk included) the temporary file is removed and the old file stays."""
    fd, tmp = _create(path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8") if isinstance(text, str) else text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


_OVERWRITE_FLAGS = (
    os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)


def overwrite(path: Path, data: bytes) -> bool:
    """Write ``data`` over the file at ``path`` in place (made when missing): no temporary
    file, no rename, about half the cost of ``write_atomic``. NOT atomic: a reader may see
    part of it, and a writer stopped midway leaves part of it, so it is only for files that
    prove their own integrity when read (the parsed copies hold hashes of what they hold).

    Returns False, having written nothing, when ``path`` is not a regular file of one link
    (a symlink, a FIFO, a hard link): the caller replaces it with ``write_atomic`` instead,
    which never writes through it. On a failure midway the file is removed."""
    try:
        fd = os.open(path, _OVERWRITE_FLAGS, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENXIO, errno.EISDIR, errno.ETXTBSY):
            return False
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return False
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.ftruncate(fd, len(data))
    except BaseException:
        os.close(fd)
        fd = -1
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    finally:
        if fd >= 0:
            os.close(fd)
    return True


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (not following a last symlink); an
    ``OSError`` other than not-found (a name too long, a loop of links) is raised."""
    while True:
        try:
            os.lstat(path)
            return path
        except (FileNotFoundError, NotADirectoryError):
            if path.parent == path:
                return path
            path = path.parent
