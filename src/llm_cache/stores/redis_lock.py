"""The per-key recording lock of the Redis store (single flight across machines).

One key, ``B lock:<key>`` (see ``redis_keys``), set with NX and an expiry by
redis-py's ``Lock``: on a cluster it is in the prefix's hash slot, on the
master that holds the entry it guards. A holder that died blocks nobody for
longer than the expiry.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from .redis import RedisStore

__all__ = ["LOCK_EXPIRY", "LOCK_POLL", "RedisLock"]

log = logging.getLogger("llm_cache")

# A lock older than this is taken to belong to a dead holder.
LOCK_EXPIRY = 60.0
# How often a waiting lock asks again.
LOCK_POLL = 0.02


@final
class RedisLock:
    """A per-key lock on Redis with the FileLock calling convention.

    ``acquire(timeout)`` waits up to ``timeout`` seconds (-1: forever) and
    raises ``TimeoutError`` when the lock stays taken. The lock expires after
    the store's ``lock_expiry``, so a holder that died blocks nobody for longer.
    """

    def __init__(self, store: RedisStore, name: str) -> None:
        self._store = store
        self.name = name
        # one lock object per caller: the token need not be kept per thread
        self._lock = store.client.lock(
            name, timeout=store.lock_expiry, sleep=store.lock_poll, blocking=True, thread_local=False
        )

    def __repr__(self) -> str:
        return f"RedisLock({self.name!r})"

    def acquire(self, timeout: float = -1) -> bool:
        blocking_timeout = None if timeout is None or timeout < 0 else timeout
        with self._store._reach():
            acquired = self._lock.acquire(blocking=True, blocking_timeout=blocking_timeout)
        if not acquired:
            raise TimeoutError(f"lock {self.name} not acquired within {timeout} s")
        return True

    def release(self) -> None:
        """Release; a lock that expired meanwhile (or a server gone) is not an error: it expires."""
        redis = self._store._redis
        try:
            self._lock.release()
        except redis.exceptions.LockError:
            log.debug("lock %s had expired before its release", self.name)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                redis.exceptions.ClusterError, redis.exceptions.RedisClusterException) as exc:
            log.warning("could not release lock %s (%s); it expires by itself", self.name, exc)

    @property
    def is_locked(self) -> bool:
        with self._store._reach():
            return bool(self._lock.locked())

    def __enter__(self) -> RedisLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
