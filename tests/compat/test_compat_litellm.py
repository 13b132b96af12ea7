"""litellm recorded and replayed through the plugin: completion and acompletion, plain and
streamed, for an OpenAI model (over the openai SDK) and an Anthropic one (over litellm's own
httpx client, and aiohttp when async)."""

from __future__ import annotations

import pytest

from compat_run import needs, preload, record_then_replay
from conftest import Project

pytestmark = needs("litellm")

LITELLM_TESTS = '''
STREAMED = {streamed!r}
import asyncio, os
import pytest
import litellm

URL = os.environ["FAKE_LLM_URL"]
MODELS = {
    "openai": dict(model="openai/gpt-4o", api_base=URL + "/v1", api_key="sk-test-0000000000"),
    "anthropic": dict(model="anthropic/claude-3-5-sonnet-20241022", api_base=URL,
                      api_key="sk-ant-test-000000", max_tokens=64),
}

def ask(text):
    return [{"role": "user", "content": text}]

def plain(r):
    return [r.choices[0].message.content, r.choices[0].finish_reason, r.model,
            r.usage.prompt_tokens, r.usage.completion_tokens]

def text_of(chunks):
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

@pytest.mark.parametrize("provider", MODELS)
def test_completion(provider, save, llm_cache):
    r = litellm.completion(messages=ask(provider + " sync"), **MODELS[provider])
    save(provider + "_completion", plain(r))

@pytest.mark.parametrize("provider", STREAMED)
def test_completion_stream(provider, save, llm_cache):
    chunks = list(litellm.completion(messages=ask(provider + " sync stream"), stream=True, **MODELS[provider]))
    assert len(chunks) > 2
    save(provider + "_completion_stream", text_of(chunks))

@pytest.mark.parametrize("provider", MODELS)
def test_acompletion(provider, save, llm_cache):
    async def go():
        r = await litellm.acompletion(messages=ask(provider + " async"), **MODELS[provider])
        s = await litellm.acompletion(messages=ask(provider + " async stream"), stream=True, **MODELS[provider])
        return r, [c async for c in s]
    r, chunks = asyncio.run(go())
    assert len(chunks) > 2
    save(provider + "_acompletion", [plain(r), text_of(chunks)])
'''


@pytest.fixture(scope="module", autouse=True)
def _loaded() -> None:
    preload("litellm")


def test_litellm_records_and_replays(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    source = LITELLM_TESTS.replace("{streamed!r}", repr(["openai"]))
    results = record_then_replay(project, monkeypatch, source, passed=5, calls=7)
    for provider in ("openai", "anthropic"):
        assert results[f"{provider}_completion"][0] == f"echo: {provider} sync"
        reply, streamed = results[f"{provider}_acompletion"]
        assert reply[0] == f"echo: {provider} async"
        assert streamed == f"echo: {provider} async stream"
    assert results["openai_completion_stream"] == "echo: openai sync stream"
    assert project.server.count("/v1/messages") == 3


def test_litellm_sync_anthropic_stream_records_and_replays(
    project: Project, monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = LITELLM_TESTS.replace("{streamed!r}", repr(["anthropic"]))
    source += "\ndel test_completion, test_acompletion\n"
    results = record_then_replay(project, monkeypatch, source, passed=1, calls=1)
    assert results["anthropic_completion_stream"] == "echo: anthropic sync stream"
