"""The census of a cassette dir: which files are cassettes, which are ours but unusable,
and which are foreign (``Listed``).

A file is a cassette when its first lines prove it (the head ``dump_entry`` writes: format,
key, time of recording), or a full parse does; one named as ours, or beginning as ours,
that does not parse is ours but unusable; anything else is foreign, and nothing touches
it. Only regular ``*.yaml`` files in real model directories one level under the root are
opened; a symlink, FIFO or directory there is refused unread, as is a symlinked model
directory. What the last census found of each file is kept in ``.llm-cache/scan.json``
(the scan index) and reused while its size and mtime hold, so a census of 100,000
cassettes costs a directory listing, not 100,000 opens.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import cassette
from ..atomic import UnsafePath, file_kind, is_temporary, read_head, read_regular
from ..cassette import load_entry
from ..errors import CassetteError
from ..usage import MAX_INDEX_BYTES, META_DIR
from .derived import Derived
from .paths import KEY_PREFIX_LENGTH, NOT_FOLLOWED, SUFFIX, Tree
from .protocol import EntryMeta

__all__ = ["CASSETTE_NAME", "SCAN_FORMAT", "SWEEP_AFTER", "Listed", "identify", "proves", "swept", "take_census"]

# A temporary file older than this was left by a writer that died.
SWEEP_AFTER = 600.0
# The head of a cassette as dump_entry writes it: read without a YAML parse.
_HEAD = re.compile(rb"\Allm_cache: [12]\nkey: ([0-9a-f]{64})\nrecorded_at: '([^'\n]+)'\n")
HEAD_BYTES = 160
# A file whose first two lines are a cassette's is one, or a damaged one.
_OURS = re.compile(rb"\Allm_cache: \d+\r?\nkey: ")
# The name put gives a cassette: a file named so is one, or a damaged one.
CASSETTE_NAME = re.compile(rf"[0-9a-f]{{{KEY_PREFIX_LENGTH}}}\.yaml\Z")
# The format of the scan index (scan); another is rebuilt.
SCAN_FORMAT = 2


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


def _stamp_of(recorded: datetime | None) -> float | None:
    if recorded is None:
        return None
    if recorded.tzinfo is None:
        recorded = recorded.replace(tzinfo=timezone.utc)
    return recorded.timestamp()


def identify(path: Path) -> list[Any]:
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
    if not (CASSETTE_NAME.match(path.name) or _OURS.match(head)):
        return ["f"]
    try:
        entry = load_entry(read_regular(path, cassette.MAX_CASSETTE_BYTES), str(path))
    except CassetteError as exc:
        return ["u", exc.reason]
    except OSError as exc:
        return ["u", f"it {exc.strerror}" if isinstance(exc, UnsafePath) else f"cannot be read: {exc.strerror}"]
    return ["c", entry.key, _stamp_of(entry.recorded_at)]


def proves(path: Path, key: str) -> bool:
    """Whether the file at ``path`` is a cassette of ``key``: its first lines, or a full parse."""
    try:
        head, _ = read_head(path, HEAD_BYTES)
    except OSError:
        return False
    match = _HEAD.match(head)
    if match:
        return match.group(1).decode() == key
    row = identify(path)
    return bool(row[0] == "c" and row[1] == key)


def take_census(tree: Tree, derived: Derived) -> Iterator[Listed]:
    """Every place a cassette could be under ``tree.root``, and what is there (see
    ``Listed``), in order: the ``*.yaml`` files of the real model directories, and the
    symlinked model directories (refused: never followed). The scan index is read first
    and written (``derived``) when the census found anything other than it said.
    Temporary files left by killed writers are swept on the way."""
    root = tree.root
    index_path = root / META_DIR / "scan.json"
    known = _load_scan(tree, index_path)
    seen: dict[str, list[Any]] = {}
    cutoff = time.time() - SWEEP_AFTER
    try:
        with os.scandir(root) as it:
            tops = sorted((d for d in it if not d.name.startswith(".")), key=lambda d: d.name)
    except (FileNotFoundError, NotADirectoryError):
        tops = []
    for top in tops:
        try:
            if top.is_symlink():
                if top.is_dir():  # a symlinked model directory: reported, never followed
                    yield Listed(Path(top.path), problem=f"{_symlink_text(top.path)}: {NOT_FOLLOWED}; "
                                 "replace the link with the directory it points to", refused=True)
                continue
            if not top.is_dir(follow_symlinks=False):
                continue
            items = sorted(os.scandir(top.path), key=lambda i: i.name)
        except OSError:
            continue
        for item in items:
            listed = _listed(top.name, item, known, seen, cutoff)
            if listed is not None:
                yield listed
    if seen != known:
        derived.write("scan index", index_path, lambda: json.dumps(
            {"format": SCAN_FORMAT, "files": seen}, separators=(",", ":")))


def _load_scan(tree: Tree, index_path: Path) -> dict[str, list[Any]]:
    try:
        if not tree.is_real(index_path.parent):
            return {}
        data = json.loads(read_regular(index_path, MAX_INDEX_BYTES))
        if data["format"] != SCAN_FORMAT or not isinstance(data["files"], dict):
            return {}
        return {name: row for name, row in data["files"].items() if _valid_scan_row(row)}
    except Exception:  # noqa: BLE001 - missing, damaged or not ours: every file is read again
        return {}


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


def _listed(dirname: str, item: os.DirEntry[str], known: dict[str, list[Any]],
            seen: dict[str, list[Any]], cutoff: float) -> Listed | None:
    name = item.name
    if name.startswith("."):
        swept(item, cutoff)
        return None
    if not name.endswith(SUFFIX):
        return None
    path = Path(item.path)
    try:
        info = item.stat(follow_symlinks=False)
    except OSError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return Listed(path, problem=f"{_symlink_text(item.path)}: {NOT_FOLLOWED}; replace the link with the file",
                      refused=True)
    if not stat.S_ISREG(info.st_mode):
        return Listed(path, problem=f"it is {file_kind(info.st_mode)}, not a regular file; not read", refused=True)
    rel = f"{dirname}/{name}"
    row = known.get(rel)
    if row is None or row[0] != info.st_size or row[1] != info.st_mtime_ns:
        row = [info.st_size, info.st_mtime_ns, *identify(path)]
    seen[rel] = row
    if row[2] == "c":
        when = datetime.fromtimestamp(row[4], timezone.utc) if row[4] is not None else None
        return Listed(path, meta=EntryMeta(row[3], dirname, when, info.st_size, item.path))
    if row[2] == "u":
        return Listed(path, problem=row[3])
    return Listed(path)


def _symlink_text(path: str) -> str:
    try:
        return f"it is a symlink (to {os.readlink(path)}), not followed"
    except OSError:
        return "it is a symlink, not followed"


def swept(item: os.DirEntry[str], cutoff: float) -> bool:
    """Remove ``item`` if it is a temporary file of ours older than ``cutoff``."""
    if not is_temporary(item.name):
        return False
    with suppress(OSError):
        if item.stat(follow_symlinks=False).st_mtime < cutoff:
            os.unlink(item.path)
            return True
    return False
