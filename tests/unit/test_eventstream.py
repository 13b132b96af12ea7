"""AWS event-stream frames: written valid (botocore parses them), read back exactly, stored as
readable messages; and NDJSON bodies kept as lines."""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import struct
from datetime import datetime, timezone
from typing import Any

import pytest
import yaml
from botocore.eventstream import EventStreamBuffer

from llm_cache import eventstream
from llm_cache.cassette import Body, Entry, dump_entry, encode_body, load_entry
from llm_cache.errors import CassetteError
from llm_cache.eventstream import Message, decode, encode, encode_all

HEADERS = {":event-type": "contentBlockDelta", ":content-type": "application/json", ":message-type": "event"}
MESSAGES = [
    Message({**HEADERS, ":event-type": "messageStart"}, b'{"p":"abc","role":"assistant"}'),
    Message(HEADERS, '{"contentBlockIndex":0,"delta":{"text":"héllo "}}'.encode()),
    Message({**HEADERS, ":event-type": "messageStop"}, b'{"stopReason":"end_turn"}'),
    Message({**HEADERS, ":event-type": "metadata"}, b'{"usage":{"inputTokens":2,"outputTokens":3}}'),
]
STREAM = encode_all(MESSAGES)


def test_frames_we_write_are_frames_botocore_reads() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(STREAM)
    parsed = list(buffer)
    assert [(m.headers, m.payload) for m in parsed] == [(dict(m.headers), m.payload) for m in MESSAGES]


@pytest.mark.parametrize("reader", ["botocore", "ours"])
def test_a_stream_reads_back_to_its_messages(reader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if reader == "ours":  # as without botocore installed
        real_import = builtins.__import__

        def no_botocore(name: str, *args: Any, **kwargs: Any) -> Any:
            if name.startswith("botocore"):
                raise ImportError(name)
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_botocore)
    assert decode(STREAM) == MESSAGES
    frame = encode(MESSAGES[0])
    spoiled = frame[:-5] + bytes([frame[-5] ^ 1]) + frame[-4:]  # a payload byte: the message CRC fails
    cases = [STREAM[:-1], STREAM + b"\x00", spoiled, b"", b"not frames at all"]
    assert [decode(data) for data in cases] == [None] * len(cases)


def test_a_header_that_is_not_a_string_is_not_kept_as_messages() -> None:
    headers = b"\x05:flag\x00"  # type 0: boolean true
    prelude = struct.pack(">II", 16 + len(headers), len(headers))
    frame = prelude + struct.pack(">I", binascii.crc32(prelude)) + headers
    frame += struct.pack(">I", binascii.crc32(frame))
    assert decode(frame) is None
    assert encode_body(frame, eventstream.CONTENT_TYPE).kind == "base64"  # kept, as bytes


def _entry(body: Body, content_type: str) -> Entry:
    return Entry(key="b" * 64, recorded_at=datetime(2026, 1, 1, tzinfo=timezone.utc), model="m",
                 model_version="m", method="POST", path="/model/m/converse-stream", query=[],
                 request_headers={}, request_body=Body("json", {}), status=200,
                 response_headers={"content-type": content_type}, response_body=body,
                 offsets_ms=[float(i) for i in range(len(body.value))])


def test_an_event_stream_is_stored_as_messages_and_replayed_frame_by_frame() -> None:
    odd = Message(HEADERS, b'{ "spaced": true }')  # JSON that would not come back byte for byte
    binary = Message(HEADERS, b"\xff\x00raw")
    data = STREAM + encode(odd) + encode(binary)
    body = encode_body(data, eventstream.CONTENT_TYPE)
    assert body.kind == "eventstream"
    assert body.value[0] == {"headers": MESSAGES[0].headers, "json": {"p": "abc", "role": "assistant"}}
    assert body.value[-2:] == [{"headers": HEADERS, "text": '{ "spaced": true }'},
                               {"headers": HEADERS, "base64": base64.b64encode(b"\xff\x00raw").decode()}]
    assert body.to_bytes() == data
    assert body.chunks() == [encode(m) for m in (*MESSAGES, odd, binary)]
    assert body.json_values()[-1] == {"usage": {"inputTokens": 2, "outputTokens": 3}}  # not text, not base64

    text = dump_entry(_entry(body, eventstream.CONTENT_TYPE))
    assert ":event-type: messageStart" in text and "text: 'héllo '" in text
    loaded = load_entry(text, "c.yaml")
    assert loaded.response_bytes() == data and loaded.response_chunks() == body.chunks()


@pytest.mark.parametrize("bad, reason", [
    ("not a list", "must be a list of messages"),
    ([{"headers": {}, "json": {}, "text": "x"}], "must hold headers and one payload"),
    ([{"headers": {":a": 1}, "json": {}}], "headers must map names to strings"),
    ([{"headers": {}, "base64": "!!"}], "base64 is not valid base64"),
])
def test_a_bad_eventstream_section_is_a_cassette_error(bad: Any, reason: str) -> None:
    doc = yaml.safe_load(dump_entry(_entry(encode_body(STREAM, eventstream.CONTENT_TYPE), eventstream.CONTENT_TYPE)))
    doc["response"]["eventstream"] = bad
    doc["response"].pop("offsets_ms")
    with pytest.raises(CassetteError, match=reason):
        load_entry(yaml.safe_dump(doc), "c.yaml")


NDJSON = b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in [
    {"model": "llama3.2", "message": {"role": "assistant", "content": "echo: "}, "done": False},
    {"model": "llama3.2", "message": {"role": "assistant", "content": "hi"}, "done": False},
    {"model": "llama3.2", "message": {"role": "assistant", "content": ""}, "done": True,
     "prompt_eval_count": 1, "eval_count": 2},
])


def test_ndjson_is_stored_as_lines_and_replayed_line_by_line() -> None:
    body = encode_body(NDJSON, "application/x-ndjson")
    assert body.kind == "lines" and len(body.value) == 3
    assert body.to_bytes() == NDJSON
    assert body.chunks() == [line + b"\n" for line in NDJSON.split(b"\n")[:-1]]
    assert [v["done"] for v in body.json_values()] == [False, False, True]
    loaded = load_entry(dump_entry(_entry(body, "application/x-ndjson")), "c.yaml")
    assert loaded.response_chunks() == body.chunks() and loaded.offsets_ms == [0.0, 1.0, 2.0]
    # what would not come back exactly stays text: no final newline, a blank line, CRLF
    for other in (NDJSON[:-1], NDJSON + b"\n", NDJSON.replace(b"\n", b"\r\n")):
        assert encode_body(other, "application/x-ndjson") == Body("text", other.decode())
