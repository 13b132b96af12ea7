"""Host patterns: the allowed, ignored and intercepted hosts, parsed and matched.

A leaf module (it imports nothing of ours but errors), shared by the settings,
the engine's host rules and the network guard. A pattern is a host name or an IP
address, optionally with a port (``host:port``, ``[::1]:8080``); names may be
globs (``*.example.com`` matches the subdomains of example.com, not example.com
itself). Names compare case-insensitively, without a trailing dot.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = [
    "DEFAULT_ALLOWED",
    "HOSTS_FORM",
    "HostPattern",
    "any_match",
    "format_host",
    "parse_host",
    "parse_hosts",
    "url_host",
]

HOSTS_FORM = "hosts or host:port, one a line, like localhost, 127.0.0.1, [::1]:8080 or *.example.com"
_BAD = set(" \t/\\@?#")


def _norm(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


@dataclass(frozen=True)
class HostPattern:
    """One host (a name, a glob or an IP address) and, when given, the one port it covers."""

    host: str
    port: int | None = None

    def matches(self, host: str, port: int | None) -> bool:
        if self.port is not None and port != self.port:
            return False
        name = _norm(host)
        if "*" in self.host or "?" in self.host or "[" in self.host:
            return fnmatch.fnmatchcase(name, self.host)
        return name == self.host

    def __str__(self) -> str:
        return format_host(self.host, self.port)


def format_host(host: str, port: int | None) -> str:
    """``host:port`` as people write it: IPv6 addresses in brackets."""
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ipv6(host: str) -> bool:
    """An IPv6 address (with its zone, or a glob such as ``fe80::*``)."""
    if "*" in host or "?" in host:  # with a digit of its own: "*:*:*" is no address's glob
        return all(c in "0123456789abcdef:.*?" for c in host) and any(c in "0123456789abcdef" for c in host)
    import ipaddress  # only for a pattern with a colon

    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).version == 6
    except ValueError:
        return False


def parse_host(value: object, setting: str) -> HostPattern:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    text = str(value).strip()
    host, port_text = text, ""
    if text.startswith("["):
        inside, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(setting=setting, value=value, expected=HOSTS_FORM)
        host, port_text = inside, rest[1:]
        if rest and not port_text:
            raise ConfigError(setting=setting, value=value, expected=HOSTS_FORM)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text:
            raise ConfigError(setting=setting, value=value, expected=HOSTS_FORM)
    host = _norm(host)
    if not host or _BAD & set(host) or (":" in host and not _ipv6(host)):
        raise ConfigError(setting=setting, value=value, expected=HOSTS_FORM)
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(setting=setting, value=value, expected=HOSTS_FORM)
        port = int(port_text)
    return HostPattern(host, port)


def parse_hosts(value: object, setting: str) -> tuple[HostPattern, ...]:
    """Host patterns, one a line (or a list of them); blank lines and ``#`` comments skipped."""
    if value is None:
        return ()
    lines: Iterable[object] = value if isinstance(value, (list, tuple)) else str(value).splitlines()
    out = []
    for line in lines:
        text = str(line).strip()
        if text and not text.startswith("#"):
            out.append(parse_host(text, setting))
    return tuple(out)


def any_match(patterns: Iterable[HostPattern], port: int | None, *hosts: str | None) -> bool:
    """Whether a pattern covers one of ``hosts`` (an address and the name it came from) at ``port``."""
    return any(p.matches(h, port) for p in patterns for h in hosts if h)


_SCHEME_PORTS = {"https": 443, "http": 80, "wss": 443, "ws": 80}


def url_host(url: str) -> tuple[str, int | None]:
    """(host, port) of a network URL, the scheme's port when it names none; ("", None) for
    anything else (``@cached`` functions are keyed under ``function://``)."""
    try:
        parts = urlsplit(url)
        default = _SCHEME_PORTS.get(parts.scheme.lower())
        if default is None:
            return "", None
        return (parts.hostname or "").rstrip("."), parts.port or default
    except ValueError:
        return "", None


DEFAULT_ALLOWED = (HostPattern("localhost"), HostPattern("127.0.0.1"), HostPattern("::1"))
