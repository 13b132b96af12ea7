"""Atomic file writes: a temporary file in the same directory, then ``os.replace``.

A reader sees the old file or the new one, never half of one; a writer killed midway
leaves at most a hidden ``.*.tmp`` file, which ``FileStore.sweep`` removes later.

The file gets the mode any new file of the process gets (0666 less the umask, and the
directory's default ACL), as ``open()`` would give it: a team that shares a cassette
directory through its umask can read what each other records. (``tempfile.mkstemp``
would make every file 0600.)
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomic"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_ATTEMPTS = 100


def _create(directory: Path) -> tuple[int, str]:
    """A new hidden ``.*.tmp`` file in ``directory``, opened for writing, mode 0666 less the umask."""
    for _ in range(_ATTEMPTS):
        tmp = os.path.join(directory, f".{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, _FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory} after {_ATTEMPTS} attempts")


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = _create(path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
