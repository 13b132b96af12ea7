"""Replay never reaches the network, through any client; a Redis store that fails is named, fast."""

from __future__ import annotations

import time

import pytest

from conftest import Project
from redis_server import RedisServer

EVERY_CLIENT = """
import asyncio, os, pytest
from llm_cache import CacheMiss
URL = os.environ["FAKE_LLM_URL"]
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "never recorded"}]}

def test_openai(client, llm_cache):
    with pytest.raises(CacheMiss):
        client.chat.completions.create(**BODY)

def test_openai_stream(client, llm_cache):
    with pytest.raises(CacheMiss):
        list(client.chat.completions.create(stream=True, **BODY))

def test_openai_async(aclient, llm_cache):
    async def go():
        await aclient.chat.completions.create(**BODY)
    with pytest.raises(CacheMiss):
        asyncio.run(go())

def test_openai_responses(client, llm_cache):
    with pytest.raises(CacheMiss):
        client.responses.create(model="gpt-4o", input="never recorded")

# The anthropic SDK wraps any other exception of its transport in APIConnectionError and
# retries it (max_retries): the cache's error reaches it as an AnthropicError too, which
# it lets through untouched.
def test_anthropic(llm_cache):
    import anthropic
    client = anthropic.Anthropic(base_url=URL, api_key="sk-ant-x", max_retries=2)
    with pytest.raises(CacheMiss) as failure:
        client.messages.create(model="claude-x", max_tokens=5, messages=BODY["messages"])
    assert isinstance(failure.value, anthropic.AnthropicError) and failure.value.__cause__ is None
    assert llm_cache.stats.misses == 1

def test_anthropic_async(llm_cache):
    import anthropic
    async def go():
        c = anthropic.AsyncAnthropic(base_url=URL, api_key="sk-ant-x", max_retries=0)
        async with c.messages.stream(model="claude-x", max_tokens=5, messages=BODY["messages"]) as s:
            await s.get_final_message()
    with pytest.raises(CacheMiss) as failure:
        asyncio.run(go())
    assert isinstance(failure.value, anthropic.AnthropicError)

@pytest.mark.parametrize("module", ["httpx", "httpx2"])
def test_plain_httpx(module, llm_cache):
    httpx = __import__(module)
    with pytest.raises(CacheMiss):
        httpx.post(URL + "/v1/chat/completions", json=BODY)
    async def go():
        async with httpx.AsyncClient() as c:
            await c.post(URL + "/v1/chat/completions", json=BODY)
    with pytest.raises(CacheMiss):
        asyncio.run(go())

def test_requests(llm_cache):
    import requests
    with pytest.raises(CacheMiss):
        requests.post(URL + "/v1/chat/completions", json=BODY)

def test_urllib(llm_cache):
    import json, urllib.request
    request = urllib.request.Request(URL + "/v1/chat/completions", data=json.dumps(BODY).encode(),
                                     headers={"content-type": "application/json"})
    with pytest.raises(CacheMiss):
        urllib.request.urlopen(request, timeout=5)
"""


def test_replay_reaches_the_server_zero_times_through_every_client(project: Project) -> None:
    project.pytester.makepyfile(test_every_client=EVERY_CLIENT)
    result = project.run()
    result.assert_outcomes(passed=10)
    assert project.server.count() == 0
    # one miss per request and test (httpx sync and async ask the same request)
    result.stdout.fnmatch_lines(["hits: 0   misses: 10   recorded: 0*"])


KILLED = """
import os, signal, time, pytest
from llm_cache import StoreUnavailable
from conftest import chat

def test_1_hit(client, llm_cache):
    chat(client, "kept in redis")

def test_2_redis_dies(client, llm_cache):
    os.kill(int(os.environ["REDIS_PID"]), signal.SIGKILL)
    time.sleep(0.2)

def test_3_lookup_fails_fast(client, llm_cache):
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as failure:
        chat(client, "another question")
    assert time.monotonic() - started < 3
    assert os.environ["REDIS_URL_SHOWN"] in str(failure.value)
"""


def test_redis_killed_mid_run_fails_the_next_lookup_fast_and_names_it(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    with RedisServer() as private:
        url = private.url + "?timeout=1&prefix=killed:"
        project.pytester.makepyfile(test_killed="from conftest import chat\ndef test_1_hit(client, llm_cache):\n    chat(client, 'kept in redis')\n")
        project.run("--llm-cache=record", f"--llm-cache-store={url}").assert_outcomes(passed=1)
        assert private.process is not None
        monkeypatch.setenv("REDIS_PID", str(private.process.pid))
        monkeypatch.setenv("REDIS_URL_SHOWN", private.url)
        project.pytester.makepyfile(test_killed=KILLED)
        started = time.monotonic()
        result = project.run(f"--llm-cache-store={url}")
        assert time.monotonic() - started < 30
        result.assert_outcomes(passed=3, warnings=1)
        result.stdout.fnmatch_lines(["*LLMCacheWarning: usage and eviction skipped: cache store * is unavailable*"])


SLOW = """
import os, threading, time, pytest, redis
from llm_cache import StoreUnavailable
from conftest import chat

def test_slow_store(client, llm_cache):
    blocker = redis.Redis.from_url(os.environ["REDIS_PLAIN_URL"])
    def stall():
        try:
            blocker.execute_command("DEBUG", "SLEEP", "3")
        except redis.RedisError:
            pass  # the server may be stopped before it answers
    threading.Thread(target=stall, daemon=True).start()
    time.sleep(0.2)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="timed out"):
        chat(client, "slow")
    assert time.monotonic() - started < 2
"""


def test_a_slow_redis_times_out_within_the_configured_timeout(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    with RedisServer(extra_args=("--enable-debug-command", "local")) as private:
        monkeypatch.setenv("REDIS_PLAIN_URL", private.url)
        project.pytester.makepyfile(test_slow=SLOW)
        result = project.run(f"--llm-cache-store={private.url}?timeout=0.5&prefix=slow:", "-W", "ignore::pytest.PytestWarning")
        result.assert_outcomes(passed=1)
