"""The Redis store: entries shared by every machine that reaches one Redis server or cluster.

``redis://host:port/db`` (also ``rediss://`` and ``unix://``) for one server,
``redis+cluster://host:port[,host:port...]/`` (also ``rediss+cluster://``)
for a Redis Cluster; query parameters ``prefix`` (default ``llm-cache:``),
``timeout`` (seconds, default 2: the connect and the read timeout of every
command), ``grace`` and ``asyncio`` (see ``redis_async``), any other going to
redis-py (see ``redis_url``).

Every key is under the prefix, in the layout ``redis_keys`` describes:
unchanged on one server, and on a cluster with the prefix as the keys' hash
tag, so that one store's keys are in one hash slot and every write that
touches several of them (an entry and its index rows, a quarantine, a scan's
cleanup) is one MULTI/EXEC or one script, atomic as on one server. Nothing
outside the prefix is ever read, written or deleted (no ``FLUSHDB``, no
unprefixed ``SCAN``).

Expiry: with a ttl, an entry's ``e:`` key expires in Redis itself at
``recorded_at + ttl + grace``; an entry past ttl+grace is gone, dropped by
Redis, and its index rows are dropped by the next ``scan``. The
``recorded_at`` rule still applies on read in the session: an entry past its
ttl but within the grace is found, stale, and refreshed (or served stale).

Every Redis error of reach (refused, reset, timed out, auth, server refusing
commands, a cluster down or a master gone) becomes ``StoreUnavailable``
naming the URL (password masked), within the socket timeout (about twice it
on a cluster, which asks again once after refreshing its view): never a hang,
never another entry's answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from ..cassette import Entry, dump_entry, load_entry
from ..errors import CassetteError, ConfigError
from ..redact import mask_url
from ..usage import Usage
from ..values import parse_duration
from .protocol import EntryMeta
from .redis_async import RedisAsync
from .redis_client import (
    INSTALL_HINT,
    connect,
    connect_async,
    describe,
    import_redis,
    is_cluster,
    reach,
)
from .redis_keys import KeyLayout, index_row, parse_row, posix
from .redis_lock import LOCK_EXPIRY, LOCK_POLL, RedisLock
from .redis_scripts import DROP_DANGLING, QUARANTINE
from .redis_url import DEFAULT_PREFIX, DEFAULT_TIMEOUT, parse_store_url

__all__ = [
    "DEFAULT_PREFIX", "DEFAULT_TIMEOUT", "INSTALL_HINT", "LOCK_EXPIRY", "KeyLayout", "RedisLock", "RedisStore", "mask_url",
]

BATCH = 1000
MGET_BATCH = 100
CLUSTER_HINT = "the Redis Cluster store needs redis-py 6.1 or later (transactions on a cluster): pip install -U redis"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class RedisStore:
    """Entries in one Redis database or cluster, every key under ``prefix``.

    ``client`` is a ``redis.Redis`` or a ``redis.cluster.RedisCluster`` (bytes
    responses preferred); on a cluster the keys take the hash-tagged layout
    (``cluster``: None finds out from the client). ``url`` only names the
    store in messages and locations (default: from the client's connection
    settings). ``ttl`` and ``grace`` set each entry's expiry in Redis (none
    without a ttl); ``timeout`` is what error messages report (the client's
    own socket timeouts bound every call).
    """

    # its calls are network round trips: in an event loop, the engine gives the loop back
    # between them (engine.scope.abegin, engine.flight.arecord)
    remote = True

    def __init__(
        self,
        client: Any,
        *,
        url: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        ttl: timedelta | None = None,
        grace: timedelta | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        lock_expiry: float = LOCK_EXPIRY,
        lock_poll: float = LOCK_POLL,
        cluster: bool | None = None,
        base: str | None = None,
        async_client: Callable[[], Any] | None = None,
    ) -> None:
        self._redis = import_redis()
        if not prefix:
            raise ConfigError(setting="redis store prefix", value=prefix, expected="a non-empty key prefix")
        self.cluster = is_cluster(client) if cluster is None else cluster
        if self.cluster and not hasattr(self._redis.cluster, "TransactionStrategy"):
            raise ImportError(CLUSTER_HINT)
        try:
            self.keys = KeyLayout(prefix, tagged=self.cluster)
        except ValueError as exc:
            raise ConfigError(setting="redis store prefix", value=prefix, expected=str(exc)) from None
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.grace = grace
        self.timeout = timeout
        self.lock_expiry = lock_expiry
        self.lock_poll = lock_poll
        self._owns_client = False
        self._base = describe(client, url, base)
        self.url = mask_url(url) if url is not None else self._base
        self._drop_script: Any = None
        self._quarantine_script: Any = None
        # the engine's async path goes through this when there is one (see redis_async). Not
        # on a cluster: redis.asyncio's cluster transactions (redis-py 8.1) run each queued
        # command in a thread of its own with a loop of its own, joined by the caller: they
        # would hold the loop, and fail when the client is not yet set up
        self.aio = None if async_client is None or self.cluster else RedisAsync(self, async_client)

    @classmethod
    def from_url(
        cls, url: str, ttl: timedelta | None = None, grace: timedelta | None = None,
        setting: str = "--llm-cache-store", **kwargs: Any,
    ) -> RedisStore:
        """Connect to the server or cluster ``url`` names and PING it; ``StoreUnavailable`` when
        it does not answer.

        ``prefix``, ``timeout`` (seconds) and ``grace`` are read from the query
        (``grace`` only when not given); the rest of the URL goes to redis-py.
        ``kwargs`` go to the constructor (``lock_expiry``). A URL that does not
        parse is a ConfigError naming ``setting``.
        """
        import_redis()

        parsed = parse_store_url(url, setting)
        if grace is None and parsed.grace is not None:
            grace = parse_duration(parsed.grace, f"{setting} {parsed.masked} grace")
        with reach(parsed.masked, parsed.timeout):  # a cluster client asks for the layout at once
            client = connect(parsed, setting)
        try:
            if parsed.asyncio:
                kwargs.setdefault("async_client", lambda: connect_async(parsed))
            store = cls(client, url=url, prefix=parsed.prefix, ttl=ttl, grace=grace, timeout=parsed.timeout,
                        cluster=parsed.cluster, base=parsed.base, **kwargs)
        except BaseException:
            with contextlib.suppress(Exception):
                client.close()
            raise
        store._owns_client = True
        try:
            with store._reach():
                client.ping()
        except BaseException:
            store.close()
            raise
        return store

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, prefix={self.prefix!r})"

    # -- helpers -------------------------------------------------------------

    def _reach(self) -> contextlib.AbstractContextManager[None]:
        """Turn the errors of an unreachable or refusing server into StoreUnavailable."""
        return reach(self.url, self.timeout)

    def _name(self, key: str) -> str:
        return self.keys.entry(key)

    def _expire_at_ms(self, recorded_at: datetime) -> int | None:
        if self.ttl is None:
            return None
        if recorded_at.tzinfo is None:
            recorded_at = recorded_at.replace(tzinfo=timezone.utc)
        deadline = recorded_at + self.ttl + (self.grace or timedelta(0))
        delta = deadline - _EPOCH
        return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000

    def _missing(self, keys: list[str]) -> list[str]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(self._name(key))
        return [key for key, there in zip(keys, pipe.execute()) if not there]

    def _drop_dangling(self, keys: list[str]) -> set[str]:
        """The keys among ``keys`` whose entry is gone (expired in Redis); their index rows dropped."""
        gone: set[str] = set()
        for start in range(0, len(keys), BATCH):
            missing = self._missing(keys[start : start + BATCH])
            if not missing:
                continue
            if self._drop_script is None:
                self._drop_script = self.client.register_script(DROP_DANGLING)
            self._drop_script(keys=[*self.keys.indexes, *map(self._name, missing)], args=missing)
            # keys recorded again meanwhile kept their rows; those still missing are gone
            gone.update(self._missing(missing))
        return gone

    def _rows(self) -> list[tuple[str, str, datetime | None, int]]:
        """(key, model version, recorded at, size) of every indexed entry still in Redis."""
        with self._reach():
            rows = [parse_row(field, value) for field, value in self.client.hgetall(self.keys.meta).items()]
            gone = self._drop_dangling([row[0] for row in rows])
        return [row for row in rows if row[0] not in gone]

    # -- the Store protocol ----------------------------------------------------

    def location(self, key: str, model_version: str) -> str:
        return f"{self._base}/{self._name(key)}"

    def get(self, key: str, model_version: str) -> Entry | None:
        with self._reach():
            data = self.client.get(self._name(key))
        return self._loaded(data, key, model_version)

    def _loaded(self, data: bytes | None, key: str, model_version: str) -> Entry | None:
        if data is None:
            return None
        return load_entry(data, self.location(key, model_version), expected_key=key)

    def raw(self, key: str) -> bytes | None:
        """The entry's text as stored, unparsed (None when there is none): for ``llm-cache verify``,
        which looks for secrets in what is kept, not only in what parses."""
        with self._reach():
            data = self.client.get(self._name(key))
        if data is None:
            return None
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)

    def put(self, entry: Entry, text: str | None = None) -> str:
        """The entry and its index rows in one MULTI/EXEC (keys of one slot on a cluster)."""
        with self._reach():
            pipe = self.client.pipeline(transaction=True)
            self._queue_put(pipe, entry, text)
            pipe.execute()
        return self.location(entry.key, entry.model_version)

    def _queue_put(self, pipe: Any, entry: Entry, text: str | None) -> None:
        """The commands of ``put`` queued on ``pipe`` (a redis-py or redis.asyncio pipeline)."""
        data = (dump_entry(entry) if text is None else text).encode("utf-8")
        recorded = posix(entry.recorded_at)
        score = float(recorded)
        expire_at = self._expire_at_ms(entry.recorded_at)
        key, names = entry.key, self.keys
        if expire_at is None:
            pipe.set(self._name(key), data)
        else:
            pipe.set(self._name(key), data, pxat=max(expire_at, 1))
        pipe.hset(names.meta, key, index_row(entry.model_version, recorded, len(data)))
        pipe.zadd(names.fifo, {key: score})
        pipe.zadd(names.lru, {key: score}, gt=True)  # adds a new key; an old one keeps a later use
        pipe.zadd(names.lfu, {key: 0}, nx=True)  # a re-recorded key keeps its hits

    def delete(self, meta: EntryMeta) -> None:
        key, names = meta.key, self.keys
        with self._reach():
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self._name(key))
            pipe.hdel(names.meta, key)
            pipe.zrem(names.lru, key)
            pipe.zrem(names.lfu, key)
            pipe.zrem(names.fifo, key)
            pipe.execute()

    def quarantine(self, key: str, model_version: str) -> str | None:
        """Rename the entry to ``B corrupt:<key>`` (keeping its expiry) and drop its index rows."""
        keys, moved_to = self._quarantine_keys(key)
        with self._reach():
            if self._quarantine_script is None:
                self._quarantine_script = self.client.register_script(QUARANTINE)
            moved = self._quarantine_script(keys=keys, args=[key])
        return moved_to if moved else None

    def _quarantine_keys(self, key: str) -> tuple[list[str], str]:
        """The keys ``QUARANTINE`` touches for ``key``, and where it says the entry went."""
        target = self.keys.corrupt(key)
        return [self._name(key), target, *self.keys.indexes], f"{self._base}/{target}"

    def scan(self) -> Iterator[EntryMeta]:
        """The index (one HGETALL), less the entries Redis has expired (their rows are dropped)."""
        for key, model_version, recorded, size in self._rows():
            yield EntryMeta(key, model_version, recorded, size, self.location(key, model_version))

    def entries(self, model_version: str | None = None, limit: int | None = None) -> Iterator[Entry]:
        wanted = [
            (key, mv) for key, mv, _, _ in self._rows() if model_version is None or mv == model_version
        ]
        count = 0
        for start in range(0, len(wanted), MGET_BATCH):
            batch = wanted[start : start + MGET_BATCH]
            with self._reach():  # one slot on a cluster: MGET as on one server
                texts = self.client.mget([self._name(key) for key, _ in batch])
            for (key, mv), data in zip(batch, texts):
                if limit is not None and count >= limit:
                    return
                if data is None:
                    continue
                try:
                    entry = load_entry(data, self.location(key, mv), expected_key=key)
                except CassetteError:
                    continue
                count += 1
                yield entry

    def size(self) -> tuple[int, int]:
        rows = self._rows()
        return len(rows), sum(row[3] for row in rows)

    def lock(self, key: str) -> RedisLock:
        return RedisLock(self, self.keys.lock(key))

    def usage(self) -> dict[str, Usage]:
        """Last use and hits of every indexed key (a key never hit: its recording time, 0)."""
        with self._reach():
            pipe = self.client.pipeline(transaction=True)
            pipe.zrange(self.keys.lru, 0, -1, withscores=True)
            pipe.zrange(self.keys.lfu, 0, -1, withscores=True)
            last_used, hits = pipe.execute()
        out = {_text(key): Usage(float(score), 0) for key, score in last_used}
        for key, score in hits:
            name = _text(key)
            out.setdefault(name, Usage(0.0, 0)).hits = int(score)
        return out

    def touch(self, deltas: dict[str, Usage], keep: set[str] | None = None) -> dict[str, Usage]:
        """Merge use into the index, for keys still in it (a deleted key gets no row back).

        ``keep`` is ignored: rows go with their entry in ``delete``, and a key
        another machine recorded after the caller's scan must keep its rows.
        """
        if deltas:
            with self._reach():
                pipe = self.client.pipeline(transaction=False)
                for key, use in deltas.items():
                    pipe.zadd(self.keys.lru, {key: float(use.last_used)}, xx=True, gt=True)
                    if use.hits:
                        pipe.zadd(self.keys.lfu, {key: int(use.hits)}, xx=True, incr=True)
                pipe.execute()
        return self.usage()

    def _names(self) -> Iterator[bytes]:
        """Every name under the base, from one SCAN (on a cluster, of the master holding the slot)."""
        extra: dict[str, Any] = {}
        if self.cluster:
            extra["target_nodes"] = self.client.get_node_from_key(self.keys.meta)
        for name in self.client.scan_iter(match=self.keys.pattern, count=BATCH, **extra):
            yield name if isinstance(name, bytes) else name.encode("utf-8")

    def clear(self) -> int:
        """Delete this store's keys (entries, quarantined ones, the index); returns how many entries went.

        One SCAN over the base; a name is deleted only when it is one of ours
        exactly (``B e:<sha256>``, ``B corrupt:<sha256>``, ``B meta`` ...), so
        a longer prefix nested in ours (``P other:``) is left alone, and so are
        held locks (they expire).
        """
        removed = 0
        with self._reach():
            for batch in _batched(self._names(), BATCH):
                kinds = [(name, self.keys.kind(name)) for name in batch]
                entries = [name for name, kind in kinds if kind == "e"]
                others = [name for name, kind in kinds if kind is not None and kind != "e"]
                if entries:
                    removed += int(self.client.delete(*entries))
                if others:
                    self.client.delete(*others)
        return removed

    async def aclose(self) -> None:
        """``close``, and the running event loop's asyncio client closed with an await."""
        if self.aio is not None:
            await self.aio.aclose()
        self.close()

    def close(self) -> None:
        """Disconnect the client's connections (a later call connects again)."""
        if self.aio is not None:
            self.aio.close()
        with contextlib.suppress(Exception):
            if self.cluster:
                self.client.disconnect_connection_pools()
                return
            if self._owns_client:
                self.client.close()
            self.client.connection_pool.disconnect()


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
