"""Record against the local server, then replay with zero calls reaching it and equal results."""

from __future__ import annotations

import pytest

from conftest import Project

pytestmark = pytest.mark.all_xdist_modes

CLIENT_TESTS = '''
import asyncio
from conftest import chat

def test_plain(client, save, llm_cache):
    r = chat(client, "hello")
    save("plain", r.model_dump())
    save("plain_mode", llm_cache.mode.value)

def test_stream(client, save, llm_cache):
    chunks = [c.model_dump() for c in chat(client, "hello stream", stream=True)]
    save("stream", chunks)

def test_async(aclient, save, llm_cache):
    async def go():
        r = await aclient.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "async"}])
        s = await aclient.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "async stream"}], stream=True)
        return r.model_dump(), [c.model_dump() async for c in s]
    plain, chunks = asyncio.run(go())
    save("async", plain)
    save("async_stream", chunks)

def test_embeddings(client, save, llm_cache):
    save("embed", client.embeddings.create(model="text-embedding-3-small", input=["a", "b"]).model_dump())
'''

NAMES = ("plain", "stream", "async", "async_stream", "embed")


def test_record_then_replay_offline_gives_equal_results(project: Project) -> None:
    project.pytester.makepyfile(test_sdk_calls=CLIENT_TESTS)
    recorded = project.run("--llm-cache=record")
    recorded.assert_outcomes(passed=4)
    first = {name: project.result(name) for name in NAMES}
    calls_while_recording = project.server.count()
    assert calls_while_recording == 5
    assert len(project.files()) == 5
    # streamed chunks really were several chunks
    assert len(first["stream"]) > 3 and len(first["async_stream"]) > 3

    project.clear_results()
    replayed = project.run()  # default mode: replay
    replayed.assert_outcomes(passed=4)
    assert project.server.count() == calls_while_recording, "replay reached the server"
    assert {name: project.result(name) for name in NAMES} == first
    assert project.result("plain_mode") == "replay"
    replayed.stdout.fnmatch_lines(["*hits: 5   misses: 0   recorded: 0*hit rate: 100%"])


def test_replay_with_server_stopped(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.pytester.makepyfile(test_sdk_calls=CLIENT_TESTS)
    project.run("--llm-cache=record").assert_outcomes(passed=4)
    first = project.result("stream")
    # nothing listens on the discard port: any real connection would fail
    monkeypatch.setenv("FAKE_LLM_URL", "http://127.0.0.1:9")
    project.clear_results()
    project.run().assert_outcomes(passed=4)
    assert project.result("stream") == first


def test_record_mode_serves_existing_and_records_only_missing(project: Project) -> None:
    project.pytester.makepyfile(test_a="from conftest import chat\ndef test_a(client, llm_cache):\n    chat(client, 'one')\n")
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    assert project.server.count() == 1
    project.pytester.makepyfile(
        test_b="from conftest import chat\ndef test_b(client, llm_cache):\n    chat(client, 'one')\n    chat(client, 'two')\n"
    )
    result = project.run("--llm-cache=record")
    result.assert_outcomes(passed=2)
    assert project.server.count() == 2  # only 'two' went upstream
    result.stdout.fnmatch_lines(["*hits: 2   misses: 0   recorded: 1*"])


def test_identical_request_in_two_tests_shares_one_cassette(project: Project) -> None:
    project.pytester.makepyfile(
        test_twice="""
from conftest import chat
def test_one(client, llm_cache):
    chat(client, "shared")
def test_two(client, llm_cache):
    chat(client, "shared")
"""
    )
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    assert len(project.files()) == 1
    assert project.server.count() == 1


def test_off_mode_does_not_intercept(project: Project) -> None:
    project.pytester.makepyfile(
        test_off="""
from conftest import chat
def test_off(client, llm_cache):
    chat(client, "live")
    assert llm_cache.stats.hits == llm_cache.stats.recorded == 0
"""
    )
    project.run("--llm-cache=off").assert_outcomes(passed=1)
    project.run("--llm-cache=off").assert_outcomes(passed=1)
    assert project.server.count() == 2
    assert project.files() == []


def test_fixture_exposes_stats_and_cassettes(project: Project) -> None:
    project.pytester.makepyfile(
        test_fixture="""
from conftest import chat
def test_stats(client, llm_cache, save):
    chat(client, "x")
    chat(client, "x")
    save("stats", [llm_cache.stats.hits, llm_cache.stats.recorded, llm_cache.stats.misses,
                   llm_cache.stats.refreshed, llm_cache.stats.stale, llm_cache.cassettes])
"""
    )
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    hits, recorded, misses, refreshed, stale, cassettes = project.result("stats")
    assert (hits, recorded, misses, refreshed, stale) == (1, 1, 0, 0, 0)
    assert cassettes == [str(project.files()[0])]


def test_a_test_without_fixture_or_marker_is_not_intercepted(project: Project) -> None:
    project.pytester.makepyfile(
        test_plain="from conftest import chat\ndef test_plain(client):\n    chat(client, 'free')\n"
    )
    project.run().assert_outcomes(passed=1)
    assert project.server.count() == 1
    assert project.files() == []


def test_marker_alone_intercepts_and_autouse_ini_intercepts_all(project: Project) -> None:
    project.pytester.makepyfile(
        test_marked="""
import pytest
from conftest import chat
@pytest.mark.llm_cache
def test_marked(client):
    chat(client, "marked")
"""
    )
    result = project.run("--strict-markers")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CacheMiss: no cassette for POST /v1/chat/completions*"])
    assert project.server.count() == 0

    project.pytester.makepyfile(test_marked="from conftest import chat\ndef test_unmarked(client):\n    chat(client, 'all')\n")
    project.pytester.makeini("[pytest]\nllm_cache_autouse = true\n")
    project.run().assert_outcomes(failed=1)
    assert project.server.count() == 0
