"""The digest indexes: a model version's stored requests as digests, for naming the one
closest to a replay miss (``llm_cache.diagnose``).

The digests of each request's body under some ignored fields (``diagnose.entry_digests``)
are kept per model version and ignored fields in ``.llm-cache/digests/``, and in memory,
and reused while a cassette's size, mtime and inode are those they were made from; a
cassette changed since is read again. A stale digest can only name a worse closest
request, never serve one. A missing or damaged index is rebuilt; one that cannot be
written is only slower next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import read_regular
from ..cassette import Entry
from ..diagnose import Digests, entry_digests, pair_set
from ..errors import CassetteError
from ..usage import MAX_INDEX_BYTES, META_DIR
from .derived import Derived
from .paths import SUFFIX, Tree, cassette_path, safe_dirname

__all__ = ["DIGESTS_FORMAT", "DIGESTS_KEPT", "SHAPES_KEPT", "RequestDigests"]

# The format of the digest indexes (request_digests); another is rebuilt.
DIGESTS_FORMAT = 2
# How many digest indexes (model version and ignored fields) a store keeps in memory.
DIGESTS_KEPT = 4
# How many shapes of body (sets of field names) a store shares between digests.
SHAPES_KEPT = 10_000
# A cassette's digests in memory: size, mtime_ns, inode, then (location, method, path,
# digests), or None for an unreadable cassette.
_DigestRow = tuple[int, int, int, "tuple[str, str, str, Digests] | None"]


class RequestDigests:
    """The digest indexes of the cassettes under one root. Its length is how many indexes
    it keeps in memory."""

    def __init__(self, tree: Tree, derived: Derived) -> None:
        self._tree = tree
        self._derived = derived
        # the digest indexes read or made lately: index path -> rows
        self._indexes: OrderedDict[Path, dict[str, _DigestRow]] = OrderedDict()
        self._guard = threading.Lock()
        self._shapes: dict[frozenset[str], frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self._indexes)

    def rows(
        self, model_version: str, ignore: tuple[str, ...], limit: int | None, read: Callable[[Path], Entry]
    ) -> list[tuple[str, str, str, Digests]]:
        """(location, method, path, digests) of the first ``limit`` cassettes of a model
        version, in directory order. ``read`` gives a cassette's entry (``CassetteError`` or
        ``OSError`` when it cannot be read); unreadable cassettes are skipped."""
        directory = self._tree.root / safe_dirname(model_version)
        try:
            if not self._tree.is_real(directory):
                return []
            with os.scandir(directory) as it:
                items = [i for i in it if i.name.endswith(SUFFIX) and not i.name.startswith(".")]
        except OSError:
            return []
        index = self._index(directory.name, ignore)
        with self._guard:
            known = self._indexes.get(index)
        # an index read from disk keeps each request's pair hashes as the string it holds
        # (the first miss searches it); a later miss makes the sets once and keeps them
        as_read = known is None
        if known is None:
            known = self._load(index, ignore)
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
                row = (stat_.st_size, stat_.st_mtime_ns, stat_.st_ino, self._row(Path(item.path), ignore, read))
                changed = True
            elif not as_read and row[3] is not None and isinstance(row[3][3].pairs, str):
                where, method, path, digests = row[3]
                row = (row[0], row[1], row[2], (where, method, path, Digests(digests.names, pair_set(digests.pairs))))
            kept[item.name] = row
            if row[3] is not None:
                out.append(row[3])
        with self._guard:
            self._indexes[index] = kept
            self._indexes.move_to_end(index)
            while len(self._indexes) > DIGESTS_KEPT:
                self._indexes.popitem(last=False)
        if changed or len(kept) != len(known):
            self._derived.write("digest index", index, lambda: self._body(ignore, kept))
        return out

    def _index(self, dirname: str, ignore: tuple[str, ...]) -> Path:
        name = dirname
        if ignore:
            rules = json.dumps(ignore, ensure_ascii=False).encode("utf-8", "surrogatepass")
            name += "~" + hashlib.sha256(rules).hexdigest()[:16]
        return self._tree.root / META_DIR / "digests" / f"{name}.json"

    def _load(self, index: Path, ignore: tuple[str, ...]) -> dict[str, _DigestRow]:
        """An index as written: ``shapes``, the lists of field names bodies have, and ``files``,
        cassette name -> ``[size, mtime_ns, inode]`` and, for a readable cassette, its location
        under the root, method, path, shape number and its pair hashes joined by spaces."""
        try:
            if not (self._tree.is_real(index.parent.parent) and self._tree.is_real(index.parent)):
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
        prefix = self._tree.prefix
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
                hashes = (len(pairs) + 1) // 12
                if pairs and (len(pairs) != 12 * hashes - 1 or pairs[11::12] != " " * (hashes - 1)
                              or pairs.count(" ") != hashes - 1):
                    continue  # not 11-character hashes joined by spaces: read again from its cassette
                digests = Digests(names[shape], pairs)
            except (ValueError, TypeError, IndexError):
                continue  # that row is read again from its cassette
            known[name] = (size, mtime_ns, inode, (prefix + where, method, path, digests))
        return known

    def _row(
        self, path: Path, ignore: tuple[str, ...], read: Callable[[Path], Entry]
    ) -> tuple[str, str, str, Digests] | None:
        try:
            entry = read(path)
        except (CassetteError, OSError):
            return None
        digests = entry_digests(entry, ignore)
        # where a miss message says it is: the entry's own key and model version decide
        location = str(cassette_path(self._tree.root, entry.key, entry.model_version))
        # bodies of one shape share one set of names, in memory as in the index
        names = self._shapes.setdefault(digests.names, digests.names)
        if len(self._shapes) > SHAPES_KEPT:
            self._shapes.clear()
        return location, entry.method, entry.path, Digests(names, digests.pairs)

    def _body(self, ignore: tuple[str, ...], kept: dict[str, _DigestRow]) -> str:
        shapes: dict[frozenset[str], int] = {}
        files: dict[str, list[Any]] = {}
        cut = len(self._tree.prefix)
        for name, (size, mtime_ns, inode, row) in kept.items():
            if row is None:
                files[name] = [size, mtime_ns, inode]
                continue
            location, method, path, digests = row
            shape = shapes.setdefault(digests.names, len(shapes))
            files[name] = [size, mtime_ns, inode, location[cut:], method, path, shape,
                           digests.pairs if isinstance(digests.pairs, str) else " ".join(sorted(digests.pairs))]
        body = {"format": DIGESTS_FORMAT, "ignore": list(ignore),
                "shapes": [sorted(names) for names in shapes], "files": files}
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))
