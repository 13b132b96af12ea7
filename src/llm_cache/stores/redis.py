"""The Redis store: entries shared by every machine that reaches one Redis server.

``redis://host:port/db`` (also ``rediss://`` and ``unix://``), with our own
query parameters ``prefix`` (default ``llm-cache:``), ``timeout`` (seconds,
default 2: the connect and the read timeout of every command) and ``grace``;
any other query parameter goes to ``redis.Redis.from_url``.

Everything lives under the prefix ``P``; nothing outside it is ever read,
written or deleted (no ``FLUSHDB``, no unprefixed ``SCAN``):

- ``P e:{key}``: the entry's YAML text, as ``dump_entry`` writes it;
- ``P meta``: a hash, key -> ``"model_version<TAB>recorded_at<TAB>size"``
  (``recorded_at`` in POSIX seconds with exactly six decimals);
- ``P lru``, ``P lfu``, ``P fifo``: sorted sets of keys by last use, hits and
  recording time, the eviction index;
- ``P lock:{key}``: the per-key recording lock (expires, so a dead holder
  blocks nobody for long);
- ``P corrupt:{key}``: where ``quarantine`` moves an unreadable entry.

Expiry: with a ttl, an entry's ``e:`` key expires in Redis itself at
``recorded_at + ttl + grace``; an entry past ttl+grace is gone, dropped by
Redis, and its index rows are dropped by the next ``scan``. The
``recorded_at`` rule still applies on read in the session: an entry past its
ttl but within the grace is found, stale, and refreshed (or served stale).

Every Redis error of reach (refused, reset, timed out, auth, server
refusing commands) becomes ``StoreUnavailable`` naming the URL (password
masked), within the socket timeout: never a hang.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..cassette import Entry, dump_entry, load_entry
from ..errors import CassetteError, ConfigError, StoreUnavailable
from ..redact import mask_url
from ..usage import Usage
from .protocol import EntryMeta

__all__ = ["DEFAULT_PREFIX", "DEFAULT_TIMEOUT", "LOCK_EXPIRY", "RedisLock", "RedisStore", "mask_url"]

log = logging.getLogger("llm_cache")

DEFAULT_PREFIX = "llm-cache:"
DEFAULT_TIMEOUT = 2.0
# A lock older than this is taken to belong to a dead holder.
LOCK_EXPIRY = 60.0
# How often a waiting lock asks again.
LOCK_POLL = 0.02
BATCH = 1000
MGET_BATCH = 100
INSTALL_HINT = "the Redis store needs redis-py: pip install 'pytest-llm-cache[redis]'"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_OUR_PARAMS = ("prefix", "timeout", "grace")

# Drop the index rows of keys whose entry is gone, checking again inside the script
# so that an entry recorded meanwhile keeps its rows. KEYS: meta, lru, lfu, fifo;
# ARGV: the entry key prefix, then the keys.
_DROP_DANGLING = """
local dropped = 0
for i = 2, #ARGV do
  local k = ARGV[i]
  if redis.call('EXISTS', ARGV[1] .. k) == 0 then
    redis.call('HDEL', KEYS[1], k)
    redis.call('ZREM', KEYS[2], k)
    redis.call('ZREM', KEYS[3], k)
    redis.call('ZREM', KEYS[4], k)
    dropped = dropped + 1
  end
end
return dropped
"""


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return redis


def _posix(moment: datetime) -> str:
    """A time as POSIX seconds with six decimals, exactly (no float rounding)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - _EPOCH
    return f"{delta.days * 86400 + delta.seconds}.{delta.microseconds:06d}"


def _from_posix(text: str) -> datetime:
    seconds, _, micros = text.partition(".")
    fraction = int((micros or "0").ljust(6, "0")[:6])
    return _EPOCH + timedelta(seconds=int(seconds), microseconds=fraction)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


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
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
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


class RedisStore:
    """Entries in one Redis database, every key under ``prefix``.

    ``client`` is a ``redis.Redis`` (bytes responses preferred); ``url`` only
    names the store in messages and locations (default: from the client's
    connection settings). ``ttl`` and ``grace`` set each entry's expiry in
    Redis (none without a ttl); ``timeout`` is what error messages report
    (the client's own socket timeouts bound every call).
    """

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
    ) -> None:
        self._redis = _import_redis()
        if not prefix:
            raise ConfigError(setting="redis store prefix", value=prefix, expected="a non-empty key prefix")
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.grace = grace
        self.timeout = timeout
        self.lock_expiry = lock_expiry
        self.lock_poll = lock_poll
        self._owns_client = False
        self._base = self._describe(client, url)
        self.url = mask_url(url) if url is not None else self._base
        self._entry_prefix = prefix + "e:"
        self._meta = prefix + "meta"
        self._lru = prefix + "lru"
        self._lfu = prefix + "lfu"
        self._fifo = prefix + "fifo"
        self._drop_script: Any = None

    @classmethod
    def from_url(
        cls, url: str, ttl: timedelta | None = None, grace: timedelta | None = None,
        setting: str = "--llm-cache-store", **kwargs: Any,
    ) -> RedisStore:
        """Connect to the server ``url`` names and PING it; ``StoreUnavailable`` when it does not answer.

        ``prefix``, ``timeout`` (seconds) and ``grace`` are read from the query
        (``grace`` only when not given); the rest of the URL goes to
        ``redis.Redis.from_url``. ``kwargs`` go to the constructor (``lock_expiry``).
        A URL that does not parse is a ConfigError naming ``setting``.
        """
        redis = _import_redis()
        from ..settings import parse_duration  # settings imports the policy, which imports stores

        try:
            parts = urlsplit(url)
            pairs = parse_qsl(parts.query, keep_blank_values=True)
        except ValueError as exc:  # redis://[::1/0: an unclosed IPv6 host
            raise ConfigError(setting=setting, value=mask_url(url), expected=f"a Redis URL ({exc})") from None
        ours = {name: value for name, value in pairs if name in _OUR_PARAMS}
        rest = [(name, value) for name, value in pairs if name not in _OUR_PARAMS]
        flag = setting
        setting = f"{flag} {mask_url(url)}"
        prefix = ours.get("prefix", DEFAULT_PREFIX)
        if not prefix:
            raise ConfigError(setting=setting, value=prefix, expected="prefix= a non-empty key prefix")
        try:
            timeout = float(ours.get("timeout", DEFAULT_TIMEOUT))
        except ValueError:
            raise ConfigError(
                setting=setting, value=ours["timeout"], expected="timeout= a number of seconds"
            ) from None
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ConfigError(
                setting=setting, value=ours["timeout"], expected="timeout= a positive number of seconds"
            )
        if grace is None and "grace" in ours:
            grace = parse_duration(ours["grace"], f"{setting} grace")
        target = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment))
        masked = mask_url(url)
        # One quick retry of a dropped connection (a pooled socket the server closed);
        # none of a timeout, and no backoff: a server that does not answer fails in `timeout`.
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        retry = Retry(NoBackoff(), 1, (redis.exceptions.ConnectionError,))
        try:
            client = redis.Redis.from_url(
                target,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                decode_responses=False,
                retry=retry,
            )
        except ValueError as exc:
            raise ConfigError(setting=flag, value=masked, expected=f"a Redis URL ({exc})") from None
        store = cls(client, url=url, prefix=prefix, ttl=ttl, grace=grace, timeout=timeout, **kwargs)
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

    @staticmethod
    def _describe(client: Any, url: str | None) -> str:
        """``redis://host:port/db`` (``unix://path/db``) for locations: never a password."""
        try:
            kwargs = client.connection_pool.connection_kwargs
        except AttributeError:
            kwargs = {}
        db = kwargs.get("db", 0)
        if kwargs.get("path"):
            return f"unix://{kwargs['path']}/{db}"
        scheme = "rediss" if url is not None and url.startswith("rediss:") else "redis"
        if "host" in kwargs:
            return f"{scheme}://{kwargs['host']}:{kwargs.get('port', 6379)}/{db}"
        if url is not None:
            parts = urlsplit(mask_url(url))
            return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
        return "redis://?"

    @contextlib.contextmanager
    def _reach(self) -> Iterator[None]:
        """Turn the errors of an unreachable or refusing server into StoreUnavailable."""
        exceptions = self._redis.exceptions
        try:
            yield
        except (exceptions.ConnectionError, exceptions.TimeoutError, exceptions.ResponseError) as exc:
            reason = str(exc).strip() or type(exc).__name__
            if isinstance(exc, exceptions.TimeoutError):
                reason = f"timed out ({reason})"
            elif isinstance(exc, exceptions.AuthenticationError):
                reason = f"authentication failed ({reason})"
            elif isinstance(exc, exceptions.ResponseError):
                reason = f"the server refused the command ({reason})"
            raise StoreUnavailable(url=self.url, reason=reason, timeout=self.timeout) from exc

    def _name(self, key: str) -> str:
        return self._entry_prefix + key

    def _expire_at_ms(self, recorded_at: datetime) -> int | None:
        if self.ttl is None:
            return None
        if recorded_at.tzinfo is None:
            recorded_at = recorded_at.replace(tzinfo=timezone.utc)
        deadline = recorded_at + self.ttl + (self.grace or timedelta(0))
        delta = deadline - _EPOCH
        return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000

    def _drop_dangling(self, keys: list[str]) -> set[str]:
        """The keys among ``keys`` whose entry is gone (expired in Redis); their index rows dropped."""
        gone: set[str] = set()
        for start in range(0, len(keys), BATCH):
            batch = keys[start : start + BATCH]
            pipe = self.client.pipeline(transaction=False)
            for key in batch:
                pipe.exists(self._name(key))
            missing = [key for key, there in zip(batch, pipe.execute()) if not there]
            if not missing:
                continue
            if self._drop_script is None:
                self._drop_script = self.client.register_script(_DROP_DANGLING)
            self._drop_script(
                keys=[self._meta, self._lru, self._lfu, self._fifo], args=[self._entry_prefix, *missing]
            )
            # keys recorded again meanwhile kept their rows; those still missing are gone
            pipe = self.client.pipeline(transaction=False)
            for key in missing:
                pipe.exists(self._name(key))
            gone.update(key for key, there in zip(missing, pipe.execute()) if not there)
        return gone

    def _rows(self) -> list[tuple[str, str, datetime | None, int]]:
        """(key, model version, recorded at, size) of every indexed entry still in Redis."""
        with self._reach():
            raw = self.client.hgetall(self._meta)
            rows: list[tuple[str, str, datetime | None, int]] = []
            for field, value in raw.items():
                try:
                    model_version, recorded, size = _text(value).rsplit("\t", 2)
                    row: tuple[str, str, datetime | None, int] = (
                        _text(field), model_version, _from_posix(recorded), int(size))
                except ValueError:  # a damaged row: listed as unreadable, like a damaged file
                    row = (_text(field), "", None, 0)
                rows.append(row)
            gone = self._drop_dangling([row[0] for row in rows])
        return [row for row in rows if row[0] not in gone]

    # -- the Store protocol ----------------------------------------------------

    def location(self, key: str, model_version: str) -> str:
        return f"{self._base}/{self._name(key)}"

    def get(self, key: str, model_version: str) -> Entry | None:
        with self._reach():
            data = self.client.get(self._name(key))
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
        if text is None:
            text = dump_entry(entry)
        data = text.encode("utf-8")
        recorded = _posix(entry.recorded_at)
        score = float(recorded)
        expire_at = self._expire_at_ms(entry.recorded_at)
        key = entry.key
        with self._reach():
            pipe = self.client.pipeline(transaction=True)
            if expire_at is None:
                pipe.set(self._name(key), data)
            else:
                pipe.set(self._name(key), data, pxat=max(expire_at, 1))
            pipe.hset(self._meta, key, f"{entry.model_version}\t{recorded}\t{len(data)}")
            pipe.zadd(self._fifo, {key: score})
            pipe.zadd(self._lru, {key: score}, gt=True)  # adds a new key; an old one keeps a later use
            pipe.zadd(self._lfu, {key: 0}, nx=True)  # a re-recorded key keeps its hits
            pipe.execute()
        return self.location(key, entry.model_version)

    def delete(self, meta: EntryMeta) -> None:
        key = meta.key
        with self._reach():
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self._name(key))
            pipe.hdel(self._meta, key)
            pipe.zrem(self._lru, key)
            pipe.zrem(self._lfu, key)
            pipe.zrem(self._fifo, key)
            pipe.execute()

    def quarantine(self, key: str, model_version: str) -> str | None:
        """Rename the entry to ``P corrupt:{key}`` (keeping its expiry) and drop its index rows."""
        target = self.prefix + "corrupt:" + key
        with self._reach():
            pipe = self.client.pipeline(transaction=True)
            pipe.rename(self._name(key), target)
            pipe.hdel(self._meta, key)
            pipe.zrem(self._lru, key)
            pipe.zrem(self._lfu, key)
            pipe.zrem(self._fifo, key)
            results = pipe.execute(raise_on_error=False)
        if isinstance(results[0], self._redis.exceptions.ResponseError):
            if "no such key" in str(results[0]).lower():
                return None
            with self._reach():
                raise results[0]
        return f"{self._base}/{target}"

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
            with self._reach():
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
        return RedisLock(self, self.prefix + "lock:" + key)

    def usage(self) -> dict[str, Usage]:
        """Last use and hits of every indexed key (a key never hit: its recording time, 0)."""
        with self._reach():
            pipe = self.client.pipeline(transaction=True)
            pipe.zrange(self._lru, 0, -1, withscores=True)
            pipe.zrange(self._lfu, 0, -1, withscores=True)
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
                    pipe.zadd(self._lru, {key: float(use.last_used)}, xx=True, gt=True)
                    if use.hits:
                        pipe.zadd(self._lfu, {key: int(use.hits)}, xx=True, incr=True)
                pipe.execute()
        return self.usage()

    def clear(self) -> int:
        """Delete this store's keys (entries, quarantined ones, the index); returns how many entries went.

        One SCAN over ``P*``; a name is deleted only when it is one of ours
        exactly (``P e:<sha256>``, ``P corrupt:<sha256>``, ``P meta`` ...), so
        a longer prefix nested in ours (``P other:``) is left alone, and so are
        held locks (they expire).
        """
        removed = 0
        pattern = _glob_escape(self.prefix) + "*"
        ours = re.compile(
            re.escape(self.prefix.encode("utf-8")) + rb"(?:(e|corrupt):[0-9a-f]{64}|meta|lru|lfu|fifo)\Z"
        )
        with self._reach():
            for batch in _batched(self.client.scan_iter(match=pattern, count=BATCH), BATCH):
                names = [name if isinstance(name, bytes) else name.encode("utf-8") for name in batch]
                matched = [(n, ours.match(n)) for n in names]
                entries = [n for n, m in matched if m is not None and m.group(1) == b"e"]
                others = [n for n, m in matched if m is not None and m.group(1) != b"e"]
                if entries:
                    removed += int(self.client.delete(*entries))
                if others:
                    self.client.delete(*others)
        return removed

    def close(self) -> None:
        """Disconnect the client's connection pool (a later call connects again)."""
        with contextlib.suppress(Exception):
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
