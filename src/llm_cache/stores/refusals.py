"""Answers a recording did not keep, remembered so that replay's miss can say why.

A test whose answer was refused (an error status, empty, truncated) passes while it
records, then misses in replay, where "record it" would never help. The file store keeps
one small note per refused key under ``.llm-cache/refused/`` (derived data, git-ignored
with the rest of ``.llm-cache``); the miss reads it, and a later recording that keeps the
answer removes it. Notes are best effort: a directory that cannot be written keeps none.
"""

from __future__ import annotations

import json
from contextlib import suppress
from pathlib import Path
from typing import final

from ..atomic import UnsafePath, read_regular, real_dir, write_atomic
from ..usage import META_DIR, ensure_meta_dir

__all__ = ["Refusals"]

_DIR = "refused"
_MAX_NOTE = 4096


@final
class Refusals:
    """The refusal notes of one cassette directory, one file per key prefix."""

    def __init__(self, root: Path, prefix_length: int) -> None:
        self.root = root
        self._length = prefix_length

    def _folder(self, create: bool) -> Path:
        """``.llm-cache/refused`` as a real directory: never written or read through a symlink
        (``UnsafePath``), made only when ``create`` (else ``FileNotFoundError``)."""
        meta = ensure_meta_dir(self.root) if create else real_dir(self.root / META_DIR, create=False)
        return real_dir(meta / _DIR, create=create)

    def _name(self, key: str) -> str:
        return f"{key[:self._length]}.json"

    def note(self, key: str, why: str, keep: str) -> None:
        """Remember that ``key``'s answer was not kept, why, and the setting that keeps it."""
        with suppress(OSError, UnsafePath):  # a read-only checkout records nothing anyway
            write_atomic(self._folder(create=True) / self._name(key),
                         json.dumps({"key": key, "why": why, "keep": keep}))

    def read(self, key: str) -> tuple[str, str] | None:
        """(why, keep) of ``key``'s note, or None (no note, or one of another key)."""
        try:
            note = json.loads(read_regular(self._folder(create=False) / self._name(key), _MAX_NOTE))
        except (OSError, UnsafePath, ValueError):
            return None
        if not isinstance(note, dict) or note.get("key") != key:
            return None
        return str(note.get("why", "")), str(note.get("keep", ""))

    def forget(self, key: str) -> None:
        """The answer was kept since: its note, if any, is gone (an lstat when there are none)."""
        with suppress(OSError, UnsafePath):
            (self._folder(create=False) / self._name(key)).unlink()
