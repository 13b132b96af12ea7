"""pydantic-ai recorded and replayed through the plugin: an Agent over OpenAIChatModel with
its provider pointed at the local server, run_sync and run_stream."""

from __future__ import annotations

import pytest

from compat_run import needs, preload, record_then_replay
from conftest import Project

pytestmark = needs("pydantic_ai")

PYDANTIC_AI_TESTS = '''
import asyncio, os
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

def agent():
    provider = OpenAIProvider(base_url=os.environ["FAKE_LLM_URL"] + "/v1", api_key="sk-test-0000000000")
    return Agent(OpenAIChatModel("gpt-4o", provider=provider), instructions="Be brief.")

def test_run_sync(save, llm_cache):
    result = agent().run_sync("hello agent")
    usage = result.usage()
    save("run_sync", [result.output, usage.input_tokens, usage.output_tokens])

def test_run_stream(save, llm_cache):
    async def go():
        async with agent().run_stream("hello agent stream") as result:
            pieces = [t async for t in result.stream_text(delta=True, debounce_by=None)]
            return pieces, result.usage().output_tokens
    pieces, tokens = asyncio.run(go())
    save("run_stream", [pieces, tokens])
'''


@pytest.fixture(scope="module", autouse=True)
def _loaded() -> None:
    preload("pydantic_ai", "pydantic_ai.models.openai", "pydantic_ai.providers.openai")


def test_agent_records_and_replays(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    results = record_then_replay(project, monkeypatch, PYDANTIC_AI_TESTS, passed=2, calls=2)
    assert results["run_sync"][0] == "echo: hello agent"
    pieces, tokens = results["run_stream"]
    assert "".join(pieces) == "echo: hello agent stream" and len(pieces) > 1 and tokens > 0
