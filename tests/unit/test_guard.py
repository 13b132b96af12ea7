"""The network guard's patching: on only inside its block, put back exactly, and what it lets through."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from llm_cache.engine import guard
from llm_cache.errors import NetworkBlocked
from llm_cache.hosts import parse_hosts


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP socket on 127.0.0.1 that accepts (the kernel's backlog does it): its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


def _guard(allowed: str = "", block: bool = True, unseen: list[str] | None = None) -> guard.Guard:
    return guard.Guard(
        test_id="t::x", mode="replay", block=block, allowed=parse_hosts(allowed, "s"),
        on_unseen=None if unseen is None else unseen.append,
    )


def test_patches_only_inside_the_block_and_puts_back_what_was_there() -> None:
    before = (socket.socket.__dict__.get("connect"), socket.socket.__dict__.get("connect_ex"), socket.getaddrinfo)
    with guard.guarding(_guard()), guard.guarding(_guard()):
        assert guard.installed()
        assert socket.socket.connect is not socket.socket.__mro__[1].connect
    assert not guard.installed()
    after = (socket.socket.__dict__.get("connect"), socket.socket.__dict__.get("connect_ex"), socket.getaddrinfo)
    assert after == before


def test_blocks_refuses_and_closes_the_socket(listener: int) -> None:
    sock = socket.socket()
    with guard.guarding(_guard()), pytest.raises(NetworkBlocked) as caught:
        sock.connect(("127.0.0.1", listener))
    assert sock.fileno() == -1
    assert (caught.value.host, caught.value.port, caught.value.test_id) == ("127.0.0.1", listener, "t::x")


def test_upstream_connections_and_allowed_hosts_pass(listener: int) -> None:
    with guard.guarding(_guard(f"127.0.0.1:{listener}")):
        socket.create_connection(("127.0.0.1", listener)).close()
    with guard.guarding(_guard()), guard.upstream():
        socket.create_connection(("127.0.0.1", listener)).close()


def test_upstream_is_per_thread(listener: int) -> None:
    caught: list[BaseException] = []

    def other() -> None:
        try:
            socket.create_connection(("127.0.0.1", listener)).close()
        except NetworkBlocked as exc:
            caught.append(exc)

    with guard.guarding(_guard()), guard.upstream():
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(caught) == 1


def test_watching_reports_host_and_port(listener: int) -> None:
    unseen: list[str] = []
    with guard.guarding(_guard(block=False, unseen=unseen)):
        socket.create_connection(("localhost", listener)).close()
    assert unseen[-1] == f"localhost:{listener}"


def test_names_resolved_in_one_block_are_forgotten_after_it(listener: int) -> None:
    with guard.guarding(_guard("localhost")):
        socket.create_connection(("localhost", listener)).close()
        socket.create_connection(("127.0.0.1", listener)).close()  # resolved from localhost above
    with guard.guarding(_guard("localhost")), pytest.raises(NetworkBlocked):
        socket.create_connection(("127.0.0.1", listener))


def test_the_cache_own_stores_connect_freely(listener: int) -> None:
    namespace: dict[str, object] = {"__name__": "llm_cache.stores.probe", "socket": socket}
    code = "def connect(port):\n    socket.create_connection(('127.0.0.1', port)).close()\n"
    exec(code, namespace)  # noqa: S102 - a function whose module is one of the cache's stores
    with guard.guarding(_guard()):
        namespace["connect"](listener)  # type: ignore[operator]
