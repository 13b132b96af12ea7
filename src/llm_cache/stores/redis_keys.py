"""Where a Redis store keeps what: the names of its keys, on one server or on a cluster.

Every name begins with the store's *base*, and nothing outside it is ever
read, written or deleted:

- ``B e:<key>``: the entry's YAML text;
- ``B meta``: a hash, key -> ``"model_version<TAB>recorded_at<TAB>size"``
  (``recorded_at`` in POSIX seconds with exactly six decimals);
- ``B lru``, ``B lfu``, ``B fifo``: sorted sets of keys by last use, hits and
  recording time (the eviction index);
- ``B lock:<key>``: the per-key recording lock;
- ``B corrupt:<key>``: where ``quarantine`` moves an unreadable entry.

On one server (``redis://``) the base is the prefix itself, ``llm-cache:``:
the layout every store written so far has, unchanged.

On a cluster (``redis+cluster://``) the base is the prefix as a hash tag,
``{llm-cache:}``: Redis hashes only what is between the braces, so every key
of one prefix (entries, index, locks, quarantined entries) is in one hash
slot, on one master. That is what keeps each write as atomic as on one
server: an entry and its index rows go in one MULTI/EXEC, a scan's cleanup
and a quarantine in one script, all over keys of one slot. The price: one
prefix lives on one master (and its replicas); several prefixes spread over
the masters. A cluster prefix may not contain a brace, which would end or
nest the tag.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

__all__ = ["KeyLayout", "from_posix", "glob_escape", "index_row", "parse_row", "posix"]

_NAMES = ("meta", "lru", "lfu", "fifo")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def glob_escape(text: str) -> str:
    """``text`` matched literally by a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class KeyLayout:
    """The names of one store's keys: ``tagged`` (a cluster) puts them all in the prefix's hash slot."""

    def __init__(self, prefix: str, *, tagged: bool = False) -> None:
        if not prefix:
            raise ValueError("a Redis key prefix may not be empty")
        if tagged and ("{" in prefix or "}" in prefix):
            raise ValueError("a Redis Cluster key prefix may not contain '{' or '}': it is the keys' hash tag")
        self.prefix = prefix
        self.tagged = tagged
        self.base = "{" + prefix + "}" if tagged else prefix
        self.entry_prefix = self.base + "e:"
        self.meta, self.lru, self.lfu, self.fifo = (self.base + name for name in _NAMES)
        self._ours = re.compile(
            re.escape(self.base.encode("utf-8")) + rb"(?:(e|corrupt):[0-9a-f]{64}|meta|lru|lfu|fifo)\Z"
        )

    def __repr__(self) -> str:
        return f"KeyLayout({self.prefix!r}, tagged={self.tagged})"

    @property
    def indexes(self) -> list[str]:
        """The index keys, in the order the scripts take them: meta, lru, lfu, fifo."""
        return [self.meta, self.lru, self.lfu, self.fifo]

    def entry(self, key: str) -> str:
        return self.entry_prefix + key

    def corrupt(self, key: str) -> str:
        return self.base + "corrupt:" + key

    def lock(self, key: str) -> str:
        return self.base + "lock:" + key

    @property
    def pattern(self) -> str:
        """A SCAN pattern for every name under the base (and longer prefixes' too: see ``kind``)."""
        return glob_escape(self.base) + "*"

    def kind(self, name: bytes) -> str | None:
        """``"e"`` for an entry, ``"corrupt"`` for a quarantined one, ``"index"`` for the index;
        None for any other name (a held lock, a longer prefix's key, someone else's)."""
        match = self._ours.match(name)
        if match is None:
            return None
        found: bytes | None = match.group(1)
        return found.decode("ascii") if found else "index"


def posix(moment: datetime) -> str:
    """A time as POSIX seconds with six decimals, exactly (no float rounding)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - _EPOCH
    return f"{delta.days * 86400 + delta.seconds}.{delta.microseconds:06d}"


def from_posix(text: str) -> datetime:
    seconds, _, micros = text.partition(".")
    fraction = int((micros or "0").ljust(6, "0")[:6])
    return _EPOCH + timedelta(seconds=int(seconds), microseconds=fraction)


def index_row(model_version: str, recorded: str, size: int) -> str:
    """The ``meta`` row of an entry (``recorded`` as ``posix`` writes it)."""
    return f"{model_version}\t{recorded}\t{size}"


def parse_row(field: bytes | str, value: bytes | str) -> tuple[str, str, datetime | None, int]:
    """(key, model version, recorded at, size) of a ``meta`` row; a damaged row gives
    (key, "", None, 0): listed as unreadable, like a damaged file."""
    key = _text(field)
    try:
        model_version, recorded, size = _text(value).rsplit("\t", 2)
        return key, model_version, from_posix(recorded), int(size)
    except ValueError:
        return key, "", None, 0


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
