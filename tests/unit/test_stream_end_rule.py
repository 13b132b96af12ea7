"""One stream-end rule for every path."""

from __future__ import annotations

import pytest

from llm_cache.providers import stream_ended


@pytest.mark.parametrize(
    "chunks",
    [
        [b'data: {"choices":[]}\n\n', b"data: [DONE]\n\n"],
        [b"event: message_delta\ndata: {}\n\n", b'event: message_stop\ndata: {"type":"message_stop"}\n\n'],
        [b'event: response.completed\ndata: {"type":"response.completed"}\n\n'],
        [b'data: {"type":"message_stop"}\n\n'],
    ],
)
def test_a_providers_last_event_ends_the_stream(chunks):
    assert stream_ended(chunks)


@pytest.mark.parametrize(
    "chunks",
    [[], [b'data: {"choices":[{"delta":{"content":"[DONE"}}]}\n\n'], [b"event: content_block_delta\ndata: {}\n\n"]],
)
def test_a_stream_cut_before_its_last_event_has_not_ended(chunks):
    assert not stream_ended(chunks)
