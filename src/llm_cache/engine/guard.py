"""The network guard: connections the cache cannot see, refused in replay and listed in record.

The cache sees requests through the patched transports (``adapters``). A client
that speaks HTTP over its own sockets (a vendored transport, websockets, gRPC)
is invisible to it: nothing of it is recorded, and in replay it would reach the
network. While a test is intercepted, the guard wraps ``socket.socket.connect``
and ``connect_ex`` (asyncio's selector loops connect through them too; ssl sockets
call them underneath) and checks each TCP connection to an IPv4 or IPv6 address:

- made through a patched transport (``upstream()`` is set while an adapter sends
  a request on): the cache decided about it, let through;
- to an allowed host (``llm_cache_allowed_hosts``, ``--llm-cache-allow-host``), an
  ignored one (``llm_cache_ignore_hosts``), or one outside ``llm_cache_hosts`` when
  that is set: let through;
- made by the cache's own store (``llm_cache.stores``: Redis): let through;
- else in replay: ``NetworkBlocked`` at once; in record and refresh (and in replay
  with ``llm_cache_block_network = false``) let through and reported as unseen.

Unix sockets and UDP are never checked. A connection names an IP address; the
guard also knows the name it was resolved from when ``socket.getaddrinfo`` resolved
it during the test (``socket.create_connection``, asyncio and anyio all resolve
through it), and matches patterns against both: once ``localhost`` was resolved to
127.0.0.1, a connection to 127.0.0.1 counts as one to ``localhost``.

Installed for the duration of one intercepted test and removed after it, so tests
that do not use the cache never pass through it.
"""

from __future__ import annotations

import contextvars
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..errors import NetworkBlocked
from ..hosts import HostPattern, any_match, format_host
from ..modes import Mode

if TYPE_CHECKING:
    from .scope import Scope

__all__ = ["Guard", "for_scope", "guarding", "installed", "upstream"]

# Set while a patched transport sends a request on: its connections are the cache's own.
_upstream: contextvars.ContextVar[bool] = contextvars.ContextVar("llm_cache_upstream", default=False)

_INET = (socket.AF_INET, socket.AF_INET6)
_STORES = __name__.rsplit(".", 2)[0] + ".stores"
# address -> the name it was last resolved from; bounded (cleared when full)
_names: dict[str, str] = {}
MAX_NAMES = 4096

_lock = threading.Lock()
_stack: list[Guard] = []
_MISSING = object()
_saved: dict[str, Any] = {}
_real_connect: Callable[..., Any] = socket.socket.connect
_real_connect_ex: Callable[..., Any] = socket.socket.connect_ex
_real_getaddrinfo: Callable[..., Any] = socket.getaddrinfo


@contextmanager
def upstream() -> Iterator[None]:
    """Mark the connections made in this block (this thread or task) as the cache's own."""
    token = _upstream.set(True)
    try:
        yield
    finally:
        _upstream.reset(token)


@dataclass(frozen=True)
class Guard:
    """What one test lets through, and what it does with the rest."""

    test_id: str
    mode: str
    # True: refuse with NetworkBlocked; False: let through and report it to ``on_unseen``
    block: bool
    # allowed and ignored hosts: always let through
    allowed: tuple[HostPattern, ...]
    # llm_cache_hosts: when set, a host outside them is not the cache's business
    intercepted: tuple[HostPattern, ...] = ()
    on_unseen: Callable[[str], None] | None = None

    def lets_through(self, address: str, name: str | None, port: int) -> bool:
        if any_match(self.allowed, port, address, name):
            return True
        return bool(self.intercepted) and not any_match(self.intercepted, port, address, name)

    def check(self, sock: socket.socket, address: str, port: int) -> None:
        __tracebackhide__ = True
        name = _names.get(address)
        if self.lets_through(address, name, port) or _by_a_store():
            return
        shown = name or address
        if self.block:
            sock.close()  # socket.create_connection closes only on OSError
            raise NetworkBlocked(
                host=shown, port=port, test_id=self.test_id, mode=self.mode,
                address=address if name else None,
            )
        if self.on_unseen is not None:
            self.on_unseen(format_host(shown, port))


def _by_a_store() -> bool:
    """Whether the cache's own store (Redis, say) is connecting: never refused nor listed.
    Looked up only for a connection that would be, so it costs the others nothing."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(_STORES):
            return True
        frame = frame.f_back
    return False


def _check(sock: socket.socket, address: object) -> None:
    __tracebackhide__ = True
    if not _stack or _upstream.get():
        return
    if not isinstance(address, tuple) or len(address) < 2 or not isinstance(address[1], int):
        return  # AF_UNIX paths, and what connect itself will refuse
    try:
        if sock.family not in _INET or sock.type != socket.SOCK_STREAM:
            return
    except OSError:  # a closed socket: connect will say so
        return
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    guard = _stack[-1]
    guard.check(sock, str(host).lower(), address[1])


def _connect(sock: socket.socket, address: Any) -> None:
    __tracebackhide__ = True
    _check(sock, address)
    _real_connect(sock, address)


def _connect_ex(sock: socket.socket, address: Any) -> int:
    __tracebackhide__ = True
    _check(sock, address)
    return int(_real_connect_ex(sock, address))


def _getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    infos = _real_getaddrinfo(host, port, *args, **kwargs)
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if isinstance(host, str) and host:
        name = host.rstrip(".").lower()
        if len(_names) > MAX_NAMES:
            _names.clear()
        for info in infos:
            address = str(info[4][0]).lower()
            if address != name:
                _names[address] = name
    return infos


def _install() -> None:
    global _real_connect, _real_connect_ex, _real_getaddrinfo
    cls = socket.socket
    # what was there before, so that removing puts back exactly that
    _saved.update({name: cls.__dict__.get(name, _MISSING) for name in ("connect", "connect_ex")})
    _saved["getaddrinfo"] = socket.getaddrinfo
    _real_connect, _real_connect_ex, _real_getaddrinfo = cls.connect, cls.connect_ex, socket.getaddrinfo
    cls.connect = _connect  # type: ignore[method-assign,assignment]
    cls.connect_ex = _connect_ex  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = _getaddrinfo


def _remove() -> None:
    cls = socket.socket
    for name, ours in (("connect", _connect), ("connect_ex", _connect_ex)):
        if cls.__dict__.get(name) is ours:  # unless someone patched over us since
            before = _saved.pop(name, _MISSING)
            if before is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, before)
    if socket.getaddrinfo is _getaddrinfo:
        socket.getaddrinfo = _saved.pop("getaddrinfo")


@contextmanager
def guarding(guard: Guard) -> Iterator[Guard]:
    """Check every connection of the process against ``guard`` for the block."""
    with _lock:
        if not _stack:
            _install()
        _stack.append(guard)
    try:
        yield guard
    finally:
        with _lock:
            for index in range(len(_stack) - 1, -1, -1):
                if _stack[index] is guard:
                    del _stack[index]
                    break
            if not _stack:
                _remove()
                _names.clear()  # names resolved in one test say nothing of the next one's


def installed() -> bool:
    return bool(_stack)


def for_scope(scope: Scope) -> Guard | None:
    """The guard for a test's scope: blocking in replay (unless ``block_network`` is off),
    watching in record and refresh; none in ``off``."""
    if scope.mode is Mode.OFF:
        return None
    session = scope.session
    settings = session.settings
    test_id = scope.test_id

    def unseen(host: str) -> None:
        session.stats.add_unseen(host, test_id)

    return Guard(
        test_id=test_id,
        mode=scope.mode.value,
        block=scope.mode is Mode.REPLAY and settings.block_network,
        allowed=settings.allowed_hosts + settings.ignore_hosts,
        intercepted=settings.hosts,
        on_unseen=unseen,
    )
