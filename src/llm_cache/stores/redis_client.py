"""redis-py for the Redis store: the client a URL names, and its errors as ``StoreUnavailable``.

One server gets a ``redis.Redis`` with one quick retry of a dropped pooled
connection and none of a timeout. A cluster gets a ``redis.cluster.RedisCluster``
that retries a command once after refreshing its view of the cluster (a
master gone, a failover, slots moved): a failover that has completed is
followed, and a master that stays dead is ``StoreUnavailable`` within about
twice the timeout (the cluster's own CLUSTERDOWN likewise, once it sees the
master fail), never an answer from another store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError, StoreUnavailable
from ..redact import mask_url
from .redis_url import UNPARSED, RedisURL

__all__ = ["INSTALL_HINT", "connect", "connect_async", "describe", "import_redis", "is_cluster", "reach"]

INSTALL_HINT = "the Redis store needs redis-py: pip install 'pytest-llm-cache[redis]'"
# how often a cluster command is tried again after the client refreshed its view of the cluster
CLUSTER_RETRIES = 1


def import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return redis


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is a redis-py cluster client (False when redis-py is absent)."""
    try:
        from redis.cluster import RedisCluster
    except ImportError:
        return False
    return isinstance(client, RedisCluster)


@contextlib.contextmanager
def reach(url: str, timeout: float) -> Iterator[None]:
    """Turn the errors of an unreachable or refusing server (or cluster) into StoreUnavailable."""
    exceptions = import_redis().exceptions
    try:
        yield
    except exceptions.CrossSlotTransactionError:  # a bug of ours, not a server away
        raise
    except (exceptions.ConnectionError, exceptions.TimeoutError, exceptions.ResponseError,
            exceptions.ClusterError, exceptions.RedisClusterException) as exc:
        reason = str(exc).strip() or type(exc).__name__
        if isinstance(exc, exceptions.TimeoutError):
            reason = f"timed out ({reason})"
        elif isinstance(exc, exceptions.AuthenticationError):
            reason = f"authentication failed ({reason})"
        elif isinstance(exc, exceptions.AskError):  # MOVED/ASK reach a single-server client only
            reason = f"the server is a Redis Cluster node ({type(exc).__name__}: {reason}); use redis+cluster://"
        elif isinstance(exc, exceptions.ClusterDownError):  # CLUSTERDOWN, MASTERDOWN
            reason = f"the cluster refused the command ({reason})"
        elif isinstance(exc, exceptions.ResponseError):
            reason = f"the server refused the command ({reason})"
        elif isinstance(exc, exceptions.RedisClusterException):
            reason = f"the cluster cannot be used ({reason})"
        raise StoreUnavailable(url=url, reason=reason, timeout=timeout) from exc


def connect(parsed: RedisURL, setting: str) -> Any:
    """A client for ``parsed`` (a cluster client has already asked a node for the cluster's
    layout: call it inside ``reach``). A URL redis-py refuses is a ConfigError naming ``setting``."""
    redis = import_redis()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    timeouts = {"socket_connect_timeout": parsed.timeout, "socket_timeout": parsed.timeout,
                "decode_responses": False}
    try:
        _check_parameters(redis, parsed.target)
        if not parsed.cluster:
            # one quick retry of a dropped connection (a pooled socket the server closed);
            # none of a timeout, and no backoff: a server that does not answer fails in `timeout`
            retry = Retry(NoBackoff(), 1, (redis.exceptions.ConnectionError,))
            return redis.Redis.from_url(parsed.target, retry=retry, **timeouts)
        cluster = redis.cluster
        return cluster.RedisCluster(
            url=parsed.target,
            startup_nodes=[cluster.ClusterNode(host, port) for host, port in parsed.nodes[1:]],
            retry=Retry(NoBackoff(), CLUSTER_RETRIES),
            **timeouts,
        )
    except (ValueError, TypeError, redis.exceptions.RedisError) as exc:
        raise ConfigError(setting=setting, value=parsed.masked, expected=_expected(exc, parsed.url)) from None


def _check_parameters(redis: Any, target: str) -> None:
    """Build, without connecting, the connection redis-py would make for ``target``: a query
    parameter it does not take (``?bogus=1``) or a bad value (``ssl_cert_reqs=maybe``) fails
    here, as the setting's error, instead of as a TypeError at the first command. A
    cluster's nodes take the same parameters."""
    pool = redis.ConnectionPool.from_url(target)
    pool.connection_class(**pool.connection_kwargs)  # no socket is opened before connect()


def _expected(exc: Exception, url: str) -> str:
    """What the setting must be, with redis-py's reason; never a piece of a password it
    misread (``redis://:Pa#ss@host`` reads as port "Pa"): a URL with a userinfo gets the
    form and the fix instead of redis-py's words."""
    if isinstance(exc, TypeError):
        name = str(exc).rpartition("argument ")[2].strip("'\" ")
        return f"a Redis URL whose query parameters redis-py takes (it does not take {name!r})"
    if "@" in url:
        return UNPARSED
    return f"a Redis URL ({exc})"


def connect_async(parsed: RedisURL) -> Any:
    """The redis.asyncio twin of ``connect(parsed)``: the same server or cluster, timeouts and
    retries, for the tasks of the event loop it is first used in (its connections belong
    to that loop). It connects on its first command."""
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    exceptions = import_redis().exceptions
    timeouts: dict[str, Any] = {"socket_connect_timeout": parsed.timeout, "socket_timeout": parsed.timeout,
                "decode_responses": False}
    if not parsed.cluster:
        retry = Retry(NoBackoff(), 1, (exceptions.ConnectionError,))
        return redis.asyncio.Redis.from_url(parsed.target, retry=retry, **timeouts)
    cluster = redis.asyncio.cluster
    return cluster.RedisCluster.from_url(
        parsed.target,
        startup_nodes=[cluster.ClusterNode(host, port) for host, port in parsed.nodes[1:]],
        retry=Retry(NoBackoff(), CLUSTER_RETRIES),
        **timeouts,
    )


def describe(client: Any, url: str | None, base: str | None = None) -> str:
    """What locations begin with: ``redis://host:port/db`` (``unix://path/db``), or a cluster's
    ``redis+cluster://host:port,host:port``; never a password."""
    if base is not None:
        return base
    if is_cluster(client):
        if url is not None:
            parts = urlsplit(mask_url(url))
            return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], "", "", ""))
        nodes = ",".join(node.name for node in getattr(client, "startup_nodes", []) or [])
        return f"redis+cluster://{nodes}"
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
