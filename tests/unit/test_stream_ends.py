"""Where the streams of Gemini (a chunk with a finishReason), Bedrock (the messageStop and
metadata event-stream messages) and Ollama (an NDJSON line with "done": true) end."""

from __future__ import annotations

import pytest
from test_other_providers import CONVERSE, GEMINI, OLLAMA

from llm_cache.eventstream import CONTENT_TYPE
from llm_cache.providers import stream_complete, stream_ended


@pytest.mark.parametrize("chunks", [CONVERSE, CONVERSE[:-1], OLLAMA, GEMINI], ids=["metadata", "messageStop",
                                                                                   "ollama", "gemini"])
def test_a_stream_that_reached_its_last_event_has_ended(chunks: list[bytes]) -> None:
    assert stream_ended(chunks)
    assert stream_ended([b"".join(chunks)])  # however the bytes were cut into chunks


@pytest.mark.parametrize("chunks", [CONVERSE[:-2], CONVERSE[:3], OLLAMA[:-1], OLLAMA[:2], GEMINI[:1],
                                    [OLLAMA[-1][:-10]], [CONVERSE[-1][:-4]]])
def test_a_stream_before_its_last_event_has_not(chunks: list[bytes]) -> None:
    assert not stream_ended(chunks)


def test_a_cut_stream_is_incomplete_and_a_whole_one_complete() -> None:
    assert stream_complete(b"".join(CONVERSE), CONTENT_TYPE)
    assert not stream_complete(b"".join(CONVERSE[:-2]), CONTENT_TYPE)
    assert stream_complete(b"".join(GEMINI), "text/event-stream")
    assert not stream_complete(GEMINI[0], "text/event-stream")
