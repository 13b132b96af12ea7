"""The small surface every store offers; serialisation stays out of it (see cassette.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from ..cassette import Entry
from ..meta import EntryMeta
from ..usage import Usage

__all__ = ["AsyncLock", "AsyncSide", "EntryMeta", "Lock", "Store"]


class Lock(Protocol):
    """A lock for one key, shared by every process using the store."""

    def acquire(self, timeout: float = -1) -> object: ...

    def release(self) -> None: ...


class AsyncLock(Protocol):
    """A key's lock taken by an event loop's task (see ``AsyncSide``)."""

    async def acquire(self) -> bool:
        """Ask once: True when the lock is now held, False when another holds it."""

    async def arelease(self) -> None: ...

    def release(self) -> None:
        """The same, blocking: for the paths that end outside a coroutine."""


class AsyncSide(Protocol):
    """What a store offers an event loop's tasks, as awaits (``store.aio``)."""

    async def get(self, key: str, model_version: str) -> Entry | None: ...

    async def put(self, entry: Entry, text: str | None = None) -> str: ...

    def lock(self, key: str) -> AsyncLock: ...

    async def quarantine(self, key: str, model_version: str) -> str | None: ...


class Store(Protocol):
    """Entries by key, grouped by model version.

    A store whose calls cross the network says so with a class attribute ``remote = True``:
    in an event loop the engine then gives the loop back between its round trips. Such a
    store may also have an attribute ``aio``, an ``AsyncSide`` (or None): then the tasks of
    an event loop look up, lock and write through it, and each round trip is an await.
    """

    def location(self, key: str, model_version: str) -> str:
        """Where the entry for ``key`` is (or would be) kept, for messages."""

    def get(self, key: str, model_version: str) -> Entry | None:
        """The entry, None when there is none; ``CassetteError`` when it is unusable."""

    def put(self, entry: Entry, text: str | None = None) -> str:
        """Store ``entry`` atomically, replacing any entry with its key; returns its location.

        ``text`` is the entry already serialised by ``dump_entry``, when the caller has it."""

    def quarantine(self, key: str, model_version: str) -> str | None:
        """Move an unusable entry aside; returns where it went."""

    def entries(self, model_version: str | None = None, limit: int | None = None) -> Iterator[Entry]:
        """Stored entries (of one model version), skipping unusable ones."""

    def size(self) -> tuple[int, int]:
        """(number of entries, bytes)."""

    def scan(self) -> Iterator[EntryMeta]:
        """Every entry's metadata: cheap enough to run over 100,000 entries."""

    def delete(self, meta: EntryMeta) -> None:
        """Remove one entry; a missing one is not an error."""

    def lock(self, key: str) -> Lock:
        """A lock (not yet acquired) that serialises recording ``key`` across processes."""

    def usage(self) -> dict[str, Usage]:
        """Last use and hit count per key, as kept between sessions."""

    def touch(self, deltas: dict[str, Usage], keep: set[str] | None = None) -> dict[str, Usage]:
        """Merge a batch of use (last used, hits) into the kept usage; drop keys not in ``keep``.

        Called once per session, not per hit: a hit must not cost a write."""

    def clear(self) -> int:
        """Remove every entry of this store (and nothing else); returns how many."""

    def close(self) -> None:
        """Release connections."""
