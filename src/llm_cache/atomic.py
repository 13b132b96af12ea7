"""Atomic file writes: a temporary file in the same directory, then ``os.replace``.

A reader sees the old file or the new one, never half of one; a writer killed midway
leaves at most a hidden ``.*.tmp`` file, which ``FileStore.sweep`` removes later.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
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
