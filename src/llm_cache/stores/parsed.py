"""Parsed copies: each cassette the file store parsed, kept as JSON for the next read.

Reading a cassette's YAML costs about 60 us a KiB (``cassette._read_yaml``), its JSON copy
a third of that. So each cassette parsed once gets a derived copy in JSON under
``.llm-cache/parsed/``, which holds the SHA-256 of the YAML it was made from (none in CI by
default: ``llm_cache_parsed_copies``). In a replayed suite of 300 tests a copy saved about
0.4 ms a read, 0.24 s a run, against 0.04 to 0.5 ms to write it once (a new file: its cost
on this project's machine varies tenfold from one hour to the next; measured with the
suite of ``benchmarks/bench_suite.py``). A read
takes the YAML's bytes (one read: a few microseconds), hashes them, and uses the copy
only when its hash is theirs; otherwise it parses those same bytes. So a copy is used
only for the very text it was made from, whatever the file's size and mtime say (an
edit that keeps both, a restored mtime, a copy from another checkout), and a damaged
one (cut short, not JSON, nested too deep, wrong fields) is ignored and written again.
Copies are written at session end (``FileStore.close``), off the request path, in place:
each holds a hash of its own entry too, so one cut short or mixed from two writers is
known as such, and an atomic write's temporary file and rename are not needed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from ..atomic import overwrite, read_regular, write_atomic
from ..cassette import Entry, parse_entry
from ..usage import META_DIR
from .derived import Derived
from .paths import Tree

__all__ = ["COPY_FORMAT", "COPY_RATIO", "ParsedCopies", "copy_body", "sha256"]

log = logging.getLogger("llm_cache")

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


def sha256(data: bytes) -> str:
    """The SHA-256 of ``data``, in hex: what a copy names the YAML it was made from by."""
    return hashlib.sha256(data).hexdigest()


def copy_body(digest: str, doc: str) -> bytes:
    """A parsed copy's bytes: for the YAML of SHA-256 ``digest``, the entry's document ``doc``
    (JSON), and the check that proves the copy whole."""
    data = doc.encode("utf-8")
    return b"".join((_COPY_PREFIX, digest.encode(), _COPY_DOC, data,
                     b',"check":"', sha256(data).encode(), b'"}'))


class ParsedCopies:
    """The parsed copies of the cassettes under one root: where each is kept, whether one is
    current for a YAML's bytes, and their writing."""

    def __init__(self, tree: Tree, derived: Derived) -> None:
        self._tree = tree
        self._derived = derived
        self._prefix = os.path.join(str(tree.root), META_DIR, "parsed", "")

    def path(self, dirname: str, stem: str) -> str:
        """Where the parsed copy of ``<dirname>/<stem>.yaml`` is kept."""
        return f"{self._prefix}{dirname}{os.sep}{stem}.json"

    def of(self, cassette: Path) -> Path:
        """Where the parsed copy of the cassette at ``cassette`` is kept."""
        return Path(self.path(cassette.parent.name, cassette.stem))

    def read(self, copy: str | os.PathLike[str], digest: str, size: int) -> tuple[str, Any]:
        """What the parsed copy at ``copy`` is for the YAML of this ``digest`` and ``size``:
        (``missing`` | ``malformed`` | ``stale`` | ``current``, its document when current)."""
        copy = os.fspath(copy)
        folder = os.path.dirname(copy)
        tree = self._tree
        try:
            if not tree.known(folder):
                parsed = os.path.dirname(folder)
                if not (tree.is_real(os.path.dirname(parsed)) and tree.is_real(parsed) and tree.is_real(folder)):
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
        if check is None or sha256(data[at:end]).encode() != check.group(1):
            return "malformed", None  # cut short, or mixed from two writers
        try:
            return "current", json.loads(data[at:end])
        except Exception:  # noqa: BLE001 - not JSON, nested too deep, wrong shape: ignored, rebuilt
            return "malformed", None

    def entry(self, copy: str, digest: str, size: int, where: str, key: str | None) -> Entry | None:
        """The entry of the cassette at ``where`` from its copy, when that is current and valid."""
        status, doc = self.read(copy, digest, size)
        if status != "current":
            return None
        try:
            return parse_entry(doc, where, expected_key=key)
        except Exception:  # noqa: BLE001 - a copy that does not validate is ignored and rebuilt
            return None

    def check(self, path: Path, data: bytes, entry: Entry) -> tuple[str | None, str | None]:
        """For ``llm-cache verify``: (a problem, a note) about the parsed copy of the cassette
        at ``path``, whose bytes are ``data`` and entry ``entry``. A copy made from these
        bytes that holds another entry would be served: a problem. A damaged one is ignored
        and written again: a note. A stale or missing one is as it should be."""
        copy = self.of(path)
        status, doc = self.read(copy, sha256(data), len(data))
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

    def write(self, pending: dict[str, tuple[str, Entry]]) -> None:
        """Write the copies ``pending`` names: copy path -> (SHA-256 of the YAML, its entry).
        A failure is a warning that names the caller of the caller (``FileStore.close``'s)."""
        if not self._derived.may_write():
            log.debug("parsed copies not written: %s cannot be written", self._tree.root)
            return
        for copy, (digest, entry) in pending.items():
            target = Path(copy)
            try:
                self._tree.meta_dir(target.parent)
                body = copy_body(digest, json.dumps(entry.to_doc(), ensure_ascii=False, separators=(",", ":")))
                # in place: half the cost of a temporary file and a rename, and safe, for a
                # copy proves itself whole when read; a symlink or hard link is replaced instead
                if not overwrite(target, body):
                    write_atomic(target, body)
            except OSError as exc:
                self._derived.failed("parsed copies", target, exc)
                if self._derived.refused:
                    return
            except (TypeError, ValueError):
                continue  # derived data: a copy not written is only a slower next read
