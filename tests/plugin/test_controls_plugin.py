"""The plugin's interception reads x-llm-cache and marks answers with x-llm-cache-status,
for the SDKs (httpx) and for requests (vcrpy's patches)."""

from __future__ import annotations

import pytest

from conftest import Project

pytestmark = pytest.mark.all_xdist_modes

TESTS = """
import os, requests
from conftest import chat

def test_sdk(client, llm_cache, save):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "sdk"}])
    save("sdk", raw.headers["x-llm-cache-status"])

def test_requests(llm_cache, save):
    r = requests.post(os.environ["FAKE_LLM_URL"] + "/v1/chat/completions",
                      json={"model": "gpt-4o", "messages": [{"role": "user", "content": "requests"}]},
                      headers={"Authorization": "Bearer sk-test-0000000000"})
    save("requests", r.headers["x-llm-cache-status"])

def test_not_kept(client, llm_cache, save):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "private"}],
        extra_headers={"x-llm-cache": "no-store"})
    save("not_kept", raw.headers["x-llm-cache-status"])

def test_not_kept_requests(llm_cache, save):
    r = requests.post(os.environ["FAKE_LLM_URL"] + "/v1/chat/completions",
                      json={"model": "gpt-4o", "messages": [{"role": "user", "content": "private too"}]},
                      headers={"Authorization": "Bearer sk-test-0000000000", "X-LLM-Cache": "no-store"})
    save("not_kept_requests", r.headers["x-llm-cache-status"])
"""


def test_status_and_directives_through_the_plugin(project: Project) -> None:
    project.pytester.makepyfile(test_ctl=TESTS)
    project.run("--llm-cache=record").assert_outcomes(passed=4)
    assert [project.result(n) for n in ("sdk", "requests", "not_kept", "not_kept_requests")] == [
        "miss", "miss", "miss", "miss"]
    assert len(project.files()) == 2  # what no-store asked for was not kept
    assert all("x-llm-cache" not in call.headers for call in project.server.calls)
    assert not any("x-llm-cache" in p.read_text().lower() for p in project.files())
    project.clear_results()
    project.run("-k", "not not_kept").assert_outcomes(passed=2)
    assert [project.result(n) for n in ("sdk", "requests")] == ["hit", "hit"]
    assert project.server.count() == 4


BAD = """
import os

def test_bad(client, llm_cache):
    client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-llm-cache": "no-store, " + os.environ["SERVICE_CREDENTIAL"]})
"""


def test_a_bad_directive_fails_its_test_without_showing_a_value_that_could_be_a_secret(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error is the cache's (its frames, which show their arguments, are left out of the
    report) and shows the value by its length."""
    monkeypatch.setenv("SERVICE_CREDENTIAL", "tok_9f8e7d6c5b4a39281706ZQ")
    project.pytester.makepyfile(test_bad=BAD)
    result = project.run("--llm-cache=record", "--tb=long")
    result.assert_outcomes(failed=1)
    out = result.stdout.str() + result.stderr.str()
    assert "ControlError: x-llm-cache: <a value of" in out
    assert "9f8e7d6c5b4a" not in out
    assert project.server.count() == 0
