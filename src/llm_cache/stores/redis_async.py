"""The Redis store in an event loop: its round trips as awaits, not as waits on the loop.

The engine's async path (``Scope.abegin``, ``CacheSession.aclaim``, ``Flight.arecord``)
reads, locks and writes through ``store.aio`` when a store has one: the same keys,
commands and errors as the store's own methods (``RedisStore._loaded``,
``_queue_put``, ``_reach``), sent by a ``redis.asyncio`` client. One server only: a cluster store has no ``aio``
(see ``RedisStore.__init__``). While Redis answers,
the loop runs its other tasks; a slow or paused server delays the task that asked,
never the loop.

A redis.asyncio client's connections belong to the event loop that opened them, so
there is one client per running loop, made on its first use there. Beside it is an
async generator started in that loop: ``asyncio.run`` (and every runner that calls
``loop.shutdown_asyncgens()``, pytest-asyncio's included) closes it as the loop ends,
and with it the client's connections, so a process that runs many loops (a test suite)
keeps no socket of a loop that is gone. ``aclose()`` closes the running loop's client;
``close()`` every client it can still reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any, final

from ..cassette import Entry
from .redis_scripts import QUARANTINE

if TYPE_CHECKING:
    from .redis import RedisStore

__all__ = ["AsyncRedisLock", "RedisAsync"]

log = logging.getLogger("llm_cache")


@final
class RedisAsync:
    """``get``, ``put``, ``lock`` and ``quarantine`` of a ``RedisStore`` for the tasks of an event loop."""

    def __init__(self, store: RedisStore, factory: Callable[[], Any]) -> None:
        self._store = store
        self._factory = factory
        # loop -> (its client, the async generator that closes the client as the loop ends)
        self._clients: dict[asyncio.AbstractEventLoop, tuple[Any, AsyncGenerator[None, None]]] = {}
        self._lock = threading.Lock()

    async def client(self) -> Any:
        """The running loop's client (made on first use)."""
        loop = asyncio.get_running_loop()
        held = self._clients.get(loop)
        if held is None:
            client = self._factory()
            closer = _closer(client)
            await closer.__anext__()  # started in this loop: its runner closes it at the end
            with self._lock:
                for gone in [other for other in self._clients if other.is_closed()]:
                    del self._clients[gone]
                held = self._clients[loop] = (client, closer)
        return held[0]

    async def get(self, key: str, model_version: str) -> Entry | None:
        store = self._store
        with store._reach():
            data = await (await self.client()).get(store._name(key))
        return store._loaded(data, key, model_version)

    async def put(self, entry: Entry, text: str | None = None) -> str:
        store = self._store
        with store._reach():
            pipe = (await self.client()).pipeline(transaction=True)
            store._queue_put(pipe, entry, text)
            await pipe.execute()
        return store.location(entry.key, entry.model_version)

    def lock(self, key: str) -> AsyncRedisLock:
        return AsyncRedisLock(self, self._store.keys.lock(key))

    async def quarantine(self, key: str, model_version: str) -> str | None:
        """``RedisStore.quarantine``, awaited: the same script over the same keys."""
        store = self._store
        keys, moved_to = store._quarantine_keys(key)
        with store._reach():
            moved = await (await self.client()).eval(QUARANTINE, len(keys), *keys, key)
        return moved_to if moved else None

    async def aclose(self) -> None:
        """Close the running loop's client, if it has one."""
        with self._lock:
            held = self._clients.pop(asyncio.get_running_loop(), None)
        if held is not None:
            await held[1].aclose()

    def close(self) -> None:
        """Close every loop's client, as far as each loop allows."""
        with self._lock:
            clients, self._clients = list(self._clients.items()), {}
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, (_, closer) in clients:
            with contextlib.suppress(Exception):
                if loop.is_closed():
                    continue  # closed by its runner as it ended (or its sockets gone with it)
                if loop is running:
                    loop.create_task(closer.aclose())
                elif loop.is_running():  # in another thread
                    asyncio.run_coroutine_threadsafe(closer.aclose(), loop)
                else:
                    loop.run_until_complete(closer.aclose())


async def _closer(client: Any) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


@final
class AsyncRedisLock:
    """The key's recording lock (``RedisLock``'s key, token and expiry) taken by a task.

    ``acquire()`` asks once and says whether it got the lock (the engine asks again,
    the loop running meanwhile); ``arelease()`` gives it back with an await, ``release()``
    with a blocking round trip, for the paths that end outside a coroutine."""

    def __init__(self, side: RedisAsync, name: str) -> None:
        self._side = side
        self._store = side._store
        self.name = name
        self._lock: Any = None
        # the token this lock sets, known before the SET is sent: a task cancelled while the
        # SET or the release is on its way can still give back what may be its lock
        self._token: bytes | None = None

    def __repr__(self) -> str:
        return f"AsyncRedisLock({self.name!r})"

    async def acquire(self) -> bool:
        store = self._store
        if self._lock is None:
            self._lock = (await self._side.client()).lock(
                self.name, timeout=store.lock_expiry, sleep=store.lock_poll, blocking=False, thread_local=False
            )
        self._token = uuid.uuid1().hex.encode()
        try:
            with store._reach():
                got = bool(await self._lock.acquire(blocking=False, token=self._token))
        except asyncio.CancelledError:
            self.release()  # the SET may have run: give back what may be ours (nothing if not)
            raise
        except BaseException:
            self._token = None
            raise
        if not got:
            self._token = None
        return got

    async def arelease(self) -> None:
        redis = self._store._redis
        if self._lock is None or self._token is None:
            return
        try:
            await self._lock.release()
            self._token = None
        except redis.exceptions.LockError:
            log.debug("lock %s had expired before its release", self.name)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                redis.exceptions.ClusterError, redis.exceptions.RedisClusterException) as exc:
            log.warning("could not release lock %s (%s); it expires by itself", self.name, exc)

    def release(self) -> None:
        """Release through the store's blocking client, with this lock's token."""
        from .redis_lock import RedisLock

        token, self._token = self._token, None
        if token is None:
            return
        lock = RedisLock(self._store, self.name)
        lock._lock.local.token = token
        lock.release()
