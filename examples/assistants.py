"""More code under test: one small function per provider API the plugin replays.

OpenAI tool calls (plain and streamed), streamed usage, the Responses API, embeddings as
floats and base64, Anthropic messages, and a hand-made HTTP call with `requests`. Like
support_bot, nothing here knows about the cache.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from typing import Any

from openai import OpenAI

MODEL = "gpt-4o"
EMBEDDING_MODEL = "text-embedding-3-small"
CLAUDE = "claude-3-5-sonnet-latest"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def weather_call(client: OpenAI, question: str) -> tuple[str, dict[str, Any]]:
    """The tool the model chose and its parsed arguments."""
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], tools=[WEATHER_TOOL]
    )
    call = (response.choices[0].message.tool_calls or [])[0]
    return call.function.name, json.loads(call.function.arguments)


def weather_call_streamed(client: OpenAI, question: str) -> tuple[str, dict[str, Any], int]:
    """The same, streamed: the arguments arrive in pieces, joined here (with their count)."""
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], tools=[WEATHER_TOOL],
        stream=True,
    )
    name, arguments, pieces = "", "", 0
    for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if call.function and call.function.name:
                name = call.function.name
            if call.function and call.function.arguments:
                arguments += call.function.arguments
                pieces += 1
    return name, json.loads(arguments), pieces


def answer_with_usage(client: OpenAI, question: str) -> tuple[str, dict[str, int]]:
    """A streamed answer and the token usage the last chunk reports."""
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", {}
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = {
                "prompt": chunk.usage.prompt_tokens,
                "completion": chunk.usage.completion_tokens,
            }
    return text, usage


def respond(client: OpenAI, text: str) -> str:
    """The Responses API."""
    return client.responses.create(model=MODEL, input=text).output_text


def respond_streamed(client: OpenAI, text: str) -> tuple[list[str], str]:
    """The Responses API, streamed: the text deltas and the final response's text."""
    with client.responses.stream(model=MODEL, input=text) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    return deltas, final.output_text


def embed_floats(client: OpenAI, texts: list[str]) -> list[list[float]]:
    result = client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
    return [item.embedding for item in result.data]


def embed_base64(client: OpenAI, texts: list[str]) -> list[list[float]]:
    """Asked for explicitly, base64 comes back as a string of little-endian float32s."""
    result = client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="base64")
    vectors = []
    for item in result.data:
        packed = base64.b64decode(item.embedding)  # type: ignore[arg-type]
        vectors.append(list(struct.unpack(f"<{len(packed) // 4}f", packed)))
    return vectors


def ask_claude(client: Any, question: str) -> str:
    """Anthropic messages (client: anthropic.Anthropic)."""
    message = client.messages.create(
        model=CLAUDE, max_tokens=200, messages=[{"role": "user", "content": question}]
    )
    return "".join(block.text for block in message.content if block.type == "text")


def ask_claude_streamed(client: Any, question: str) -> tuple[list[str], str]:
    """Anthropic messages through the stream helper: the text pieces and the final text."""
    with client.messages.stream(
        model=CLAUDE, max_tokens=200, messages=[{"role": "user", "content": question}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    return pieces, "".join(block.text for block in final.content if block.type == "text")


def answer_with_requests(question: str) -> str:
    """A chat completion by hand, with `requests` instead of the SDK."""
    import requests

    base_url = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
    key = os.environ.get("OPENAI_API_KEY", "not-needed-for-replay")
    response = requests.post(
        base_url.rstrip("/") + "/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": question}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    response.raise_for_status()
    content: str = response.json()["choices"][0]["message"]["content"]
    return content
