"""Where things are in a cassette dir, and which of its directories the file store may enter.

A cassette is ``<root>/<model-version>/<key prefix>.yaml``: ``safe_dirname`` makes the
directory name of a model version, which cannot leave the root. No symlink under the root
is followed, to read or to write: the store enters only real model directories one level
under the root, and ``.llm-cache/`` and everything in it must be real directories. ``Tree``
remembers the directories it found real, so each is checked once in a store's life.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..atomic import UnsafePath, real_dir
from ..usage import META_DIR, ensure_meta_dir

__all__ = ["KEY_PREFIX_LENGTH", "NOT_FOLLOWED", "SUFFIX", "Tree", "cassette_path", "safe_dirname"]

# 16 hex digits: 64 bits, no collision in any real cassette dir; the file holds the full key.
KEY_PREFIX_LENGTH = 16
SUFFIX = ".yaml"
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")
NOT_FOLLOWED = "the cache follows no symlink under the cassette dir"


@functools.lru_cache(maxsize=4096)
def safe_dirname(label: str) -> str:
    """A directory name for a model version label that cannot leave the cassette dir.

    Labels made only of safe characters are used as they are; any other gets its
    unsafe characters replaced and a hash of the original appended, so two
    labels never share a directory after replacement.
    """
    cleaned = _UNSAFE.sub("_", label)
    if cleaned == label and label and not label.startswith(".") and len(label) <= 100 and _portable(label):
        return label
    cleaned = cleaned.lstrip(".")[:80].rstrip(". ") or "_"
    if not _portable(cleaned):  # "nul", "aux.json": a device's name whatever follows
        cleaned = "_" + cleaned
    return f"{cleaned}-{hashlib.sha256(label.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


# Names Windows reserves for devices, with any extension ("nul", "COM1", "aux.json"): a
# directory so named cannot be made there. A name ending in a dot or a space loses it.
_DEVICES = frozenset({"con", "prn", "aux", "nul", *(f"{d}{n}" for d in ("com", "lpt") for n in range(1, 10))})


def _portable(name: str) -> bool:
    """Whether ``name`` is a directory name on Windows too, as written."""
    return name.split(".", 1)[0].lower() not in _DEVICES and not name.endswith((".", " "))


def cassette_path(root: Path, key: str, model_version: str) -> Path:
    """Where the cassette of ``key`` under ``model_version`` is kept in ``root``."""
    return root / safe_dirname(model_version) / (key[:KEY_PREFIX_LENGTH] + SUFFIX)


class Tree:
    """The directories of the cassette dir ``root`` that the store may enter: real ones,
    found so once and remembered (as strings) for the store's life."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # the root and a separator, as str(root / name) starts (nothing for ".")
        self.prefix = "" if str(root) == "." else os.path.join(str(root), "")
        self._real: set[str] = set()

    def known(self, directory: str) -> bool:
        """Whether ``directory`` was found real already."""
        return directory in self._real

    def is_real(self, directory: str | os.PathLike[str]) -> bool:
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

    def meta_dir(self, directory: Path) -> Path:
        """``directory`` (``.llm-cache`` or under it) as a real directory, made when missing."""
        if str(directory) in self._real:
            return directory
        meta = self.root / META_DIR
        ensure_meta_dir(self.root)
        self._real.add(str(meta))
        if directory != meta:
            self.meta_dir(directory.parent)
            real_dir(directory)
            self._real.add(str(directory))
        return directory

    def model_dirs(self) -> list[Path]:
        """The real model directories: never a symlink, never a dot-directory."""
        try:
            with os.scandir(self.root) as it:
                return sorted(
                    Path(d.path) for d in it if d.is_dir(follow_symlinks=False) and not d.name.startswith(".")
                )
        except (FileNotFoundError, NotADirectoryError):
            return []

    def files(self, model_version: str | None) -> Iterator[Path]:
        """Regular ``*.yaml`` files in real model directories (of one model version)."""
        if model_version:
            directory = self.root / safe_dirname(model_version)
            try:
                dirs = [directory] if self.is_real(directory) else []
            except UnsafePath:
                dirs = []
        else:
            dirs = self.model_dirs()
        for directory in dirs:
            try:
                with os.scandir(directory) as it:
                    for item in it:
                        if (item.name.endswith(SUFFIX) and not item.name.startswith(".")
                                and item.is_file(follow_symlinks=False)):
                            yield Path(item.path)
            except (FileNotFoundError, NotADirectoryError):
                continue
