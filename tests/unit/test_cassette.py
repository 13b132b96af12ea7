"""Cassette documents: round trips, readable YAML, validation on load."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
import yaml

from llm_cache.cassette import Body, Entry, dump_entry, encode_body, load_entry
from llm_cache.errors import CassetteError

KEY = "0123456789abcdef" * 4


def make_entry(response_body: Body, request_body: Body | None = None, **kw) -> Entry:
    fields = dict(
        key=KEY,
        recorded_at=datetime(2026, 11, 27, 9, 0, 0, 123456, tzinfo=timezone.utc),
        model="gpt-4o",
        model_version="gpt-4o@2024-08-06",
        method="POST",
        path="/v1/chat/completions",
        query=[["api-version", "2024-06-01"]],
        request_headers={"content-type": "application/json"},
        request_body=request_body or Body("json", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        status=200,
        response_headers={"content-type": "application/json"},
        response_body=response_body,
        response_model="gpt-4o-2024-08-06",
        system_fingerprint="fp_1",
        duration_ms=812.4,
        usage={"input_tokens": 12, "output_tokens": 40},
    )
    fields.update(kw)
    return Entry(**fields)


def roundtrip(entry: Entry) -> Entry:
    return load_entry(dump_entry(entry), "c.yaml", expected_key=entry.key)


LF_STREAM = b'data: {"a":1}\n\nevent: done\ndata: {"b":2}\n\ndata: [DONE]\n\n'
CRLF_STREAM = LF_STREAM.replace(b"\n", b"\r\n")


# -- encode_body ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, ctype, kind",
    [
        (b'{"a": [1, 2.5, "x"]}', "application/json", "json"),
        (b"[1, 2]", None, "json"),
        (LF_STREAM, "text/event-stream; charset=utf-8", "events"),
        (CRLF_STREAM, "text/event-stream", "events"),
        (b"data: {}\n\ndata: [DONE]\n", "text/event-stream", "text"),  # no blank line at the end
        (b"data: x\r\n\r\ndata: y\n\n", "text/event-stream", "text"),  # mixed newlines
        (b"plain text\n", "text/plain", "text"),
        (b"{not json", "application/json", "text"),
        (b"\x89PNG\r\n\x1a\n\x00\xff", "image/png", "base64"),
        (b"ctl \x01 char", "text/plain", "base64"),
    ],
)
def test_encode_body_kind_and_exact_bytes(raw, ctype, kind):
    body = encode_body(raw, ctype)
    assert body.kind == kind
    if kind != "json":
        assert body.to_bytes() == raw
    back = roundtrip(make_entry(body)).response_body
    assert back == body
    assert back.to_bytes() == body.to_bytes()


def test_sse_events_keep_event_lines():
    body = encode_body(LF_STREAM, "text/event-stream")
    assert body.value == ['data: {"a":1}', 'event: done\ndata: {"b":2}', "data: [DONE]"]
    assert body.newline == "\n"


def test_crlf_stream_stored_with_newline_and_reproduced():
    body = encode_body(CRLF_STREAM, "text/event-stream")
    assert body.newline == "\r\n"
    assert body.value[1] == 'event: done\ndata: {"b":2}'
    text = dump_entry(make_entry(body))
    assert yaml.safe_load(text)["response"]["newline"] == "\r\n"
    assert load_entry(text, "c.yaml").response_body.to_bytes() == CRLF_STREAM


def test_json_body_round_trips_value():
    body = encode_body('{"a": {"b": [1, 2.5, null, true]}, "é": "ü"}'.encode(), "application/json")
    assert roundtrip(make_entry(body)).response_body.value == {"a": {"b": [1, 2.5, None, True]}, "é": "ü"}


@pytest.mark.parametrize(
    "body",
    [
        Body("json", {"id": "x", "choices": [{"message": {"content": "yes"}}]}),
        Body("events", ['data: {"a":1}', "event: e\ndata: x"], "\r\n"),
        Body("text", "hello\nworld"),
        Body("base64", "iVBORw0KGgoAAP8="),
    ],
)
def test_entry_round_trip(body):
    entry = make_entry(body, request_body=Body("text", "q=1"))
    assert roundtrip(entry) == entry


def test_entry_round_trip_without_optional_fields():
    entry = make_entry(
        Body("text", ""), query=[], response_model=None, system_fingerprint=None, duration_ms=None, usage=None
    )
    doc = yaml.safe_load(dump_entry(entry))
    assert not {"response_model", "system_fingerprint", "duration_ms", "usage"} & set(doc)
    assert "query" not in doc["request"]
    assert roundtrip(entry) == entry


# -- readable YAML ---------------------------------------------------------------------


def test_dump_is_readable_yaml():
    entry = make_entry(encode_body(LF_STREAM, "text/event-stream"))
    text = dump_entry(entry)
    doc = yaml.safe_load(text)
    assert list(doc)[:3] == ["llm_cache", "key", "recorded_at"]
    assert doc["llm_cache"] == 2 and doc["key"] == KEY
    assert doc["request"]["json"]["messages"] == [{"role": "user", "content": "hi"}]
    assert "  json:\n    model: gpt-4o\n" in text
    # the multi-line event is a literal block, not a quoted string with \n escapes
    assert re.search(r"^  - \|-?\n    event: done\n    data: \{\"b\":2\}$", text, re.M)
    assert "\\n" not in text


# -- load errors -------------------------------------------------------------------------


def _doc() -> dict:
    return make_entry(Body("json", {"ok": True})).to_doc()


def _mutated(path: str, value):
    doc = _doc()
    *parents, last = path.split(".")
    target = doc
    for part in parents:
        target = target[part]
    target[last] = value
    return yaml.safe_dump(doc)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("llm_cache: 1\nkey: [unclosed\n", "not valid YAML"),
        # what PyYAML found, and where, in one line
        ("llm_cache: 1\nkey: [unclosed\n",
         "not valid YAML: while parsing a flow sequence, line 2: did not find expected ',' or ']', line 3, column 1"),
        ("llm_cache: 1\n\tkey: x\n", "not valid YAML: while scanning a plain scalar, line 1: found a tab character "
         "that violates indentation, line 2, column 1"),
        ("- 1\n- 2\n", "expected a mapping at the top (key:, request:, response:), got a list"),
        ("", "it is empty: no YAML document in it"),
        ("# a comment only\n\n", "it is empty: no YAML document in it"),
        (_mutated("llm_cache", 3), "unknown format version 3"),
        (_mutated("key", "xyz"), "key must be a 64-character hex sha256"),
        (_mutated("key", KEY.upper()), "key must be a 64-character hex sha256"),
        (_mutated("response.status", 99), "response.status must be an HTTP status code"),
        (_mutated("response.status", "200"), "response.status must be an HTTP status code"),
        (_mutated("response.status", True), "response.status must be an HTTP status code"),
        (_mutated("response.base64", "aGk="), "response has more than one body (json, base64)"),
        (_mutated("response.text", "also"), "response has more than one body (json, text)"),
        (_mutated("request.headers", {"content-type": 5}), "request.headers must map names to strings"),
        (_mutated("response.headers", {"x": None}), "response.headers must map names to strings"),
        (_mutated("recorded_at", "yesterday"), "recorded_at is not an ISO 8601 time"),
        (_mutated("usage", {"input_tokens": "12"}), "usage must map token kinds to integers"),
        (_mutated("request.query", [["a"]]), "request.query must be a list of [name, value] pairs"),
        # hand edits with what JSON cannot hold: a CassetteError, not a TypeError at replay
        (_mutated("response.json", {"ok": b"hello"}), "not valid YAML: a !!binary value, which a cassette cannot hold"),
        (_mutated("response.json", {"ok": {1, 2}}), "not valid YAML: a !!set value, which a cassette cannot hold"),
        (_mutated("key_rules", {"ignore_fields": 5}), "key_rules may hold ignore_fields (a list of strings)"),
    ],
)
def test_load_errors_name_path_and_reason(text, reason):
    with pytest.raises(CassetteError) as info:
        load_entry(text, "cassettes/m/abc.yaml")
    assert info.value.path == "cassettes/m/abc.yaml"
    assert reason in info.value.reason
    assert "cassettes/m/abc.yaml" in str(info.value) and reason in str(info.value)


def test_a_hand_written_date_in_a_body_is_the_text_it_reads_as():
    """JSON has no dates: ``created: 2024-01-01`` typed into a cassette replays as the string
    "2024-01-01" (a date object failed every replay with a TypeError); an unquoted
    ``recorded_at`` still reads as its time."""
    import datetime as dt

    text = dump_entry(make_entry(Body("json", {"created": 1}))).replace("created: 1", "created: 2024-01-01")
    text = "\n".join(
        "recorded_at: 2026-01-02 03:04:05" if line.startswith("recorded_at:") else line for line in text.splitlines()
    )
    entry = load_entry(text, "c.yaml")
    assert entry.response_body.value == {"created": "2024-01-01"}
    assert entry.response_body.to_bytes() == b'{"created":"2024-01-01"}'
    assert entry.recorded_at == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def test_bad_base64_is_refused():
    doc = _doc()
    del doc["response"]["json"]
    doc["response"]["base64"] = "abc"
    with pytest.raises(CassetteError, match="response.base64 is not valid base64"):
        load_entry(yaml.safe_dump(doc), "c.yaml")


def test_key_mismatch_is_refused():
    with pytest.raises(CassetteError, match="not the key it was looked up by") as info:
        load_entry(dump_entry(make_entry(Body("text", "x"))), "c.yaml", expected_key="f" * 64)
    assert info.value.path == "c.yaml"


def test_python_tags_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    text = f"!!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(CassetteError, match="not valid YAML"):
        load_entry(text, "evil.yaml")
    nested = yaml.safe_dump(_doc()).replace("llm_cache: 2", f"llm_cache: !!python/object/apply:os.system ['touch {marker}']")
    assert "!!python" in nested
    with pytest.raises(CassetteError, match="evil.yaml"):
        load_entry(nested, "evil.yaml")
    assert not marker.exists()


# -- replay -------------------------------------------------------------------------------


def _replayed(entry):
    """What replay sends: the engine's client-neutral response."""
    from llm_cache.exchange import Response

    return Response(entry.status, entry.header_items(), entry.response_chunks())


def test_replayed_response_recomputes_content_length():
    entry = make_entry(
        Body("json", {"a": 1}), response_headers={"content-type": "application/json", "content-length": "999"}
    )
    response = _replayed(entry)
    headers = dict(response.headers)
    assert response.body == b'{"a":1}'
    assert headers["content-length"] == "7"
    assert headers["content-type"] == "application/json"
    assert (response.status, response.reason) == (200, "OK")
    assert not any(name.lower() == "content-encoding" for name in headers)


def test_replayed_response_never_has_content_encoding():
    text = dump_entry(make_entry(Body("json", {"a": 1}), response_headers={"content-encoding": "gzip"}))
    response = _replayed(load_entry(text, "c.yaml"))
    assert "content-encoding" not in {name.lower() for name, _ in response.headers}


def test_replayed_response_has_one_content_length_whatever_its_case():
    entry = make_entry(Body("json", {"a": 1}), response_headers={"Content-Length": "999"})
    lengths = [v for name, v in _replayed(entry).headers if name.lower() == "content-length"]
    assert lengths == ["7"]
