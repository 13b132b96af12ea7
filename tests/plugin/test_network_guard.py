"""The network guard: connections no patched client made are refused in replay, listed in record."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from conftest import Project
from redis_server import RedisTarget

# A client the cache cannot see: HTTP/1.1 over its own socket, as a vendored transport does.
RAWHTTP = '''
import asyncio, os, socket
from urllib.parse import urlsplit

def target(host=None):
    url = urlsplit(os.environ["FAKE_LLM_URL"])
    return host or url.hostname, url.port

def raw_get(host=None, path="/v1/models"):
    name, port = target(host)
    with socket.create_connection((name, port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\\r\\nHost: {name}:{port}\\r\\nConnection: close\\r\\n\\r\\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.split(b"\\r\\n", 1)[0].decode()

async def araw_get(path="/v1/models"):
    name, port = target()
    reader, writer = await asyncio.open_connection(name, port)
    writer.write(f"GET {path} HTTP/1.1\\r\\nHost: {name}:{port}\\r\\nConnection: close\\r\\n\\r\\n".encode())
    data = await reader.read()
    writer.close()
    return data.split(b"\\r\\n", 1)[0].decode()
'''

RAW_TEST = """
from rawhttp import raw_get
def test_raw(llm_cache):
    assert raw_get() == "HTTP/1.1 200 OK"
"""

# Let through, while another loopback address (refused by the server's socket when
# nothing guards it) is blocked: the guard is there, and lets this one pass.
RAW_ALLOWED_TEST = """
import pytest
from rawhttp import raw_get
from llm_cache import NetworkBlocked
def test_raw(llm_cache):
    with pytest.raises(NetworkBlocked):
        raw_get("127.0.0.2")
    assert raw_get() == "HTTP/1.1 200 OK"
"""

NONE = "[pytest]\nllm_cache_allowed_hosts = none\n"


def _port(project: Project) -> int:
    port = urlsplit(project.server.url).port
    assert port is not None
    return port


@pytest.fixture
def raw(project: Project) -> Project:
    project.pytester.makepyfile(rawhttp=RAWHTTP)
    return project


@pytest.mark.all_xdist_modes
def test_replay_refuses_a_raw_socket_and_the_server_sees_nothing(raw: Project) -> None:
    raw.pytester.makeini(NONE)
    raw.pytester.makepyfile(test_raw=RAW_TEST)
    result = raw.run()
    result.assert_outcomes(failed=1)
    assert raw.server.count() == 0
    port = _port(raw)
    result.stdout.fnmatch_lines(
        [
            f"E*NetworkBlocked: connection to 127.0.0.1:{port} blocked in replay mode",
            "E*  test: test_raw.py::test_raw",
            (
                "E*  why:  it was not made through a client the cache can see: the cache cannot replay it,"
                " and a replay never reaches the network"
            ),
            (
                "E*  fix:  record it through a client the cache can see (openai, anthropic, httpx, httpx2,"
                ' requests, aiohttp; README "How requests are intercepted")'
            ),
            (
                "E*   or:  allow the host with --llm-cache-allow-host=127.0.0.1 or llm_cache_allowed_hosts"
                ' (README "Network guard")'
            ),
        ],
        consecutive=True,
    )


@pytest.mark.all_xdist_modes
def test_record_lets_it_through_and_lists_it_as_unseen(raw: Project) -> None:
    raw.pytester.makeini(NONE)
    raw.pytester.makepyfile(test_raw=RAW_TEST)
    report = raw.pytester.path / "report.json"
    result = raw.run("--llm-cache=record", f"--llm-cache-report={report}")
    result.assert_outcomes(passed=1)
    assert raw.server.count() == 1
    port = _port(raw)
    result.stdout.fnmatch_lines(
        [
            "unseen (1): connections the cache could not see, nothing of them recorded",
            f"  127.0.0.1:{port}  test_raw.py::test_raw",
            "make them through a client the cache can see, or allow their hosts with llm_cache_allowed_hosts",
        ],
        consecutive=True,
    )
    assert json.loads(report.read_text())["unseen"] == [
        {"host": f"127.0.0.1:{port}", "test_id": "test_raw.py::test_raw"}
    ]
    assert raw.files() == []


def test_patched_clients_pass_the_guard_recorded_and_served(raw: Project) -> None:
    # Through the patched transports (httpx2 sync and async, requests over vcrpy's stubs),
    # connections to a host that is not allowed are the cache's own: recorded, never
    # listed as unseen; replayed without connecting; only the raw socket is refused.
    raw.pytester.makeini(NONE)
    raw.pytester.makepyfile(
        test_mixed="""
import asyncio, os, pytest, requests
from conftest import chat
from rawhttp import raw_get
from llm_cache import NetworkBlocked

def test_clients(client, aclient, llm_cache):
    chat(client, "sync")
    asyncio.run(aclient.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "async"}]))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "requests"}]}
    assert requests.post(os.environ["FAKE_LLM_URL"] + "/v1/chat/completions", json=body, timeout=5).ok
    if llm_cache.mode.value == "replay":
        with pytest.raises(NetworkBlocked):
            raw_get()
"""
    )
    report = raw.pytester.path / "report.json"
    recorded = raw.run("--llm-cache=record", f"--llm-cache-report={report}")
    recorded.assert_outcomes(passed=1)
    recorded.stdout.no_fnmatch_line("unseen*")
    assert json.loads(report.read_text())["unseen"] == []
    assert len(raw.files()) == 3
    raw.server.calls.clear()

    replayed = raw.run()
    replayed.assert_outcomes(passed=1)
    replayed.stdout.fnmatch_lines(["hits: 3   misses: 0*"])
    assert raw.server.count() == 0


def test_loopback_is_allowed_by_default(raw: Project) -> None:
    raw.pytester.makepyfile(test_raw=RAW_ALLOWED_TEST)
    raw.run().assert_outcomes(passed=1)
    assert raw.server.count() == 1


@pytest.mark.parametrize(
    ("ini", "args", "outcome"),
    [
        pytest.param("none", ["--llm-cache-allow-host=127.0.0.1"], "passed", id="cli-adds-to-none"),
        pytest.param("localhost", ["--llm-cache-allow-host=127.0.0.1"], "passed", id="cli-adds"),
        pytest.param("127.0.0.1:{port}", [], "passed", id="host-and-its-port"),
        pytest.param("127.0.0.1:1", [], "failed", id="host-on-another-port"),
        pytest.param("localhost", [], "failed", id="a-name-does-not-cover-an-address-never-resolved-from-it"),
        pytest.param("127.*.1", [], "passed", id="glob"),
        pytest.param("", ["--llm-cache-allow-host=none"], "failed", id="cli-none-drops-the-defaults"),
    ],
)
def test_allowed_hosts(raw: Project, ini: str, args: list[str], outcome: str) -> None:
    raw.pytester.makeini("[pytest]\nllm_cache_allowed_hosts = " + ini.format(port=_port(raw)) + "\n")
    raw.pytester.makepyfile(test_raw=RAW_ALLOWED_TEST if outcome == "passed" else RAW_TEST)
    raw.run(*args).assert_outcomes(**{outcome: 1})
    assert raw.server.count() == (1 if outcome == "passed" else 0)


def test_a_name_is_matched_when_the_connection_was_resolved_from_it(raw: Project) -> None:
    raw.pytester.makeini("[pytest]\nllm_cache_allowed_hosts = localhost\n")
    raw.pytester.makepyfile(
        test_raw="""
import pytest
from rawhttp import raw_get
from llm_cache import NetworkBlocked
def test_raw(llm_cache):
    with pytest.raises(NetworkBlocked):
        raw_get("127.0.0.1")
    assert raw_get("localhost") == "HTTP/1.1 200 OK"
"""
    )
    raw.run().assert_outcomes(passed=1)
    assert raw.server.count() == 1


def test_block_network_false_lets_it_through_and_lists_it(raw: Project) -> None:
    raw.pytester.makeini(NONE + "llm_cache_block_network = false\n")
    raw.pytester.makepyfile(test_raw=RAW_TEST)
    result = raw.run()
    result.assert_outcomes(passed=1)
    assert raw.server.count() == 1
    result.stdout.fnmatch_lines([f"  127.0.0.1:{_port(raw)}  test_raw.py::test_raw"])


def test_unix_sockets_threads_and_asyncio(raw: Project) -> None:
    raw.pytester.makeini(NONE)
    raw.pytester.makepyfile(
        test_kinds="""
import asyncio, os, socket, tempfile, threading, pytest
from rawhttp import araw_get, raw_get
from llm_cache import NetworkBlocked

def test_unix_socket_is_allowed_tcp_is_not(llm_cache):
    path = os.path.join(tempfile.mkdtemp(), "s")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    client.close()
    server.close()
    with pytest.raises(NetworkBlocked):
        raw_get()

def test_a_thread_of_the_test_is_guarded(llm_cache):
    caught = []
    def run():
        try:
            raw_get()
        except NetworkBlocked as exc:
            caught.append(exc)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert [e.test_id for e in caught] == ["test_kinds.py::test_a_thread_of_the_test_is_guarded"]

def test_asyncio_connections_are_guarded(llm_cache):
    with pytest.raises(NetworkBlocked):
        asyncio.run(araw_get())

def test_connect_ex_is_guarded(llm_cache):
    host, port = os.environ["FAKE_LLM_URL"].rsplit("/", 1)[-1].split(":")
    sock = socket.socket()
    with pytest.raises(NetworkBlocked):
        sock.connect_ex((host, int(port)))
    sock.close()
"""
    )
    raw.run().assert_outcomes(passed=4)
    assert raw.server.count() == 0


def test_tests_without_the_cache_are_never_guarded(raw: Project) -> None:
    raw.pytester.makeini(NONE)
    raw.pytester.makepyfile(
        test_order="""
import asyncio, pytest
from rawhttp import araw_get, raw_get
from llm_cache import NetworkBlocked

def test_first_with_the_cache(llm_cache):
    with pytest.raises(NetworkBlocked):
        raw_get()

def test_failing_with_the_cache(llm_cache):
    raw_get()

def test_then_without():
    assert raw_get() == "HTTP/1.1 200 OK"
    assert asyncio.run(araw_get()) == "HTTP/1.1 200 OK"
"""
    )
    raw.run("-p", "no:randomly").assert_outcomes(passed=2, failed=1)
    assert raw.server.count() == 2


def test_unseen_connections_of_workers_are_merged(raw: Project) -> None:
    raw.pytester.makeini(NONE)
    for name in ("a", "b", "c", "d"):
        raw.pytester.makepyfile(**{f"test_{name}": RAW_TEST})
    report = raw.pytester.path / "report.json"
    result = raw.run("-n", "2", "--llm-cache=record", f"--llm-cache-report={report}")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["unseen (4): *"])
    unseen = json.loads(report.read_text())["unseen"]
    assert sorted(u["test_id"] for u in unseen) == [f"test_{n}.py::test_raw" for n in "abcd"]
    assert {u["host"] for u in unseen} == {f"127.0.0.1:{_port(raw)}"}


@pytest.mark.parametrize(
    ("ini", "args", "message"),
    [
        ("llm_cache_allowed_hosts = http://example.com/", [], "llm_cache_allowed_hosts must be hosts or host:port*"),
        ("llm_cache_allowed_hosts =\n    none\n    localhost", [], "llm_cache_allowed_hosts must be * or the single word none*"),
        ("", ["--llm-cache-allow-host=example.com:http"], "--llm-cache-allow-host must be hosts or host:port*"),
        ("", ["--llm-cache-allow-host="], "--llm-cache-allow-host must be hosts or host:port*, or none, got ''"),
        ("llm_cache_allowed_hosts = *:*:*", [], "llm_cache_allowed_hosts must be hosts or host:port*"),
        ("llm_cache_block_network = sometimes", [], "llm_cache_block_network must be true or false, got 'sometimes'"),
    ],
)
def test_bad_values_stop_the_run(raw: Project, ini: str, args: list[str], message: str) -> None:
    raw.pytester.makeini("[pytest]\n" + ini + "\n")
    raw.pytester.makepyfile(test_raw=RAW_TEST)
    result = raw.run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_the_cache_own_redis_store_is_never_blocked(project: Project, redis_target: RedisTarget) -> None:
    project.pytester.makeini(NONE)
    project.pytester.makepyfile(
        test_r="""
import os, socket, pytest
from conftest import chat
from llm_cache import NetworkBlocked
def test_it(client, llm_cache):
    if llm_cache.mode.value == "replay":
        with pytest.raises(NetworkBlocked):  # the guard is on
            socket.create_connection(("127.0.0.2", int(os.environ["FAKE_LLM_URL"].rsplit(":", 1)[1])))
    # a dropped connection is made again inside the guarded test
    llm_cache.session.store.client.connection_pool.disconnect()
    assert chat(client, "stored in redis").choices[0].message.content == "echo: stored in redis"
"""
    )
    store = f"--llm-cache-store={redis_target.store_url}"
    project.run("--llm-cache=record", store).assert_outcomes(passed=1)
    project.run(store).assert_outcomes(passed=1)
    assert project.server.count() == 1
