"""What differs between provider APIs, in one place: how their streams end.

Every path of the engine asks ``stream_ended`` whether a stream has delivered its
provider's last event: a stream the caller closes after that is read to its end
and kept; one closed before it is not kept.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["STREAM_ENDS", "stream_ended"]

# The last event of each provider's stream: OpenAI chat ([DONE]), Anthropic
# (message_stop), the Responses API (response.completed / failed / incomplete).
STREAM_ENDS = (
    b"data: [DONE]",
    b"event: message_stop",
    b'"type":"message_stop"',
    b'"type": "message_stop"',
    b"event: response.completed",
    b"event: response.failed",
    b"event: response.incomplete",
)
_TAIL = 512


def stream_ended(chunks: Sequence[bytes]) -> bool:
    """True when the chunks received so far end with a provider's last event."""
    tail = b"".join(chunks[-8:])[-_TAIL:]
    return any(marker in tail for marker in STREAM_ENDS)
