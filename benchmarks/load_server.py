"""A stand-in for the API under load: chat completions answered in a fixed delay, counted.

    python benchmarks/load_server.py --latency-ms 50      # prints its URL, then serves

One asyncio process (the benchmark starts it as a subprocess, so it takes no CPU time of
the loop being measured), ``127.0.0.1`` only, HTTP/1.1 with keep-alive. Every
``POST /v1/chat/completions`` is answered after exactly ``--latency-ms`` (an
``asyncio.sleep``: any number of requests wait at once) with a chat completion whose text
names the prompt, so a wrong answer served by a cache shows. It counts the calls per
prompt (the last message's content), how many were in flight at once, and how late each
answer went out; ``GET /stats`` returns them as JSON, ``POST /reset`` starts the counts
again. It exits when its standard input closes (the benchmark ended, or died) or after
``--lifetime`` seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections import Counter
from typing import Any

ANSWER_WORDS = 60


def answer_text(prompt: str) -> str:
    """The text the server answers ``prompt`` with: it starts with the prompt itself."""
    return f"Answer to {prompt}: " + " ".join(f"word{i}" for i in range(ANSWER_WORDS))


def completion(prompt: str, model: str) -> dict[str, Any]:
    text = answer_text(prompt)
    return {
        "id": "chatcmpl-load", "object": "chat.completion", "created": 1722902400,
        "model": model + "-2024-08-06", "system_fingerprint": "fp_load",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                  "total_tokens": len(prompt.split()) + len(text.split())},
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Counts:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.calls: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.late_ms: list[float] = []  # how much later than the latency each answer went out
        self.connections = 0

    def report(self) -> dict[str, Any]:
        return {
            "calls": sum(self.calls.values()), "distinct": len(self.calls),
            "max_calls_per_prompt": max(self.calls.values(), default=0),
            "max_in_flight": self.max_in_flight, "connections": self.connections,
            "late_p50_ms": percentile(self.late_ms, 0.5), "late_p99_ms": percentile(self.late_ms, 0.99),
            "late_max_ms": max(self.late_ms, default=0.0),
        }


def _reply(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "OK")
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\nx-request-id: req-load\r\n\r\n")
    return head.encode("ascii") + body


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           counts: Counts, latency: float) -> None:
    counts.connections += 1
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            if method == "POST" and target.startswith("/v1/chat/completions"):
                arrived = time.perf_counter()
                try:
                    request = json.loads(body)
                    prompt = str(request["messages"][-1]["content"])
                    model = str(request.get("model", "gpt-4o"))
                except (ValueError, KeyError, IndexError, TypeError):
                    writer.write(_reply(400, b'{"error": {"message": "bad chat request"}}'))
                    await writer.drain()
                    continue
                counts.calls[prompt] += 1
                counts.in_flight += 1
                counts.max_in_flight = max(counts.max_in_flight, counts.in_flight)
                try:
                    await asyncio.sleep(latency)
                finally:
                    counts.in_flight -= 1
                writer.write(_reply(200, json.dumps(completion(prompt, model)).encode()))
                counts.late_ms.append((time.perf_counter() - arrived - latency) * 1000)
            elif method == "GET" and target == "/stats":
                writer.write(_reply(200, json.dumps(counts.report()).encode()))
            elif method == "POST" and target == "/reset":
                counts.reset()
                writer.write(_reply(200, b"{}"))
            else:
                writer.write(_reply(404, b'{"error": {"message": "not here"}}'))
            await writer.drain()
    finally:
        writer.close()


async def main_async(latency: float, lifetime: float) -> None:
    counts = Counts()
    server = await asyncio.start_server(
        lambda r, w: serve_connection(r, w, counts, latency), "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{port}", flush=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def watch_stdin() -> None:  # returns when the benchmark closes its end (or dies)
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))

    threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        await asyncio.wait_for(stop, lifetime)
    except asyncio.TimeoutError:
        pass
    server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0, help="how long every answer takes")
    parser.add_argument("--lifetime", type=float, default=900.0, help="seconds after which it exits anyway")
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.latency_ms / 1000, args.lifetime))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
