"""What is read from an LLM response: the model snapshot, the fingerprint, token usage.

Works on plain JSON bodies (OpenAI chat, Responses, embeddings; Anthropic
messages; Gemini; Bedrock Converse; Ollama; Mistral) and on streams, where these
fields arrive in the events: the last value seen wins (Anthropic sends input
tokens in ``message_start`` and the final output tokens in ``message_delta``;
OpenAI sends usage in the last chunk; Gemini's ``usageMetadata`` grows chunk by
chunk; Bedrock's ``metadata`` event and Ollama's last line carry the totals).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .body import Body

__all__ = [
    "ResponseInfo",
    "completion_text",
    "is_generation",
    "last_user_text",
    "prompt_messages",
    "read_response",
    "refusal_reason",
    "tool_calls",
]

# usage field names: OpenAI, Mistral | Anthropic | Bedrock Converse (camelCase)
_INPUT = ("prompt_tokens", "input_tokens", "inputTokens")
_OUTPUT = ("completion_tokens", "output_tokens", "outputTokens")


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


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _other_usage(obj: dict[str, Any], tokens: dict[str, int]) -> None:
    """Usage where it is not a ``usage`` object: Gemini ``usageMetadata`` (thinking counts
    as output, as it is billed), Ollama's ``prompt_eval_count`` / ``eval_count``."""
    meta = obj.get("usageMetadata")
    if isinstance(meta, dict):
        prompt = _count(meta.get("promptTokenCount"))
        if prompt is not None:
            tokens["input_tokens"] = prompt
        output = [_count(meta.get(name)) for name in ("candidatesTokenCount", "thoughtsTokenCount")]
        if any(n is not None for n in output):
            tokens["output_tokens"] = sum(n for n in output if n is not None)
    for target, name in (("input_tokens", "prompt_eval_count"), ("output_tokens", "eval_count")):
        count = _count(obj.get(name))
        if count is not None:
            tokens[target] = count


def read_response(body: Body) -> ResponseInfo:
    model = fingerprint = None
    tokens: dict[str, int] = {}
    for value in body.json_values():
        for obj in _objects(value):
            if isinstance(obj.get("model"), str):
                model = obj["model"]
            elif isinstance(obj.get("modelVersion"), str):  # Gemini
                model = obj["modelVersion"]
            if isinstance(obj.get("system_fingerprint"), str):
                fingerprint = obj["system_fingerprint"]
            _other_usage(obj, tokens)
            usage = obj.get("usage")
            if not isinstance(usage, dict):
                continue
            for target, names in (("input_tokens", _INPUT), ("output_tokens", _OUTPUT)):
                for name in names:
                    count = usage.get(name)
                    if isinstance(count, int) and not isinstance(count, bool):
                        tokens[target] = count
    return ResponseInfo(model, fingerprint, tokens or None)


def _content_text(content: Any) -> str:
    """Text of a message's content: a string, or a list of parts with text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("text")
        )
    return ""


def prompt_messages(request_json: Any) -> list[tuple[str, str]]:
    """(role, text) of the prompt: chat ``messages``, Responses ``instructions``/``input``,
    Anthropic ``system``, completions ``prompt``, embeddings ``input``."""
    if not isinstance(request_json, dict):
        return []
    out: list[tuple[str, str]] = []
    for field_name, role in (("system", "system"), ("instructions", "system")):
        text = _content_text(request_json.get(field_name))
        if text:
            out.append((role, text))
    for message in request_json.get("messages") or []:
        if isinstance(message, dict):
            out.append((str(message.get("role", "?")), _content_text(message.get("content"))))
    for field_name in ("input", "prompt"):
        value = request_json.get(field_name)
        if isinstance(value, str):
            out.append(("user", value))
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    out.append(("user", item))
                elif isinstance(item, dict):
                    out.append((str(item.get("role", "user")), _content_text(item.get("content"))))
    return out


def last_user_text(request_json: Any) -> str:
    users = [text for role, text in prompt_messages(request_json) if role == "user"]
    return users[-1] if users else ""


def _other_text(value: dict[str, Any]) -> list[str]:
    """Text of a Gemini candidate, a Bedrock Converse answer or stream delta, an Ollama
    chat message or line."""
    parts = []
    for candidate in value.get("candidates") or []:  # gemini, plain or streamed
        content = candidate.get("content") if isinstance(candidate, dict) else None
        for part in (content.get("parts") or []) if isinstance(content, dict) else []:
            if isinstance(part, dict) and isinstance(part.get("text"), str) and not part.get("thought"):
                parts.append(part["text"])
    output = value.get("output")
    message = output.get("message") if isinstance(output, dict) else None  # bedrock converse
    if isinstance(message, dict):
        parts.append(_content_text(message.get("content")))
    delta = value.get("delta")
    if "contentBlockIndex" in value and isinstance(delta, dict) and isinstance(delta.get("text"), str):
        parts.append(delta["text"])  # bedrock converse-stream contentBlockDelta
    message = value.get("message")
    if "done" in value and isinstance(message, dict) and isinstance(message.get("content"), str):
        parts.append(message["content"])  # ollama chat, plain or one line of a stream
    return parts


def completion_text(body: Body) -> str:
    """The answer's text, a stream assembled: OpenAI chat and Responses, Anthropic messages,
    Gemini, Bedrock Converse, Ollama chat (Mistral answers as OpenAI chat does)."""
    parts: list[str] = []
    for value in body.json_values():
        if not isinstance(value, dict):
            continue
        parts += _other_text(value)
        for choice in value.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            message = choice.get("message") or choice.get("delta") or {}
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                parts.append(message["content"])
            elif isinstance(choice.get("text"), str):
                parts.append(choice["text"])
        kind = value.get("type")
        if kind == "content_block_delta":
            delta = value.get("delta") or {}
            if isinstance(delta.get("text"), str):
                parts.append(delta["text"])
        elif kind == "response.output_text.delta" and isinstance(value.get("delta"), str):
            parts.append(value["delta"])
        elif kind == "message" or value.get("object") == "response":
            for block in value.get("content") or []:
                if isinstance(block, dict) and block.get("type") == "text":
                    parts.append(str(block.get("text", "")))
            for item in value.get("output") or []:
                for block in (item.get("content") or []) if isinstance(item, dict) else []:
                    if isinstance(block, dict) and block.get("type") == "output_text":
                        parts.append(str(block.get("text", "")))
    return "".join(parts)


def tool_calls(body: Body) -> list[tuple[str, str]]:
    """(name, arguments) of every tool call, streamed argument pieces joined: OpenAI chat
    (``tool_calls`` and their deltas), Anthropic (``tool_use`` blocks, streamed as
    ``content_block_start`` then ``input_json_delta`` pieces), Responses ``function_call`` items."""
    calls: dict[tuple[str, int, int], list[str]] = {}
    for value in body.json_values():
        if not isinstance(value, dict):
            continue
        for choice in value.get("choices") or []:
            message = (choice.get("message") or choice.get("delta") or {}) if isinstance(choice, dict) else {}
            for position, call in enumerate(message.get("tool_calls") or [] if isinstance(message, dict) else []):
                where = ("chat", int(choice.get("index", 0)), int(call.get("index", position)))
                function = call.get("function") or {}
                slot = calls.setdefault(where, ["", ""])
                if function.get("name"):
                    slot[0] = function["name"]
                slot[1] += function.get("arguments") or ""
        for position, block in enumerate(value.get("content") or []):  # anthropic, not streamed
            if isinstance(block, dict) and block.get("type") == "tool_use":
                calls[("anthropic", position, 0)] = [str(block.get("name")), json.dumps(block.get("input"))]
        kind = value.get("type")
        index = value.get("index", 0) if isinstance(value.get("index"), int) else 0
        if kind == "content_block_start":  # anthropic, streamed
            block = value.get("content_block") or {}
            if isinstance(block, dict) and block.get("type") == "tool_use":
                calls[("anthropic", index, 0)] = [str(block.get("name")), ""]
        elif kind == "content_block_delta":
            delta = value.get("delta") or {}
            if isinstance(delta, dict) and delta.get("type") == "input_json_delta":
                calls.setdefault(("anthropic", index, 0), ["", ""])[1] += str(delta.get("partial_json", ""))
        for position, item in enumerate(value.get("output") or []):  # responses, not streamed
            if isinstance(item, dict) and item.get("type") == "function_call":
                calls[("responses", position, 0)] = [str(item.get("name")), str(item.get("arguments", ""))]
        if kind == "response.output_item.done":  # responses, streamed: the finished item
            item = value.get("item") or {}
            if isinstance(item, dict) and item.get("type") == "function_call":
                calls[("responses", int(value.get("output_index", 0)), 0)] = [
                    str(item.get("name")), str(item.get("arguments", ""))]
    return [(name, args) for name, args in calls.values()]


def is_generation(body: Body) -> bool:
    """Whether a body is a model's answer (chat, Responses, Anthropic), not embeddings or a list."""
    for value in body.json_values():
        if not isinstance(value, dict):
            continue
        if "choices" in value or value.get("object") == "response" or value.get("type") == "message":
            return True
        kind = value.get("type")
        if isinstance(kind, str) and kind.startswith(("response.", "message_", "content_block_")):
            return True
    return False


def truncation(body: Body) -> str | None:
    """What says an answer was cut off by the token limit, as the provider wrote it
    (``finish_reason: length``), or None."""
    for value in body.json_values():
        if not isinstance(value, dict):
            continue
        for choice in value.get("choices") or []:
            if isinstance(choice, dict) and choice.get("finish_reason") == "length":
                return "finish_reason: length"
        delta = value.get("delta")
        delta_stop = delta.get("stop_reason") if isinstance(delta, dict) else None
        if "max_tokens" in (value.get("stop_reason"), delta_stop):
            return "stop_reason: max_tokens"
        for obj in (value, value.get("response")):
            if isinstance(obj, dict) and obj.get("status") == "incomplete":
                details = obj.get("incomplete_details") or {}
                if isinstance(details, dict) and details.get("reason") == "max_output_tokens":
                    return "incomplete_details.reason: max_output_tokens"
    return None


def refusal_reason(body: Body) -> str | None:
    """Why an answer should not be kept: ``empty`` or ``truncated`` (cut off by the token limit)."""
    if not is_generation(body):
        return None
    if truncation(body) is not None:
        return "truncated"
    if not completion_text(body).strip() and not tool_calls(body) and not _has_other_output(body):
        return "empty"
    return None


def _has_other_output(body: Body) -> bool:
    """Output that is not text: a Responses function call, audio, a refusal message."""
    for value in body.json_values():
        if not isinstance(value, dict):
            continue
        for item in value.get("output") or []:
            if isinstance(item, dict) and item.get("type") not in (None, "message"):
                return True
        for choice in value.get("choices") or []:
            message = (choice.get("message") or choice.get("delta") or {}) if isinstance(choice, dict) else {}
            if isinstance(message, dict) and (message.get("refusal") or message.get("audio")):
                return True
        if value.get("type") == "response.output_item.added":
            item = value.get("item") or {}
            if isinstance(item, dict) and item.get("type") not in (None, "message"):
                return True
    return False
