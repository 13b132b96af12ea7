"""Fixtures shared by the suite: the local LLM API server and pytester projects that call it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from fakeapi import FakeLLMServer  # noqa: E402
from redis_server import redis_server, redis_target, redis_url  # noqa: E402, F401 - fixtures
from redis_cluster import cluster_target, cluster_url, redis_cluster  # noqa: E402, F401 - fixtures

# Imported here so that pytester's in-process runs, which restore sys.modules
# after each run, do not import the SDKs again every time (about 1 s each).
import anthropic  # noqa: E402, F401
import httpx  # noqa: E402, F401
# httpx and httpx2 import their cores lazily: loaded here, so that an inner pytester run
# cannot unload them and leave the clients mapping errors of another module's classes
import httpcore  # noqa: E402, F401
import httpcore2  # noqa: E402, F401
import openai  # noqa: E402, F401
import requests  # noqa: E402, F401
import yaml  # noqa: E402, F401 - PyYAML re-imported beside its loaded C extension cannot load
import llm_cache.adapters.vcr  # noqa: E402, F401 - vcrpy and its stubs, loaded once, not per inner run

# The conftest every pytester project gets: SDK clients pointed at the local
# server, and `save(name, value)` to hand results back to the outer test.
PROJECT_CONFTEST = '''
import json, os
import pytest

def _base():
    return os.environ["FAKE_LLM_URL"]

@pytest.fixture
def client():
    import openai
    return openai.OpenAI(base_url=_base() + "/v1", api_key=os.environ.get("OPENAI_API_KEY", "sk-test-0000000000"), max_retries=0)

@pytest.fixture
def aclient():
    import openai
    return openai.AsyncOpenAI(base_url=_base() + "/v1", api_key=os.environ.get("OPENAI_API_KEY", "sk-test-0000000000"), max_retries=0)

@pytest.fixture
def anthropic_client():
    import anthropic
    return anthropic.Anthropic(base_url=_base(), api_key=os.environ.get("ANTHROPIC_API_KEY", "sk-ant-test-000000"), max_retries=0)

@pytest.fixture
def save(request):
    def _save(name, value):
        out = os.path.join(os.environ["LLM_TEST_OUT"], name + ".json")
        with open(out, "w") as f:
            json.dump(value, f, sort_keys=True, default=str)
    return _save

def chat(client, text, **kw):
    return client.chat.completions.create(model=kw.pop("model", "gpt-4o"), messages=[{"role": "user", "content": text}], **kw)
'''


@pytest.fixture(scope="session")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture
def fake_api(server: FakeLLMServer) -> Iterator[FakeLLMServer]:
    """The shared server, reset to its defaults for this test."""
    server.snapshot, server.fingerprint, server.generation = "2024-08-06", "fp_aaa111", 0
    server.calls.clear()
    server.event_delay = 0.0
    server.fail_status = None
    yield server


# Plugin scenarios in modules marked `all_xdist_modes` run three times: without
# pytest-xdist, with -n 0 and with -n 2 (workers in subprocesses).
XDIST_MODES = {"no-xdist": (), "n0": ("-n", "0"), "n2": ("-n", "2")}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--stress", action="store_true", default=False,
        help="run the reliability tests at full size (many kills, more processes and examples); slow",
    )


@pytest.fixture(scope="session")
def stress(request: pytest.FixtureRequest) -> bool:
    """True under --stress: reliability tests use their long sizes."""
    return bool(request.config.getoption("--stress"))


@pytest.fixture(autouse=True)
def _not_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs alike on a developer's machine and in CI: what CI changes in the
    plugin (no parsed copies unless asked for) is tested by setting it where a test wants it.
    The outer pytest keeps its own CI behaviour (whole messages in its summary)."""
    from llm_cache.settings import CI_VARIABLES

    for name in ("CI", *CI_VARIABLES):
        monkeypatch.delenv(name, raising=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "all_xdist_modes: run this module's pytester scenarios under no xdist, -n 0 and -n 2")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "project" in metafunc.fixturenames and metafunc.definition.get_closest_marker("all_xdist_modes"):
        metafunc.parametrize("xdist_mode", list(XDIST_MODES), indirect=True)


@pytest.fixture
def xdist_mode(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return XDIST_MODES[getattr(request, "param", "no-xdist")]


class Project:
    """A pytester project whose tests call the local server; runs chain (record, then replay)."""

    def __init__(
        self, pytester: pytest.Pytester, server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch,
        xdist_mode: tuple[str, ...] = (),
    ) -> None:
        self.xdist_mode = xdist_mode
        self.pytester = pytester
        self.server = server
        self.out = pytester.path / "_out"
        self.out.mkdir()
        monkeypatch.setenv("FAKE_LLM_URL", server.url)
        monkeypatch.setenv("LLM_TEST_OUT", str(self.out))
        monkeypatch.delenv("LLM_CACHE_MODE", raising=False)
        pytester.makeconftest(PROJECT_CONFTEST)

    @property
    def cassettes(self) -> Path:
        return self.pytester.path / "cassettes"

    def files(self) -> list[Path]:
        return sorted(self.cassettes.rglob("*.yaml")) if self.cassettes.exists() else []

    def run(self, *args: str) -> pytest.RunResult:
        # Plugins the inner runs do not need would be imported again on every run.
        mode = () if "-n" in args else self.xdist_mode
        return self.pytester.runpytest(
            "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:anyio",
            # langchain-core brings langsmith, whose pytest plugin costs each run about 0.7 s
            "-p", "no:langsmith_plugin", *mode, *args
        )

    def result(self, name: str) -> Any:
        return json.loads((self.out / f"{name}.json").read_text())

    def clear_results(self) -> None:
        for path in self.out.iterdir():
            path.unlink()


@pytest.fixture
def project(
    pytester: pytest.Pytester, fake_api: FakeLLMServer, monkeypatch: pytest.MonkeyPatch, xdist_mode: tuple[str, ...]
) -> Project:
    return Project(pytester, fake_api, monkeypatch, xdist_mode)
