"""The code under test: a tiny support assistant that calls the OpenAI API.

Nothing here knows about the cache: the plugin intercepts the HTTP client underneath.
"""

from __future__ import annotations

from openai import AsyncOpenAI, OpenAI

MODEL = "gpt-4o"


def answer(client: OpenAI, question: str) -> str:
    """One chat completion."""
    response = client.chat.completions.create(
        model=MODEL,
        temperature=0,
        messages=[
            {"role": "system", "content": "You answer support questions in one sentence."},
            {"role": "user", "content": question},
        ],
    )
    return response.choices[0].message.content or ""


def answer_streamed(client: OpenAI, question: str) -> list[str]:
    """The same, streamed: the pieces as they arrive."""
    stream = client.chat.completions.create(
        model=MODEL,
        stream=True,
        messages=[{"role": "user", "content": question}],
    )
    return [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]


async def answer_async(client: AsyncOpenAI, question: str) -> str:
    response = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}]
    )
    return response.choices[0].message.content or ""


def embed(client: OpenAI, texts: list[str]) -> list[list[float]]:
    result = client.embeddings.create(model="text-embedding-3-small", input=texts)
    return [item.embedding for item in result.data]
