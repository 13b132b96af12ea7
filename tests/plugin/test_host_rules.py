"""Host rules: ignored hosts and llm_cache_hosts pass through uncached; a miss names its host."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from conftest import Project

# httpx2 straight at the local server: a chat completion and a model list.
CALLS = """
import os, httpx2

def url(host="127.0.0.1"):
    return os.environ["FAKE_LLM_URL"].replace("127.0.0.1", host)

def test_calls(llm_cache):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
    assert httpx2.post(url() + "/v1/chat/completions", json=body).status_code == 200
    assert httpx2.get(url() + "/v1/models").status_code == 200
"""


def _port(project: Project) -> int:
    port = urlsplit(project.server.url).port
    assert port is not None
    return port


@pytest.mark.parametrize("pattern", ["127.0.0.1", "127.0.0.*", "127.0.0.1:{port}"])
def test_ignored_hosts_are_neither_recorded_nor_replayed(project: Project, pattern: str) -> None:
    project.pytester.makeini(f"[pytest]\nllm_cache_ignore_hosts = {pattern.format(port=_port(project))}\n")
    project.pytester.makepyfile(test_calls=CALLS)
    recorded = project.run("--llm-cache=record")
    recorded.assert_outcomes(passed=1)
    recorded.stdout.fnmatch_lines(["hits: 0   misses: 0   recorded: 0*"])
    assert project.files() == []
    assert project.server.count() == 2

    project.run().assert_outcomes(passed=1)  # replay: both went to the server again
    assert project.server.count() == 4


def test_an_ignore_rule_covers_its_host_and_port_only(project: Project) -> None:
    port = _port(project)
    project.pytester.makeini(f"[pytest]\nllm_cache_ignore_hosts =\n    127.0.0.1:1\n    localhost:{port}\n")
    project.pytester.makepyfile(
        test_calls="""
import os, httpx2
def test_calls(llm_cache):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
    base = os.environ["FAKE_LLM_URL"]
    assert httpx2.post(base.replace("127.0.0.1", "localhost") + "/v1/chat/completions", json=body).status_code == 200
    httpx2.post(base + "/v1/chat/completions", json=body)
"""
    )
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E*CacheMiss: no cassette for POST /v1/chat/completions*"])
    assert project.server.count() == 1


def test_ignored_hosts_pass_the_network_guard(project: Project) -> None:
    project.pytester.makeini("[pytest]\nllm_cache_allowed_hosts = none\nllm_cache_ignore_hosts = 127.0.0.1\n")
    project.pytester.makepyfile(
        test_raw="""
import os, socket, pytest, httpx2
from llm_cache import NetworkBlocked

def test_raw(llm_cache):
    port = int(os.environ["FAKE_LLM_URL"].rsplit(":", 1)[1])
    with pytest.raises(NetworkBlocked):  # the guard is on: another address is refused
        socket.create_connection(("127.0.0.2", port), timeout=5)
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert httpx2.get(os.environ["FAKE_LLM_URL"] + "/v1/models").status_code == 200
"""
    )
    project.run().assert_outcomes(passed=1)
    assert project.server.count() == 1


def test_only_the_hosts_listed_are_intercepted(project: Project) -> None:
    port = _port(project)
    project.pytester.makeini(f"[pytest]\nllm_cache_hosts = 127.0.0.1:{port}\n")
    project.pytester.makepyfile(
        test_calls="""
import os, httpx2

def test_calls(llm_cache):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
    base = os.environ["FAKE_LLM_URL"]
    assert httpx2.post(base + "/v1/chat/completions", json=body).status_code == 200
    other = base.replace("127.0.0.1", "localhost")  # not listed: passes through
    assert httpx2.post(other + "/v1/chat/completions", json=body).status_code == 200
"""
    )
    project.run("--llm-cache=record").stdout.fnmatch_lines(["hits: 0   misses: 0   recorded: 1*"])
    assert len(project.files()) == 1
    assert project.server.count() == 2

    project.run().stdout.fnmatch_lines(["hits: 1   misses: 0   recorded: 0*"])
    assert project.server.count() == 3


def test_hosts_outside_llm_cache_hosts_pass_the_network_guard(project: Project) -> None:
    project.pytester.makeini("[pytest]\nllm_cache_allowed_hosts = none\nllm_cache_hosts = 127.0.0.2\n")
    project.pytester.makepyfile(
        test_raw="""
import os, socket, pytest, httpx2
from llm_cache import NetworkBlocked

def test_raw(llm_cache):
    port = int(os.environ["FAKE_LLM_URL"].rsplit(":", 1)[1])
    with pytest.raises(NetworkBlocked):  # a listed host is guarded
        socket.create_connection(("127.0.0.2", port), timeout=5)
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
    assert httpx2.post(os.environ["FAKE_LLM_URL"] + "/v1/chat/completions", json=body).status_code == 200
"""
    )
    project.run().assert_outcomes(passed=1)
    assert project.server.count() == 1
    assert project.files() == []


def test_a_miss_names_its_host(project: Project) -> None:
    project.pytester.makepyfile(test_calls=CALLS)
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E*CacheMiss: no cassette for POST /v1/chat/completions (model gpt-4o) in replay mode",
            f"E*  host:      127.0.0.1:{_port(project)}",
            "E*  key:       [0-9a-f]*",
        ],
        consecutive=True,
    )
    result.stdout.fnmatch_lines(["E*  fix: record it with --llm-cache=record (or LLM_CACHE_MODE=record)"])
    result.stdout.no_fnmatch_line("*not an LLM API call*")


@pytest.mark.parametrize(
    ("call", "endpoint", "why"),
    [
        ('httpx2.get(url + "/encodings/cl100k_base.tiktoken")', "GET /encodings/cl100k_base.tiktoken",
         "it is a GET of a file"),
        ('httpx2.get(url + "/v1/models")', "GET /v1/models", "it is a GET"),
        ('httpx2.post(url + "/v1/upload", json={"name": "x"})', "POST /v1/upload",
         "it has no JSON body naming a model"),
    ],
)
def test_a_miss_that_is_no_llm_call_says_how_to_ignore_its_host(
    project: Project, call: str, endpoint: str, why: str
) -> None:
    project.pytester.makepyfile(
        test_get=f"""
import os, httpx2
def test_get(llm_cache):
    url = os.environ["FAKE_LLM_URL"]
    {call}
"""
    )
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"E*CacheMiss: no cassette for {endpoint} (model -) in replay mode",
            f"E*  host:      127.0.0.1:{_port(project)}",
            "E*  key:       [0-9a-f]*",
            "E*  looked in: *",
            "E*  closest:   *",
            f"E*  not an LLM API call? {why}",
            'E*  fix: let its host through with llm_cache_ignore_hosts = 127.0.0.1 (README "Non-LLM requests")',
            "E*   or: record it with --llm-cache=record (or LLM_CACHE_MODE=record)",
        ],
        consecutive=True,
    )
    assert project.server.count() == 0


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ("llm_cache_ignore_hosts = https://example.com/x", "llm_cache_ignore_hosts must be hosts or host:port*"),
        ("llm_cache_hosts = api.openai.com:443:1", "llm_cache_hosts must be hosts or host:port*"),
        ("llm_cache_hosts = [::1]8080", "llm_cache_hosts must be hosts or host:port*"),
    ],
)
def test_bad_host_rules_stop_the_run(project: Project, ini: str, message: str) -> None:
    project.pytester.makeini("[pytest]\n" + ini + "\n")
    project.pytester.makepyfile(test_calls=CALLS)
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
