"""The plugin on the engine: patched once per session, threads covered, markers merged."""

from __future__ import annotations

import json

import pytest
from conftest import Project

ONCE_CONFTEST = '''
import json, os
import pytest
import httpx2

ORIGINAL = httpx2.HTTPTransport.handle_request
SEEN = []

def pytest_configure(config):
    import llm_cache.adapters.vcr as vcr_adapter
    real = vcr_adapter.install
    def counting():
        SEEN.append("install")
        return real()
    vcr_adapter.install = counting
    config._llm_cache_real_install = (vcr_adapter, real)

@pytest.fixture
def seen():
    return SEEN

def pytest_unconfigure(config):
    module, real = config._llm_cache_real_install
    module.install = real
    out = os.path.join(os.environ["LLM_TEST_OUT"], "once.json")
    with open(out, "w") as f:
        json.dump({"installs": SEEN.count("install"),
                   "restored": httpx2.HTTPTransport.handle_request is ORIGINAL}, f)
'''

ONCE_TESTS = '''
import httpx2
from conftest import chat, ORIGINAL

def test_a(client, llm_cache, save):
    chat(client, "first")
    save("a", httpx2.HTTPTransport.handle_request is ORIGINAL)

def test_b_not_using_the_cache(save):
    import os
    with httpx2.Client() as c:
        c.post(os.environ["FAKE_LLM_URL"] + "/v1/chat/completions",
               json={"model": "gpt-4o", "messages": [{"role": "user", "content": "bypass"}]})
    save("b", httpx2.HTTPTransport.handle_request is ORIGINAL)

def test_c(client, llm_cache):
    chat(client, "second")
'''


def test_transports_are_patched_once_per_session_and_restored_at_its_end(project: Project) -> None:
    project.pytester.makeconftest(_conftest(project) + ONCE_CONFTEST)
    project.pytester.makepyfile(test_once=ONCE_TESTS)
    project.run("--llm-cache=record").assert_outcomes(passed=3)
    once = json.loads((project.out / "once.json").read_text())
    assert once == {"installs": 1, "restored": True}
    # between intercepted tests the patches stay, and a test without the cache goes straight through
    assert project.result("a") is False and project.result("b") is False
    assert project.server.count() == 3
    assert len(project.files()) == 2  # the bypassing request was not recorded


def _conftest(project: Project) -> str:
    return (project.pytester.path / "conftest.py").read_text()


THREADS = '''
import threading
from conftest import chat

def test_threads(client, llm_cache, save):
    out = []
    threads = [threading.Thread(target=lambda: out.append(chat(client, "from a thread").choices[0].message.content))
               for _ in range(2)]
    for t in threads:
        t.start(); t.join()
    save("threads", out)
'''


def test_threads_a_test_starts_are_answered_from_its_scope(project: Project) -> None:
    project.pytester.makepyfile(test_threads=THREADS)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    assert project.server.count() == 1
    project.run().assert_outcomes(passed=1)
    assert project.server.count() == 1
    assert len(project.result("threads")) == 2


MERGED = '''
import pytest
from conftest import chat

pytestmark = pytest.mark.llm_cache(ignore_fields=["temperature"], ttl="never")

@pytest.mark.llm_cache(ignore_fields=["seed"])
class TestMerged:
    @pytest.mark.llm_cache(ttl="1h")
    def test_one(self, client, llm_cache, save):
        chat(client, "merged", temperature=0.1, seed=1)
        chat(client, "merged", temperature=0.9, seed=2)
        save("stats", [llm_cache.stats.hits, llm_cache.stats.recorded, str(llm_cache.ttl)])
'''


def test_markers_merge_over_module_class_and_function(project: Project) -> None:
    project.pytester.makepyfile(test_merged=MERGED)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    # both ignore_fields apply (module's and class's), the function's ttl wins over the module's
    assert project.result("stats") == [1, 1, "1:00:00"]
    (cassette,) = project.files()
    text = cassette.read_text()
    assert "- temperature" in text and "- seed" in text


NOT_USING = '''
def test_plain():
    assert 1 + 1 == 2
'''

MODULES_CONFTEST = '''
import json, os, sys

def pytest_unconfigure(config):  # after the plugin's session end
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("vcr", "httpx", "httpx2", "requests", "urllib3", "yaml", "filelock"))
    ours = sorted(m for m in sys.modules if m.startswith("llm_cache"))
    pm = config.pluginmanager
    loaded = pm.hasplugin("llm_cache") or pm.hasplugin("llm_cache.pytest.plugin")
    with open(os.environ["MODULES_OUT"], "w") as f:
        json.dump({"heavy": heavy, "plugin": loaded, "ours": ours}, f)
'''

# What a run whose tests do not use the cache loads of the plugin: its hooks and the
# settings they check (the parsers, the key rules, the cap, the host patterns), nothing
# that makes keys, reads cassettes, redacts, parses markers or serves requests.
STARTUP_MODULES = {
    "llm_cache", "llm_cache.pytest", "llm_cache.pytest.plugin", "llm_cache.pytest.run",
    "llm_cache.settings", "llm_cache.values", "llm_cache.errors", "llm_cache.modes",
    "llm_cache.atomic", "llm_cache.hosts", "llm_cache.keyrules", "llm_cache.policy",
}


@pytest.mark.parametrize("ini", ["", "llm_cache_ttl = 2d\nllm_cache_max_size = 5MB\nllm_cache_ignore_fields = seed\n"])
def test_a_run_whose_tests_do_not_use_the_cache_imports_nothing_heavy(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ini: str
) -> None:
    out = pytester.path / "modules.json"
    monkeypatch.setenv("MODULES_OUT", str(out))
    pytester.makeini("[pytest]\n" + ini)
    pytester.makeconftest(MODULES_CONFTEST)
    pytester.makepyfile(test_plain=NOT_USING)
    # only this plugin: other installed plugins (langsmith's, say) may import HTTP clients themselves
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "llm_cache.pytest.plugin")
    result.assert_outcomes(passed=1)
    data = json.loads(out.read_text())
    assert (data["heavy"], data["plugin"]) == ([], True)
    assert set(data["ours"]) <= STARTUP_MODULES, sorted(set(data["ours"]) - STARTUP_MODULES)


PACED = '''
import time
import httpx2, os

def test_paced(llm_cache, save):
    started = time.perf_counter()
    times = []
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "a b c d e f"}]}
    with httpx2.Client() as c, c.stream("POST", os.environ["FAKE_LLM_URL"] + "/v1/chat/completions", json=body) as r:
        for _ in r.iter_raw():
            times.append(time.perf_counter() - started)
    save("times", times)
'''


def test_replay_timing_recorded_from_ini_paces_the_events(project: Project) -> None:
    project.server.event_delay = 0.1
    project.pytester.makepyfile(test_paced=PACED)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    live = project.result("times")
    project.pytester.makeini("[pytest]\nllm_cache_replay_timing = recorded\n")
    project.run().assert_outcomes(passed=1)
    paced = project.result("times")
    assert len(paced) == len(live) > 3
    assert paced[0] < 0.3 and paced[-1] >= 0.8 * (live[-1] - live[0]), (paced, live)
