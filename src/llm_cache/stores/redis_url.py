"""A Redis store URL, read: which server or cluster, our own query parameters, and the rest.

- ``redis://host:port/db``, ``rediss://host:port/db`` (TLS), ``unix://path``:
  one server, through ``redis.Redis.from_url``;
- ``redis+cluster://host:port[,host:port...]/``, ``rediss+cluster://...`` (TLS):
  a Redis Cluster, through ``redis.cluster.RedisCluster``; the hosts are where
  the client starts to discover the cluster (one is enough, more survive one
  being down), and a cluster has one database, 0.

Our query parameters are ``prefix`` (default ``llm-cache:``), ``timeout``
(seconds, default 2: the connect and the read timeout of every command),
``grace`` and ``asyncio``: ``yes``, an event loop's tasks await their round
trips through a ``redis.asyncio`` client; ``no``, they make them on the loop
with the blocking client; ``auto`` (the default), ``no`` for a server on this
machine (a loopback address, ``localhost``, a unix socket), whose round trips
take microseconds, else ``yes``. Any other parameter goes to redis-py (``client_name=``, ``ssl_ca_certs=``,
``ssl_cert_reqs=``...). Nothing here imports redis-py.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError
from ..redact import mask_url

__all__ = ["CLUSTER_SCHEMES", "DEFAULT_PREFIX", "DEFAULT_TIMEOUT", "SCHEMES", "UNPARSED", "RedisURL", "parse_store_url"]

DEFAULT_PREFIX = "llm-cache:"
DEFAULT_TIMEOUT = 2.0
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)
_OUR_PARAMS = ("prefix", "timeout", "grace", "asyncio")
_YES, _NO = ("yes", "true", "1", "on"), ("no", "false", "0", "off")
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


@dataclass(frozen=True)
class RedisURL:
    """A store URL taken apart. ``target`` is the URL redis-py is given: the server's, or
    (on a cluster) the first node's, with ``nodes`` every startup node."""

    url: str
    prefix: str
    timeout: float
    grace: str | None
    target: str
    cluster: bool = False
    nodes: tuple[tuple[str, int], ...] = ()
    # a cluster's name in locations: scheme and nodes, never a password
    base: str | None = None
    # an event loop's tasks await their round trips (redis.asyncio)
    asyncio: bool = True

    @property
    def masked(self) -> str:
        return mask_url(self.url)


# The form of a Redis URL, for one that does not parse around its userinfo.
UNPARSED = ("a Redis URL, redis://[[user]:password@]host[:port][/db][?param=value...] "
            "(it does not parse: percent-encode '#', '?', '/' and '@' in a password, as %23 %3F %2F %40)")


def parse_store_url(url: str, setting: str = "--llm-cache-store") -> RedisURL:
    """``url`` read; a ConfigError naming ``setting`` when it does not parse or a parameter is wrong."""
    try:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:  # redis://[::1/0: an unclosed IPv6 host
        reason = UNPARSED if "@" in url else f"a Redis URL ({exc})"  # its words could quote a password
        raise ConfigError(setting=setting, value=mask_url(url), expected=reason) from None
    if "@" in url.partition("://")[2] and "@" not in parts.netloc:
        # a password's unencoded '#', '?' or '/' ended the host early: what follows is not
        # the path or the query it seems, and each would show a piece of the password
        raise ConfigError(setting=setting, value=mask_url(url), expected=UNPARSED)
    ours = {name: value for name, value in pairs if name in _OUR_PARAMS}
    rest = [(name, value) for name, value in pairs if name not in _OUR_PARAMS]
    named = f"{setting} {mask_url(url)}"
    prefix = ours.get("prefix", DEFAULT_PREFIX)
    if not prefix:
        raise ConfigError(setting=named, value=prefix, expected="prefix= a non-empty key prefix")
    try:
        timeout = float(ours.get("timeout", DEFAULT_TIMEOUT))
    except ValueError:
        raise ConfigError(setting=named, value=ours["timeout"], expected="timeout= a number of seconds") from None
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ConfigError(setting=named, value=ours["timeout"], expected="timeout= a positive number of seconds")
    grace = ours.get("grace")
    aio = ours.get("asyncio", "auto").lower()
    if aio not in ("auto", *_YES, *_NO):
        raise ConfigError(setting=named, value=ours["asyncio"], expected="asyncio= auto, yes or no")
    scheme = parts.scheme.lower()
    if scheme not in CLUSTER_SCHEMES:
        db = parts.path.strip("/")
        if scheme != "unix" and db and not db.isdigit():  # redis-py would quietly take database 0
            raise ConfigError(setting=named, value=parts.path, expected="/DB, a database number, after host:port")
        awaited = aio in _YES or (aio == "auto" and scheme != "unix" and not _local(parts.hostname))
        target = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment))
        return RedisURL(url, prefix, timeout, grace, target, asyncio=awaited)
    if "{" in prefix or "}" in prefix:
        raise ConfigError(setting=named, value=prefix,
                          expected="prefix= without '{' or '}' on a cluster (the prefix is the keys' hash tag)")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    nodes = tuple(_node(host, named) for host in hosts.split(","))
    if parts.path.strip("/") not in ("", "0"):
        raise ConfigError(setting=named, value=parts.path, expected="no database, or 0: a cluster has one database")
    tls = scheme == "rediss+cluster"
    first = hosts.split(",")[0].strip()
    target = urlunsplit(("rediss" if tls else "redis", userinfo + at + first, "", urlencode(rest), ""))
    base = f"{scheme}://" + ",".join(host.strip() for host in hosts.split(","))
    awaited = aio in _YES or (aio == "auto" and not all(_local(host) for host, _ in nodes))
    return RedisURL(url, prefix, timeout, grace, target, cluster=True, nodes=nodes, base=base, asyncio=awaited)


def _node(text: str, named: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; port 6379 when left out) of one startup node."""
    text = text.strip()
    try:
        parts = urlsplit("//" + text)
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, an unclosed [
        host, port = None, None
    if not host:
        raise ConfigError(setting=named, value=text, expected="host:port for each cluster node, separated by commas")
    return host, port or 6379


def _local(host: str | None) -> bool:
    """A host on this machine: a loopback address or name (an empty one is redis-py's localhost)."""
    if not host:
        return True
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
