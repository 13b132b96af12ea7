"""A real ``redis-server`` on a free loopback port, for the Redis store's tests.

``RedisServer`` starts one (no persistence, ``127.0.0.1`` only, a temporary
``--dir``), waits until it answers PING, and stops it; ``kill()`` simulates a
crash, ``restart()`` brings it back on the same port (empty: nothing is saved).

Fixtures (import them into a test module or conftest)::

    from redis_server import redis_server, redis_target, redis_url  # noqa: F401

- ``redis_server`` (session): the shared server. Skips the test when there is no
  ``redis-server`` binary, unless ``LLM_CACHE_REQUIRE_REDIS=1``, which makes it fail.
- ``redis_target`` (function): a ``RedisTarget`` giving this test its own key
  prefix on the shared server: ``.url`` (the server, db 0), ``.prefix``,
  ``.store_url`` (``url?prefix=...``, for ``open_store`` and
  ``--llm-cache-store``), ``.store(**kwargs)`` (a ``RedisStore`` on the prefix,
  closed after the test) and ``.client()`` (a plain redis-py client, for
  writing to the backend directly). Tests never flush: after the test, the keys
  under its prefix are deleted, and nothing else.
- ``redis_url`` (function): ``redis_target.store_url``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["RedisServer", "RedisTarget", "free_port", "redis_server", "redis_target", "redis_url"]

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def free_port() -> int:
    """A loopback TCP port nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
            # a server with requirepass answers NOAUTH: up all the same
            return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port``; ``extra_args`` are appended to its command line."""

    def __init__(self, port: int | None = None, extra_args: tuple[str, ...] = (), binary: str | None = None) -> None:
        self.binary = binary or shutil.which("redis-server") or "redis-server"
        self.port = port or free_port()
        self.extra_args = tuple(extra_args)
        self.dir = Path(tempfile.mkdtemp(prefix="llm-cache-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"RedisServer({self.url}, running={self.running})"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> RedisServer:
        """Start the server; returns once it answers PING (at most START_TIMEOUT seconds)."""
        if self.running:
            return self
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"redis-server exited with {code} on port {self.port}:\n{self.log[-2000:]}")
            if _ping(self.port):
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port} within {START_TIMEOUT} s")

    def stop(self) -> None:
        """Terminate (SIGTERM), wait, then SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL: a crash, no shutdown."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL)
        process.wait(STOP_TIMEOUT)

    def restart(self) -> RedisServer:
        """Stop (if running) and start again on the same port; the data is gone."""
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@dataclass
class RedisTarget:
    """A test's own corner of the shared server: a URL and a key prefix no other test uses."""

    server: RedisServer
    prefix: str
    _opened: list[Any] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def store_url(self) -> str:
        """The store URL with this prefix, as ``--llm-cache-store`` takes it."""
        return f"{self.url}?prefix={self.prefix}"

    def store(self, **kwargs: Any) -> Any:
        """A ``RedisStore`` on this prefix (``RedisStore.from_url`` keywords: ttl, grace, lock_expiry)."""
        from llm_cache.stores.redis import RedisStore

        query = "&timeout=" + str(kwargs.pop("timeout")) if "timeout" in kwargs else ""
        store = RedisStore.from_url(self.store_url + query, **kwargs)
        self._opened.append(store)
        return store

    def client(self, **kwargs: Any) -> Any:
        """A plain redis-py client on the server (bytes replies unless told otherwise)."""
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5, **kwargs)
        self._opened.append(client)
        return client

    def keys(self) -> list[bytes]:
        """The keys under this prefix."""
        client = self.client()
        return sorted(client.scan_iter(match=_glob_escape(self.prefix) + "*", count=1000))

    def cleanup(self) -> None:
        for opened in reversed(self._opened):
            try:
                opened.close()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        self._opened.clear()
        if not self.server.running:
            return
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
        try:
            names = list(client.scan_iter(match=_glob_escape(self.prefix) + "*", count=1000))
            for start in range(0, len(names), 1000):
                client.delete(*names[start : start + 1000])
        except redis.RedisError:
            pass
        finally:
            client.close()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def require_redis_server() -> str:
    """The redis-server binary; skips (or fails, with LLM_CACHE_REQUIRE_REDIS=1) without one."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("LLM_CACHE_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is required (LLM_CACHE_REQUIRE_REDIS=1) but is not on PATH")
        pytest.skip("no redis-server here")
    try:
        import redis  # noqa: F401
    except ImportError:
        if os.environ.get("LLM_CACHE_REQUIRE_REDIS") == "1":
            pytest.fail("redis-py is required (LLM_CACHE_REQUIRE_REDIS=1): pip install 'pytest-llm-cache[redis]'")
        pytest.skip("no redis-py here")
    return binary


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server for the whole session (each xdist worker gets its own)."""
    binary = require_redis_server()
    with RedisServer(binary=binary) as server:
        yield server


@pytest.fixture
def redis_target(redis_server: RedisServer) -> Iterator[RedisTarget]:
    """This test's own key prefix on the shared server; its keys are deleted afterwards."""
    if not redis_server.running:  # a test killed it
        redis_server.start()
    target = RedisTarget(redis_server, f"llm-cache-test:{uuid.uuid4().hex[:12]}:")
    try:
        yield target
    finally:
        target.cleanup()


@pytest.fixture
def redis_url(redis_target: RedisTarget) -> str:
    """A store URL (``redis://127.0.0.1:PORT/0?prefix=...``) with this test's own prefix."""
    return redis_target.store_url
