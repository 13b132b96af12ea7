"""A real Redis Cluster on loopback ports, for the cluster store's tests and benchmarks.

``LocalCluster`` starts ``n`` masters (``redis-server --cluster-enabled yes``,
no persistence, ``127.0.0.1`` only, each in a temporary ``--dir``), optionally
``replicas`` replicas for each, joins them with ``redis-cli --cluster create``
and waits until every node says ``cluster_state:ok``; every wait is bounded.
``kill(port)`` simulates a crash of one node, ``master_of(key)`` names the
master holding a key's slot, ``master_ports()`` the masters. With
``tls=make_tls_files(dir)`` each node also listens with TLS (``tls_url``), and
the nodes talk TLS to each other. Outside pytest::

    from redis_cluster import start_cluster
    url, stop = start_cluster(3)     # redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/
    try: ...
    finally: stop()

or ``with LocalCluster(3) as cluster: cluster.url``.

Fixtures (imported by tests/conftest.py):

- ``redis_cluster`` (session): the shared 3-master cluster. Skips the test when
  there is no ``redis-server`` or ``redis-cli``, unless
  ``LLM_CACHE_REQUIRE_REDIS=1``, which makes it fail.
- ``cluster_target`` (function): a ``ClusterTarget``, this test's own prefix on
  the shared cluster: ``.store_url`` (``redis+cluster://...?prefix=...``),
  ``.prefix``, ``.base`` (``{prefix}``: what every key name begins with),
  ``.store(**kwargs)``, ``.client()`` (a plain ``RedisCluster``) and ``.keys()``.
  After the test the keys under its base are deleted, and nothing else.
- ``cluster_url`` (function): ``cluster_target.store_url``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, final

import pytest
from redis_server import RedisServer, require_redis_server

__all__ = [
    "ClusterTarget", "LocalCluster", "cluster_port", "cluster_target", "cluster_url", "make_tls_files", "redis_cluster",
    "require_redis_cluster", "start_cluster",
]

START_TIMEOUT = 20.0
# how long a node waits for another before calling it failing (and, with replicas, failing over)
NODE_TIMEOUT_MS = 1000


def cluster_port(taken: frozenset[int] | set[int] = frozenset()) -> int:
    """A loopback port free now whose cluster bus port (port + 10000) is free too."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, 22000)  # the port and its bus below the kernel's ephemeral ports
        if port in taken or port + 10000 in taken or port - 10000 in taken:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of loopback ports for a cluster node")


def _cli(binary: str, *args: str, timeout: float = 5.0) -> str:
    done = subprocess.run([binary, *args], check=False, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return done.stdout + done.stderr


@final
class LocalCluster:
    """``masters`` masters (and ``replicas`` replicas of each) on free loopback ports, joined in one cluster.

    ``extra_args`` go to every ``redis-server``, ``cli_args`` to every ``redis-cli``;
    ``scheme`` is the store URL's.
    """

    def __init__(
        self, masters: int = 3, replicas: int = 0, *, extra_args: tuple[str, ...] = (),
        cli_args: tuple[str, ...] = (), scheme: str = "redis+cluster", node_timeout_ms: int = NODE_TIMEOUT_MS,
        tls: Path | None = None,
    ) -> None:
        self.binary = shutil.which("redis-server") or "redis-server"
        self.cli = shutil.which("redis-cli") or "redis-cli"
        self.masters, self.replicas = masters, replicas
        self.cli_args = tuple(cli_args)
        self.scheme = scheme
        args = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                # a replica's first sync at once, not after the default 5 s wait for more replicas
                "--repl-diskless-sync-delay", "0", *extra_args)
        self._args = args
        self.tls_dir = tls
        self._allocate()

    def _allocate(self) -> None:
        """Free ports and a (not started) server for each node."""
        taken: set[int] = set()
        for _ in range(self.masters * (1 + self.replicas)):
            taken.add(cluster_port(taken))
        ports = sorted(taken)
        # with ``tls`` (a directory of make_tls_files): a TLS port beside each plain one, TLS on the bus
        self.tls_ports: dict[int, int] = {}
        for port in ports if self.tls_dir else []:
            self.tls_ports[port] = cluster_port(taken)
            taken.add(self.tls_ports[port])
        self.nodes = [RedisServer(port=port, extra_args=self._args + self._tls_args(self.tls_dir, port),
                                  binary=self.binary) for port in ports]

    def _tls_args(self, tls: Path | None, port: int) -> tuple[str, ...]:
        if tls is None:
            return ()
        return ("--tls-port", str(self.tls_ports[port]), "--tls-cluster", "yes", "--tls-auth-clients", "no",
                "--tls-cert-file", str(tls / "cert.pem"), "--tls-key-file", str(tls / "key.pem"),
                "--tls-ca-cert-file", str(tls / "ca.pem"))

    # -- where ---------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """The store URL naming every node as a startup node (no prefix)."""
        return f"{self.scheme}://" + ",".join(f"127.0.0.1:{port}" for port in self.ports) + "/"

    @property
    def tls_url(self) -> str:
        """The ``rediss+cluster://`` store URL of the TLS ports (a cluster made with ``tls``)."""
        return "rediss+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.tls_ports.values()) + "/"

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def __repr__(self) -> str:
        return f"LocalCluster({self.url}, running={[n.running for n in self.nodes]})"

    # -- life ----------------------------------------------------------------

    def start(self) -> LocalCluster:
        """Start every node, join them, and wait for ``cluster_state:ok`` (at most START_TIMEOUT s)."""
        for attempt in range(3):
            try:
                for node in self.nodes:
                    node.start()
            except RuntimeError:  # a port taken meanwhile by another process: new ports, at most twice
                self.cleanup()
                if attempt == 2:
                    raise
                self._allocate()
                continue
            break
        try:
            self._create()
            self.wait_ok()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _create(self) -> None:
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        out = _cli(self.cli, *self.cli_args, "--cluster", "create", *addresses,
                   "--cluster-replicas", str(self.replicas), "--cluster-yes", timeout=START_TIMEOUT)
        if "[OK] All 16384 slots covered" not in out:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{out[-3000:]}")

    def info(self, port: int) -> dict[str, str]:
        """``CLUSTER INFO`` of one node, as a mapping ({} when it does not answer)."""
        try:
            out = _cli(self.cli, *self.cli_args, "-p", str(port), "cluster", "info", timeout=2)
        except subprocess.TimeoutExpired:
            return {}
        return dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)

    def wait_ok(self, timeout: float = START_TIMEOUT) -> None:
        """Until every running node reports ``cluster_state:ok`` and knows every node."""
        deadline = time.monotonic() + timeout
        running = [node for node in self.nodes if node.running]
        while True:
            infos = [self.info(node.port) for node in running]
            if all(i.get("cluster_state") == "ok" and i.get("cluster_known_nodes") == str(len(self.nodes))
                   for i in infos) and self._replicas_synced(running):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster was not ok within {timeout} s: {infos}")
            time.sleep(0.05)

    def _table(self) -> list[tuple[int, str, list[str]]]:
        """(port, flags, slot ranges) of every node, from ``CLUSTER NODES`` of a running one."""
        rows = []
        for line in _cli(self.cli, *self.cli_args, "-p", str(self._any_port()), "cluster", "nodes").splitlines():
            fields = line.split()
            if len(fields) >= 8:
                rows.append((int(fields[1].split("@")[0].rsplit(":", 1)[1]), fields[2], fields[8:]))
        return rows

    def _replicas_synced(self, running: list[RedisServer]) -> bool:
        """Whether every running replica has its master's data (``master_link_status:up``)."""
        if not self.replicas:
            return True
        for node in running:
            out = _cli(self.cli, *self.cli_args, "-p", str(node.port), "info", "replication", timeout=2)
            if "role:slave" in out and "master_link_status:up" not in out:
                return False
        return True

    def master_ports(self) -> list[int]:
        """The ports of the masters not failing, in port order."""
        return sorted(port for port, flags, _ in self._table() if "master" in flags and "fail" not in flags)

    def master_of(self, key: str, timeout: float = 5.0) -> int:
        """The port of the (not failing) master holding ``key``'s slot; after a failover, once the
        node asked has heard of the promotion (at most ``timeout`` seconds)."""
        slot = int(_cli(self.cli, *self.cli_args, "-p", str(self._any_port()), "cluster", "keyslot", key).split()[0])
        deadline = time.monotonic() + timeout
        while True:
            for port, flags, spans in self._table():
                if "master" not in flags or "fail" in flags:
                    continue
                for span in spans:
                    low, _, high = span.partition("-")
                    if low.isdigit() and int(low) <= slot <= int(high or low):
                        return port
            if time.monotonic() > deadline:
                raise LookupError(f"no master holds slot {slot}")
            time.sleep(0.05)

    def _any_port(self) -> int:
        return next(node.port for node in self.nodes if node.running)

    def kill(self, port: int) -> None:
        """SIGKILL one node: a crash."""
        self.node(port).kill()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def make_tls_files(directory: Path) -> Path:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it, as ``ca.pem``, ``cert.pem`` and
    ``key.pem`` in ``directory`` (needs the ``cryptography`` package); returns ``directory``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = {"not_valid_before": now - datetime.timedelta(minutes=5), "not_valid_after": now + datetime.timedelta(days=1)}
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llm-cache test CA")])
    ca = (x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name, public_key=ca_key.public_key(),
                                  serial_number=x509.random_serial_number(), **valid)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (x509.CertificateBuilder(subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
                                    issuer_name=ca_name, public_key=key.public_key(),
                                    serial_number=x509.random_serial_number(), **valid)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "cert.pem").write_bytes(cert.public_bytes(pem))
    (directory / "key.pem").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    return directory


def start_cluster(n: int = 3, replicas: int = 0) -> tuple[str, Callable[[], None]]:
    """A running cluster of ``n`` masters: its store URL (no prefix) and the callable that stops it."""
    cluster = LocalCluster(n, replicas).start()
    return cluster.url, cluster.cleanup


@dataclass
class ClusterTarget:
    """A test's own prefix on the shared cluster; every key it makes begins with ``base``."""

    cluster: LocalCluster
    prefix: str
    _opened: list[Any] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def base(self) -> str:
        return "{" + self.prefix + "}"

    @property
    def store_url(self) -> str:
        return f"{self.url}?prefix={self.prefix}"

    def store(self, **kwargs: Any) -> Any:
        """A ``RedisStore`` on this prefix (``RedisStore.from_url`` keywords: ttl, grace, lock_expiry)."""
        from llm_cache.stores.redis import RedisStore

        query = "&timeout=" + str(kwargs.pop("timeout")) if "timeout" in kwargs else ""
        store = RedisStore.from_url(self.store_url + query, **kwargs)
        self._opened.append(store)
        return store

    def client(self, **kwargs: Any) -> Any:
        """A plain ``RedisCluster`` client (bytes replies unless told otherwise)."""
        from redis.cluster import ClusterNode, RedisCluster

        client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in self.cluster.ports],
                              socket_timeout=5, socket_connect_timeout=5, **kwargs)
        self._opened.append(client)
        return client

    def keys(self) -> list[bytes]:
        """The keys under this test's base (all in one slot: one master's SCAN)."""
        client = self.client()
        node = client.get_node_from_key(self.base)
        return sorted(client.scan_iter(match=_glob_escape(self.base) + "*", count=1000, target_nodes=node))

    def cleanup(self) -> None:
        for opened in reversed(self._opened):
            with contextlib.suppress(Exception):  # best effort at teardown
                opened.close()
        self._opened.clear()
        if not all(node.running for node in self.cluster.nodes):
            return
        import redis

        with contextlib.suppress(redis.RedisError, redis.exceptions.RedisClusterException):
            names = self.keys()
            client = self._opened[-1]
            for start in range(0, len(names), 1000):
                client.delete(*names[start : start + 1000])
        for opened in self._opened:
            opened.close()
        self._opened.clear()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def require_redis_cluster() -> None:
    """Skips (or fails, with LLM_CACHE_REQUIRE_REDIS=1) without redis-server, redis-cli or redis-py."""
    require_redis_server()
    if shutil.which("redis-cli") is None:
        if os.environ.get("LLM_CACHE_REQUIRE_REDIS") == "1":
            pytest.fail("redis-cli is required (LLM_CACHE_REQUIRE_REDIS=1) but is not on PATH")
        pytest.skip("no redis-cli here (it creates the cluster)")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A 3-master cluster for the whole session (each xdist worker gets its own)."""
    require_redis_cluster()
    with LocalCluster(3) as cluster:
        yield cluster


@pytest.fixture
def cluster_target(redis_cluster: LocalCluster) -> Iterator[ClusterTarget]:
    """This test's own key prefix on the shared cluster; its keys are deleted afterwards."""
    target = ClusterTarget(redis_cluster, f"llm-cache-test:{uuid.uuid4().hex[:12]}:")
    try:
        yield target
    finally:
        target.cleanup()


@pytest.fixture
def cluster_url(cluster_target: ClusterTarget) -> str:
    """A store URL (``redis+cluster://127.0.0.1:P1,...,127.0.0.1:P3/?prefix=...``) with this test's prefix."""
    return cluster_target.store_url
