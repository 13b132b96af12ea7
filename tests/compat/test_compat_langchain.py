"""langchain-openai's ChatOpenAI recorded and replayed through the plugin: invoke, stream,
with_structured_output (a pydantic model, as a JSON schema) and bind_tools."""

from __future__ import annotations

import pytest

from compat_run import needs, preload, record_then_replay
from conftest import Project

pytestmark = needs("langchain_openai")

LANGCHAIN_TESTS = '''
import os
from pydantic import BaseModel
from langchain_openai import ChatOpenAI

def llm():
    return ChatOpenAI(model="gpt-4o", base_url=os.environ["FAKE_LLM_URL"] + "/v1",
                      api_key="sk-test-0000000000", max_retries=0)

class Weather(BaseModel):
    city: str
    days: list[int]

def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"

def test_invoke(save, llm_cache):
    reply = llm().invoke("hello")
    save("invoke", [reply.content, reply.response_metadata["model_name"], reply.usage_metadata])

def test_stream(save, llm_cache):
    chunks = [c.content for c in llm().stream("hello stream")]
    assert len([c for c in chunks if c]) > 1
    save("stream", chunks)

def test_structured_output(save, llm_cache):
    answer = llm().with_structured_output(Weather).invoke("the weather in Paris")
    assert isinstance(answer, Weather)
    save("structured", answer.model_dump())

def test_bind_tools(save, llm_cache):
    reply = llm().bind_tools([get_weather]).invoke("what is the weather?")
    assert reply.tool_calls[0]["name"] == "get_weather"
    save("tools", reply.tool_calls)
'''


@pytest.fixture(scope="module", autouse=True)
def _loaded() -> None:
    preload("langchain_openai")


def test_chat_openai_records_and_replays(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    results = record_then_replay(project, monkeypatch, LANGCHAIN_TESTS, passed=4, calls=4)
    assert results["invoke"][0] == "echo: hello"
    assert "".join(results["stream"]) == "echo: hello stream"
    assert results["structured"] == {"city": "echo: the weather in Paris", "days": [1]}
    assert results["tools"][0]["args"] == {"city": "Paris"}
