"""A store that was away when the cache was made, reached once it comes back.

``LLMCache(url, fallback="passthrough")`` with its Redis not up yet (an application and
its Redis started together) takes a ``Later`` in place of the store: every call raises
``StoreUnavailable`` at once (the engine passes the request through, with a warning),
and the store is opened again at most every ``retry_every`` seconds, on the call that
finds the wait over, on a thread of its own. Once it opens, every call goes to it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import StoreUnavailable

if TYPE_CHECKING:
    from ..cassette import Entry
    from ..meta import EntryMeta
    from ..usage import Usage
    from .protocol import Lock, Store

__all__ = ["Later"]


class Later:
    """Opens the store with ``opener`` when a call finds the wait over, no more than every
    ``retry_every`` s, on a thread of its own: no caller (no event loop) waits for the
    connection; each gets ``StoreUnavailable`` at once until the store is reached."""

    remote = True  # a store across the network: in an event loop, the loop is given back between calls

    def __init__(self, opener: Callable[[], Store], first: StoreUnavailable, retry_every: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._opener = opener
        self._store: Store | None = None
        self._last = first
        self._retry_every = retry_every
        self._clock = clock
        self._next = clock() + retry_every
        self._lock = threading.Lock()
        self._trying = False

    def __repr__(self) -> str:
        return f"Later({self._store!r})" if self._store is not None else "Later(not reached yet)"

    @property
    def reached(self) -> bool:
        return self._store is not None

    @property
    def aio(self) -> Any:
        """The reached store's side for an event loop (Redis's ``redis.asyncio`` client), once reached."""
        return getattr(self._store, "aio", None)

    def _real(self) -> Store:
        store = self._store
        if store is not None:
            return store
        with self._lock:
            if self._store is None and not self._trying and self._clock() >= self._next:
                self._trying = True
                threading.Thread(target=self._try, name="llm-cache-store-later", daemon=True).start()
            last = self._last
        raise copy.copy(last)  # a fresh exception each time: no traceback grows on a shared one

    def _try(self) -> None:
        try:
            store = self._opener()
        except StoreUnavailable as exc:
            with self._lock:
                self._last, self._next, self._trying = exc, self._clock() + self._retry_every, False
            return
        except BaseException:  # noqa: BLE001 - a thread of ours: tried again later, never a crash
            with self._lock:
                self._next, self._trying = self._clock() + self._retry_every, False
            return
        with self._lock:
            self._store, self._trying = store, False

    def location(self, key: str, model_version: str) -> str:
        try:
            return self._real().location(key, model_version)
        except StoreUnavailable:
            return f"{model_version}/{key[:16]} (store not reached yet)"

    def get(self, key: str, model_version: str) -> Entry | None:
        return self._real().get(key, model_version)

    def put(self, entry: Entry, text: str | None = None) -> str:
        return self._real().put(entry, text)

    def quarantine(self, key: str, model_version: str) -> str | None:
        return self._real().quarantine(key, model_version)

    def entries(self, model_version: str | None = None, limit: int | None = None) -> Iterator[Entry]:
        return self._real().entries(model_version, limit)

    def size(self) -> tuple[int, int]:
        return self._real().size()

    def scan(self) -> Iterator[EntryMeta]:
        return self._real().scan()

    def delete(self, meta: EntryMeta) -> None:
        self._real().delete(meta)

    def lock(self, key: str) -> Lock:
        return self._real().lock(key)

    def usage(self) -> dict[str, Usage]:
        return self._real().usage()

    def touch(self, deltas: dict[str, Usage], keep: set[str] | None = None) -> dict[str, Usage]:
        return self._real().touch(deltas, keep)

    def clear(self) -> int:
        return self._real().clear()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def __getattr__(self, name: str) -> Any:  # what the store offers beyond the protocol, once reached
        store = self.__dict__.get("_store")
        if store is None or name.startswith("_"):
            raise AttributeError(name)
        return getattr(store, name)
