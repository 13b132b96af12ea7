"""A small OpenAI- and Anthropic-compatible HTTP server for tests and benchmarks.

Chat completions, embeddings, the Responses API, Anthropic messages and a model list, streamed
(SSE over chunked transfer encoding) or not; deterministic given the request body and the
server's snapshot, fingerprint and generation (a chat completion asking for a ``json_schema``
response format gets a JSON document of that schema). Standard library only (brotli and
zstandard only when ``force_encoding`` asks for br or zstd).

Also enough of the other providers for their SDKs: OpenAI's multipart uploads (audio
transcriptions and translations, files, image edits), Gemini (generateContent, its SSE
stream, batchEmbedContents), Bedrock (Converse, its event-stream frames, InvokeModel) and
Ollama (chat, plain and as NDJSON lines, embed). Mistral speaks OpenAI chat.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.parser
import email.policy
import gzip
import hashlib
import json
import os
import re
import socket
import struct
import sys
import threading
import time
import traceback
import urllib.parse
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable

CREATED = 1722902400  # fixed "created" timestamp (2024-08-06)
JsonDict = dict[str, Any]


@dataclass
class Call:
    """One request received by the server (header names lowercased, path without query)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any | None
    query: str = ""


class ApiError(Exception):
    """Raised by an endpoint to answer with an error status."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def _words(text: str) -> int:
    """Crude token count: whitespace-separated words (at least 1)."""
    return max(1, len(text.split()))


def _text_of(content: Any) -> str:
    """Text of a message content: a string, or a list of parts with a "text" field."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text_of(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _last_text(items: Any) -> str:
    """Text of the last message (dict with a "content") in a list of messages or input items."""
    items = items if isinstance(items, list) else []
    found = [i for i in items if isinstance(i, dict) and "content" in i]
    return _text_of(found[-1]["content"]) if found else ""


def _pieces(text: str) -> list[str]:
    """Split text into word deltas whose concatenation is exactly text."""
    return [p for p in re.split(r"(?<=\s)(?=\S)", text) if p] or [""]


def _thirds(text: str) -> list[str]:
    """Split text into (up to) three pieces, for streaming tool-call arguments."""
    step = max(1, -(-len(text) // 3))
    return [text[i : i + step] for i in range(0, len(text), step)] or [""]


def _sample(schema: Any, text: str) -> Any:
    """A value of a JSON schema: strings are ``text``, numbers 1, booleans true, arrays of one."""
    schema = schema if isinstance(schema, dict) else {}
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {name: _sample(sub, text) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_sample(schema.get("items"), text)]
    if "enum" in schema:
        return schema["enum"][0]
    return {"integer": 1, "number": 1.0, "boolean": True, "null": None}.get(str(kind), text)


def _embedding(text: str) -> list[float]:
    """Eight float32-exact values in [-1, 1) derived from sha256(text)."""
    ints = struct.unpack("<8I", hashlib.sha256(text.encode()).digest())
    return list(struct.unpack("<8f", struct.pack("<8f", *(u / 2**31 - 1.0 for u in ints))))


def _frame(event_type: str, payload: Any) -> bytes:
    """One AWS event-stream message: string headers, a JSON payload, both CRC32s."""
    headers = b""
    for name, value in ((":event-type", event_type), (":content-type", "application/json"),
                        (":message-type", "event")):
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
    body = json.dumps(payload, separators=(",", ":")).encode()
    prelude = struct.pack(">II", 16 + len(headers) + len(body), len(headers))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + headers + body
    return message + struct.pack(">I", binascii.crc32(message))


def _form(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (file name, content)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise ApiError(400, "expected a multipart/form-data body")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def _compress(body: bytes, encoding: str) -> bytes:
    """body compressed with an HTTP content coding (br and zstd need brotli / zstandard)."""
    if encoding == "gzip":
        return gzip.compress(body, mtime=0)
    if encoding == "deflate":
        return zlib.compress(body)  # HTTP "deflate" is the zlib format
    if encoding == "br":
        import brotli  # type: ignore[import-not-found]

        return bytes(brotli.compress(body))
    if encoding == "zstd":
        import zstandard  # type: ignore[import-not-found]

        return bytes(zstandard.ZstdCompressor().compress(body))
    raise ValueError(f"unknown content coding {encoding!r}")


def _spoil(body: bytes, how: str) -> bytes:
    """A gzip body made undecodable (or, for "trailing", decodable with junk after it)."""
    if how == "crc":
        return body[:-8] + bytes([body[-8] ^ 0xFF]) + body[-7:]
    if how == "garbage":
        return b"\x1f\x8b" + bytes(len(body))
    if how == "truncated":
        return body[: len(body) // 2]
    if how == "trailing":
        return body + b"junk after the gzip member"
    raise ValueError(f"unknown corruption {how!r}")


class FakeLLMServer:
    """Background HTTP server speaking enough OpenAI and Anthropic for the official SDKs."""

    def __init__(
        self,
        *,
        snapshot: str = "2024-08-06",
        fingerprint: str = "fp_aaa111",
        generation: int = 0,
        gzip_json: bool = True,
    ) -> None:
        self.snapshot = snapshot
        self.fingerprint = fingerprint
        self.generation = generation
        self.gzip_json = gzip_json
        # "gzip", "deflate", "br" or "zstd": compress every non-streamed JSON answer with it,
        # whatever the client accepts and whatever gzip_json says (read per request)
        self.force_encoding: str | None = None
        # seconds between the events of a stream, as a model generating tokens would take
        self.event_delay = 0.0
        # opt-in faults, read per request. corrupt_gzip: non-streamed JSON answers are sent
        # gzip-encoded and then spoiled: "crc" (a wrong checksum), "garbage" (the gzip magic
        # and zeros), "truncated" (cut before its end); "trailing" adds junk after a sound body.
        self.corrupt_gzip: str | None = None
        # cut_streams: a stream ends cleanly (its last HTTP chunk sent) this many events
        # before its end, so without its terminator ([DONE], message_stop, response.completed)
        self.cut_streams = 0
        # fail_status: every request is answered with this HTTP status (an outage), when set
        self.fail_status: int | None = None
        self.calls: list[Call] = []
        self.url = ""
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeLLMServer:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01},
            name="fake-llm-server", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop kept-alive connections and join the thread (bounded)."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # wake handler threads blocked on idle keep-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd, self._thread = None, None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def openai_base_url(self) -> str:
        """Base URL for openai.OpenAI(base_url=...)."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Base URL for anthropic.Anthropic(base_url=...); the SDK appends /v1/messages."""
        return self.url

    def count(self, path: str | None = None) -> int:
        """Number of requests received, optionally only those to one path."""
        with self._lock:
            return sum(1 for c in self.calls if path is None or c.path == path)

    # -- shared answer logic -------------------------------------------------------------------
    def reply_for(self, text: str) -> str:
        """The deterministic answer to a prompt."""
        reply = f"echo: {text}"
        return reply + (f" (gen {self.generation})" if self.generation else "")

    def snap_model(self, model: str) -> str:
        """Model name as OpenAI reports it: with the snapshot date appended."""
        return f"{model}-{self.snapshot}"


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its FakeLLMServer and keeps quiet about disconnects."""

    daemon_threads = True
    fake: FakeLLMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the fake endpoints."""

    protocol_version = "HTTP/1.1"
    server: _Server

    # -- plumbing ----------------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.fake._lock:
            self.server.fake._conns.add(self.connection)

    def finish(self) -> None:
        with self.server.fake._lock:
            self.server.fake._conns.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        """The request body, by Content-Length (or chunked, as requests sends generators)."""
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        out = b""
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            out += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return out

    def _common_headers(self) -> None:
        self.send_header("x-request-id", "req_" + os.urandom(8).hex())
        elapsed = int((time.perf_counter() - self._t0) * 1000)
        self.send_header("openai-processing-ms", str(elapsed))

    def _send_json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        fake = self.server.fake
        encoding = fake.force_encoding
        accepts_gzip = "gzip" in self.headers.get("Accept-Encoding", "")
        if encoding is None and fake.gzip_json and accepts_gzip:
            encoding = "gzip"
        if fake.corrupt_gzip is not None:
            encoding = "gzip"
            body = _spoil(gzip.compress(body, mtime=0), fake.corrupt_gzip)
        elif encoding is not None:
            body = _compress(body, encoding)
        self._sent = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if encoding is not None:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        self.end_headers()
        self.wfile.write(body)

    def _send_bytes(self, content_type: str, body: bytes) -> None:
        self._sent = True
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        self.end_headers()
        self.wfile.write(body)

    def _echoed(self) -> bytes:
        """The request's headers and target (path and query, as sent), as JSON; and its body
        as text, when it has one (a POST to /v1/echo: an OAuth token request's form)."""
        echoed = {"headers": dict(self.headers.items()), "target": self.path}
        if self._body:
            echoed["body"] = self._body.decode("utf-8", "replace")
        return json.dumps(echoed).encode()

    def _send_sse(self, events: Iterable[tuple[str | None, Any]]) -> None:
        """Stream (event name, data) pairs, one HTTP chunk per SSE event, then the last chunk."""
        self._sent = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self._common_headers()
        self.end_headers()
        delay = self.server.fake.event_delay  # type: ignore[attr-defined]
        cut = self.server.fake.cut_streams
        if cut:
            events = list(events)[:-cut]
        for index, (name, data) in enumerate(events):
            if delay and index:
                time.sleep(delay)
            text = data if isinstance(data, str) else json.dumps(data)
            event = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
            raw = event.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _handle(self, method: str) -> None:
        self._t0, self._sent = time.perf_counter(), False
        path, _, query = self.path.partition("?")
        body = self._read_body()
        # a compressed request body, undone as the APIs' front ends do
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if body and encoding in ("gzip", "deflate"):
            body = gzip.decompress(body) if encoding == "gzip" else zlib.decompress(body)
        self._body = body
        self._key = hashlib.sha256(body).hexdigest()[:24]  # ids: short sha of the body
        try:
            data: Any = json.loads(body) if body else None
        except ValueError:
            data = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.server.fake._lock:
            self.server.fake.calls.append(Call(method, path, headers, body, data, query))
        req: JsonDict = data if isinstance(data, dict) else {}
        try:
            route = ROUTES.get((method, path))
            if route is None:
                route = self._pattern_route(method, path)
            if route is None:
                raise ApiError(404, f"Unknown request URL: {method} {path}", "not_found_error")
            if path in FORM_ROUTES:
                self._fields = _form(self.headers.get("Content-Type", ""), body)
            elif method == "POST" and not isinstance(data, dict) and path not in RAW_ROUTES:
                raise ApiError(400, "We could not parse the JSON body of your request.")
            if self.server.fake.fail_status is not None:
                raise ApiError(self.server.fake.fail_status, "Simulated outage of the fake server", "api_error")
            if req.get("model") in ("error-500", "error-429"):
                status = int(req["model"][-3:])
                kind = "api_error" if status == 500 else "rate_limit_error"
                raise ApiError(status, f"Simulated error {status} from the fake server", kind)
            route(self, req)
        except ApiError as err:
            if path == "/v1/messages":
                error = {"type": err.kind, "message": err.message}
                payload: JsonDict = {"type": "error", "error": error}
            else:
                payload = {"error": {"message": err.message, "type": err.kind, "param": None,
                                     "code": err.kind}}
            self._send_json(err.status, payload)
        except OSError:  # client went away
            self.close_connection = True
        except Exception as exc:  # a bug here: answer 500 if still possible, else hang up
            traceback.print_exc()
            if self._sent:
                self.close_connection = True
            else:
                self._send_json(500, {"error": {"message": repr(exc), "type": "server_error"}})

    def _pattern_route(self, method: str, path: str) -> Any:
        """The route of a path that carries a parameter (a Gemini or Bedrock model)."""
        for (route_method, pattern), route in PATTERN_ROUTES.items():
            found = re.fullmatch(pattern, path) if method == route_method else None
            if found:
                self._match = found
                return route
        return None

    def _send_chunked(self, content_type: str, pieces: Iterable[bytes]) -> None:
        """Send pieces one HTTP chunk each (SSE events, NDJSON lines, event-stream frames)."""
        self._sent = True
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self._common_headers()
        self.end_headers()
        for piece in pieces:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    # -- endpoints ---------------------------------------------------------------------------------
    def ep_models(self, req: JsonDict) -> None:
        names = [("gpt-4o", "openai"), ("gpt-4o-mini", "openai"),
                 ("text-embedding-3-small", "openai"), ("claude-3-5-sonnet-latest", "anthropic")]
        data = [{"id": n, "object": "model", "created": CREATED, "owned_by": o} for n, o in names]
        self._send_json(200, {"object": "list", "data": data})

    def ep_chat(self, req: JsonDict) -> None:
        fake = self.server.fake
        messages = [m for m in req.get("messages") or [] if isinstance(m, dict)]
        last = _last_text(messages)
        if req.get("model") == "echo-headers":
            text = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        elif req.get("model") == "echo-request":  # headers and the request target, query included
            text = "\n".join(f"{k}: {v}" for k, v in self.headers.items()) + f"\ntarget: {self.path}"
        else:
            text = fake.reply_for(last)
        response_format = req.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            # structured output: a JSON document of the requested schema
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
            text = json.dumps(_sample(schema, text))
        tools = req.get("tools") or []
        tool_call = None
        if tools and "weather" in last:
            name = (tools[0].get("function") or {}).get("name", "tool")
            tool_call = {"id": "call_" + self._key, "type": "function",
                         "function": {"name": name, "arguments": json.dumps({"city": "Paris"})}}
        limit = req.get("max_tokens", req.get("max_completion_tokens"))
        finish = "tool_calls" if tool_call else "length" if limit == 1 else "stop"
        prompt = sum(_words(_text_of(m.get("content"))) for m in messages)
        completion = _words(tool_call["function"]["arguments"] if tool_call else text)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}
        head = {"id": "chatcmpl-" + self._key, "created": CREATED,
                "model": fake.snap_model(str(req.get("model"))),
                "system_fingerprint": fake.fingerprint}
        if not req.get("stream"):
            msg: JsonDict = {"role": "assistant", "content": None if tool_call else text,
                             "refusal": None}
            if tool_call:
                msg["tool_calls"] = [tool_call]
            choice = {"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}
            self._send_json(200, {**head, "object": "chat.completion", "choices": [choice],
                                  "usage": usage, "service_tier": "default"})
            return
        with_usage = bool((req.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: JsonDict, reason: str | None = None) -> tuple[None, JsonDict]:
            c: JsonDict = {**head, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}
            return None, ({**c, "usage": None} if with_usage else c)

        events = []
        if tool_call:
            fn = tool_call["function"]
            events.append(chunk({"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": tool_call["id"], "type": "function",
                 "function": {"name": fn["name"], "arguments": ""}}]}))
            events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
                       for part in _thirds(fn["arguments"])]
        else:
            events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            events += [chunk({"content": part}) for part in _pieces(text)]
        events.append(chunk({}, finish))
        if with_usage:
            events.append((None, {**head, "object": "chat.completion.chunk", "choices": [],
                                  "usage": usage}))
        events.append((None, "[DONE]"))
        self._send_sse(events)

    def ep_embeddings(self, req: JsonDict) -> None:
        raw = req.get("input")
        texts = [raw] if isinstance(raw, str) or not isinstance(raw, list) else raw
        if texts and isinstance(texts[0], int):  # a single list of token ids
            texts = [texts]
        strings = [t if isinstance(t, str) else json.dumps(t) for t in texts]
        as_b64 = req.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(strings):
            vec = _embedding(text)
            packed = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
            emb: Any = packed if as_b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(_words(s) for s in strings)
        self._send_json(200, {"object": "list", "data": data, "model": req.get("model"),
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def ep_messages(self, req: JsonDict) -> None:
        messages = [m for m in req.get("messages") or [] if isinstance(m, dict)]
        last = _last_text(messages)
        text = self.server.fake.reply_for(last)
        tools = [t for t in req.get("tools") or [] if isinstance(t, dict)]
        # with tools, a message about the weather gets a tool_use block instead of text
        tool_use = None
        if tools and "weather" in last:
            tool_use = {"type": "tool_use", "id": "toolu_" + self._key,
                        "name": tools[0].get("name", "tool"), "input": {"city": "Paris"}}
        stop = ("tool_use" if tool_use else "max_tokens" if req.get("max_tokens") == 1
                else "end_turn")
        in_tok = sum(_words(_text_of(m.get("content"))) for m in messages)
        arguments = json.dumps(tool_use["input"]) if tool_use else ""
        out_tok = _words(arguments if tool_use else text)
        head = {"id": "msg_" + self._key, "type": "message",
                "role": "assistant", "model": req.get("model")}
        if not req.get("stream"):
            block = tool_use or {"type": "text", "text": text}
            self._send_json(200, {**head, "content": [block],
                                  "stop_reason": stop, "stop_sequence": None,
                                  "usage": {"input_tokens": in_tok, "output_tokens": out_tok}})
            return
        start = {**head, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {"input_tokens": in_tok, "output_tokens": 1}}
        first = {**tool_use, "input": {}} if tool_use else {"type": "text", "text": ""}
        events: list[tuple[str | None, Any]] = [
            ("message_start", {"type": "message_start", "message": start}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": first}),
            ("ping", {"type": "ping"}),
        ]
        if tool_use:
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _thirds(arguments)]
        else:
            deltas = [{"type": "text_delta", "text": part} for part in _pieces(text)]
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": delta}) for delta in deltas]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": stop, "stop_sequence": None},
                               "usage": {"output_tokens": out_tok}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        self._send_sse(events)

    def ep_responses(self, req: JsonDict) -> None:
        fake = self.server.fake
        raw = req.get("input")
        items = [{"role": "user", "content": raw}] if isinstance(raw, str) else (raw or [])
        text = fake.reply_for(_last_text(items))
        key = self._key
        in_tok = sum(_words(_text_of(i.get("content"))) for i in items if isinstance(i, dict))
        out_tok = _words(text)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item = {"type": "message", "id": "msg_" + key, "status": "completed",
                "role": "assistant", "content": [part]}
        resp: JsonDict = {
            "id": "resp_" + key, "object": "response", "created_at": CREATED,
            "status": "completed", "completed_at": CREATED + 1, "error": None,
            "incomplete_details": None, "instructions": req.get("instructions"),
            "max_output_tokens": req.get("max_output_tokens"),
            "model": fake.snap_model(str(req.get("model"))), "output": [item],
            "parallel_tool_calls": True, "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None}, "service_tier": "default",
            "store": True, "temperature": 1.0, "text": {"format": {"type": "text"}},
            "tool_choice": "auto", "tools": req.get("tools") or [], "top_p": 1.0,
            "truncation": "disabled", "user": None, "metadata": req.get("metadata") or {},
            "usage": {"input_tokens": in_tok, "output_tokens": out_tok,
                      "total_tokens": in_tok + out_tok,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}},
        }
        if not req.get("stream"):
            self._send_json(200, resp)
            return
        pending = {**resp, "status": "in_progress", "completed_at": None, "output": [],
                   "usage": None}
        ids = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        steps: list[JsonDict] = [
            {"type": "response.created", "response": pending},
            {"type": "response.in_progress", "response": pending},
            {"type": "response.output_item.added", "output_index": 0,
             "item": {**item, "status": "in_progress", "content": []}},
            {"type": "response.content_part.added", **ids, "part": {**part, "text": ""}},
        ]
        steps += [{"type": "response.output_text.delta", **ids, "delta": piece, "logprobs": []}
                  for piece in _pieces(text)]
        steps += [
            {"type": "response.output_text.done", **ids, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **ids, "part": part},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": resp},
        ]
        self._send_sse((s["type"], {**s, "sequence_number": n}) for n, s in enumerate(steps))

    # Opt-in echoes of what the request carried, for the secret tests: nothing else calls them.
    def ep_echo(self, req: JsonDict) -> None:
        """GET /v1/echo: the request's headers and target as JSON; with ``?as=binary``, the
        same wrapped in bytes that are not UTF-8 (application/octet-stream); with ``?as=gzip``,
        gzipped without a Content-Encoding (a file served as it is stored); with ``?as=html``,
        in an HTML page that writes every letter and digit as a character reference."""
        if "as=binary" in self.path:
            self._send_bytes("application/octet-stream", b"\x89BIN\xff\xfe\x00" + self._echoed() + b"\x00\xff")
        elif "as=gzip" in self.path:
            self._send_bytes("application/gzip", gzip.compress(self._echoed()))
        elif "as=html" in self.path:
            text = "".join(f"&#{ord(c)};" if c.isalnum() else c for c in self._echoed().decode())
            self._send_bytes("text/html; charset=utf-8", f"<html><body><pre>{text}</pre></body></html>".encode())
        else:
            self._send_json(200, json.loads(self._echoed()))

    def ep_speech(self, req: JsonDict) -> None:
        """POST /v1/audio/speech: binary "audio"; an ``input`` starting with "echo" gets the
        request's headers and target inside the bytes."""
        text = str(req.get("input", ""))
        extra = self._echoed() if text.startswith("echo") else text.encode()
        self._send_bytes("audio/mpeg", b"ID3\x04\x00\xff\xfb\x90\x00" + extra + b"\xff\xfb")

    # -- multipart uploads (OpenAI): what was received, described -----------------------------
    def _upload(self) -> tuple[str, bytes]:
        """The uploaded file's name and bytes (the form's "file" or "image" field)."""
        fields = self._fields
        name, content = fields.get("file") or fields.get("image") or (None, b"")
        return str(name), content

    def _about(self, filename: str, content: bytes) -> str:
        return f"{filename} ({len(content)} bytes, sha256 {hashlib.sha256(content).hexdigest()[:12]})"

    def ep_transcriptions(self, req: JsonDict) -> None:
        filename, content = self._upload()
        model = self._fields.get("model", (None, b""))[1].decode()
        prompt = self._fields.get("prompt", (None, b""))[1].decode()
        text = f"{model} heard {self._about(filename, content)}" + (f" after {prompt!r}" if prompt else "")
        self._send_json(200, {"text": text})

    def ep_translations(self, req: JsonDict) -> None:
        filename, content = self._upload()
        self._send_json(200, {"text": f"translated {self._about(filename, content)}"})

    def ep_files(self, req: JsonDict) -> None:
        filename, content = self._upload()
        self._send_json(200, {
            "id": "file-" + hashlib.sha256(content).hexdigest()[:24], "object": "file",
            "bytes": len(content), "created_at": CREATED, "filename": filename,
            "purpose": self._fields.get("purpose", (None, b""))[1].decode(), "status": "processed",
        })

    def ep_image_edits(self, req: JsonDict) -> None:
        filename, content = self._upload()
        prompt = self._fields.get("prompt", (None, b""))[1].decode()
        image = b"\x89PNG\r\n\x1a\n" + hashlib.sha256(content + prompt.encode()).digest()
        self._send_json(200, {"created": CREATED, "data": [
            {"b64_json": base64.b64encode(image).decode(), "revised_prompt": f"{prompt} ({filename})"}]})

    # -- Gemini --------------------------------------------------------------------------------
    def ep_gemini(self, req: JsonDict) -> None:
        """POST /v1beta/models/{model}:generateContent (or v1), :streamGenerateContent?alt=sse,
        :batchEmbedContents."""
        model, method = self._match.group("model"), self._match.group("method")
        if method == "batchEmbedContents":
            texts = [_text_of((r.get("content") or {}).get("parts")) for r in req.get("requests") or []]
            self._send_json(200, {"embeddings": [{"values": _embedding(t)} for t in texts]})
            return
        contents = [c for c in req.get("contents") or [] if isinstance(c, dict)]
        last = _text_of(contents[-1].get("parts")) if contents else ""
        text = self.server.fake.reply_for(last)
        prompt = sum(_words(_text_of(c.get("parts"))) for c in contents)
        usage = {"promptTokenCount": prompt, "candidatesTokenCount": _words(text),
                 "totalTokenCount": prompt + _words(text)}
        head = {"modelVersion": model + "-001", "responseId": "gen-" + self._key}

        def answer(piece: str, done: bool) -> JsonDict:
            candidate: JsonDict = {"content": {"parts": [{"text": piece}], "role": "model"}}
            if done:
                candidate["finishReason"] = "STOP"
            return {"candidates": [{**candidate, "index": 0}], "usageMetadata": usage, **head}

        if method == "generateContent":
            self._send_json(200, answer(text, True))
            return
        if "alt=sse" not in self.path:
            raise ApiError(400, "this fake streams Gemini only as alt=sse")
        pieces = _pieces(text)
        chunks = [answer(p, i == len(pieces) - 1) for i, p in enumerate(pieces)]
        # Gemini separates its events with CRLF pairs
        self._send_chunked("text/event-stream", (f"data: {json.dumps(c)}\r\n\r\n".encode() for c in chunks))

    # -- Bedrock -------------------------------------------------------------------------------
    def ep_bedrock(self, req: JsonDict) -> None:
        """POST /model/{id}/converse, /converse-stream (event-stream frames), /invoke (the model's
        own body: Anthropic messages here)."""
        model = urllib.parse.unquote(self._match.group("model"))
        action = self._match.group("action")
        if action == "invoke":
            self.ep_messages({**req, "model": model.split(".", 1)[-1]})
            return
        messages = [m for m in req.get("messages") or [] if isinstance(m, dict)]
        last = _text_of(messages[-1].get("content")) if messages else ""
        text = self.server.fake.reply_for(last)
        prompt = sum(_words(_text_of(m.get("content"))) for m in messages)
        usage = {"inputTokens": prompt, "outputTokens": _words(text), "totalTokens": prompt + _words(text)}
        if action == "converse":
            self._send_json(200, {"output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                                  "stopReason": "end_turn", "usage": usage, "metrics": {"latencyMs": 12}})
            return
        pad = "abcdefghijklmnopqrstuvwxyz"
        frames = [_frame("messageStart", {"p": pad[:7], "role": "assistant"})]
        frames += [_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}, "p": pad[:n]})
                   for n, piece in enumerate(_pieces(text), 3)]
        frames += [_frame("contentBlockStop", {"contentBlockIndex": 0, "p": pad[:5]}),
                   _frame("messageStop", {"p": pad, "stopReason": "end_turn"}),
                   _frame("metadata", {"metrics": {"latencyMs": 12}, "p": pad[:4], "usage": usage})]
        self._send_chunked("application/vnd.amazon.eventstream", frames)

    # -- Ollama --------------------------------------------------------------------------------
    def ep_ollama_chat(self, req: JsonDict) -> None:
        """POST /api/chat: one JSON answer, or NDJSON lines (the default: "stream" absent)."""
        messages = [m for m in req.get("messages") or [] if isinstance(m, dict)]
        text = self.server.fake.reply_for(_last_text(messages))
        head = {"model": req.get("model"), "created_at": "2024-08-06T00:00:00.000000Z"}
        last = {"done_reason": "stop", "done": True, "total_duration": 4200, "load_duration": 100,
                "prompt_eval_count": sum(_words(_text_of(m.get("content"))) for m in messages),
                "prompt_eval_duration": 1000, "eval_count": _words(text), "eval_duration": 3000}
        if req.get("stream") is False:
            self._send_json(200, {**head, "message": {"role": "assistant", "content": text}, **last})
            return
        lines = [{**head, "message": {"role": "assistant", "content": p}, "done": False} for p in _pieces(text)]
        lines.append({**head, "message": {"role": "assistant", "content": ""}, **last})
        self._send_chunked("application/x-ndjson",
                           (json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines))

    def ep_ollama_embed(self, req: JsonDict) -> None:
        raw = req.get("input")
        texts = [raw] if isinstance(raw, str) else list(raw or [])
        self._send_json(200, {"model": req.get("model"), "embeddings": [_embedding(str(t)) for t in texts],
                              "total_duration": 1200, "load_duration": 100,
                              "prompt_eval_count": sum(_words(str(t)) for t in texts)})


# multipart/form-data endpoints: their bodies are forms, not JSON
# Routes that take a body that is not JSON as it is.
RAW_ROUTES = frozenset({"/v1/echo"})
FORM_ROUTES = frozenset({"/v1/audio/transcriptions", "/v1/audio/translations", "/v1/files", "/v1/images/edits"})

ROUTES = {
    ("GET", "/v1/models"): _Handler.ep_models,
    ("POST", "/v1/chat/completions"): _Handler.ep_chat,
    ("POST", "/v1/embeddings"): _Handler.ep_embeddings,
    ("POST", "/v1/messages"): _Handler.ep_messages,
    ("POST", "/v1/responses"): _Handler.ep_responses,
    ("GET", "/v1/echo"): _Handler.ep_echo,
    ("POST", "/v1/echo"): _Handler.ep_echo,
    ("POST", "/v1/audio/speech"): _Handler.ep_speech,
    ("POST", "/v1/audio/transcriptions"): _Handler.ep_transcriptions,
    ("POST", "/v1/audio/translations"): _Handler.ep_translations,
    ("POST", "/v1/files"): _Handler.ep_files,
    ("POST", "/v1/images/edits"): _Handler.ep_image_edits,
    ("POST", "/api/chat"): _Handler.ep_ollama_chat,
    ("POST", "/api/embed"): _Handler.ep_ollama_embed,
}

# Paths with a parameter: (method, regex of the whole path) -> endpoint
PATTERN_ROUTES = {
    ("POST", r"/v1(?:beta)?/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent|batchEmbedContents)"):
        _Handler.ep_gemini,
    ("POST", r"/model/(?P<model>[^/]+)/(?P<action>converse|converse-stream|invoke)"): _Handler.ep_bedrock,
    # a credential in the path, as chat-bot APIs take it (/bot<token>/sendMessage): echoed
    ("GET", r"/v1/echo/[^?]*"): _Handler.ep_echo,
}


if __name__ == "__main__":
    # Serve until interrupted (or for at most an hour), for recording the examples by hand:
    #   python tests/fakeapi.py &  OPENAI_BASE_URL=<printed url>/v1 pytest examples --llm-cache=record
    with FakeLLMServer() as _server:
        print(_server.url, flush=True)
        try:
            time.sleep(3600)
        except KeyboardInterrupt:
            pass
