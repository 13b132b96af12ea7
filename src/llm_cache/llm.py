"""What is read from an LLM response: the model snapshot, the fingerprint, token usage.

Works on plain JSON bodies (OpenAI chat, Responses, embeddings; Anthropic
messages) and on streams, where these fields arrive in the events: the last
value seen wins (Anthropic sends input tokens in ``message_start`` and the
final output tokens in ``message_delta``; OpenAI sends usage in the last chunk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .cassette import Body

__all__ = ["ResponseInfo", "read_response"]

_INPUT = ("prompt_tokens", "input_tokens")
_OUTPUT = ("completion_tokens", "output_tokens")


@dataclass(frozen=True)
class ResponseInfo:
    model: str | None = None
    system_fingerprint: str | None = None
    usage: dict[str, int] | None = None


def _objects(value: Any) -> list[dict[str, Any]]:
    """The value and the nested objects where providers put model and usage."""
    if not isinstance(value, dict):
        return []
    found = [value]
    for name in ("message", "response"):  # anthropic message_start, responses events
        inner = value.get(name)
        if isinstance(inner, dict):
            found.append(inner)
    return found


def read_response(body: Body) -> ResponseInfo:
    model = fingerprint = None
    tokens: dict[str, int] = {}
    for value in body.json_values():
        for obj in _objects(value):
            if isinstance(obj.get("model"), str):
                model = obj["model"]
            if isinstance(obj.get("system_fingerprint"), str):
                fingerprint = obj["system_fingerprint"]
            usage = obj.get("usage")
            if not isinstance(usage, dict):
                continue
            for target, names in (("input_tokens", _INPUT), ("output_tokens", _OUTPUT)):
                for name in names:
                    count = usage.get(name)
                    if isinstance(count, int) and not isinstance(count, bool):
                        tokens[target] = count
    return ResponseInfo(model, fingerprint, tokens or None)
