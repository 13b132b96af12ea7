"""multipart/form-data bodies: keyed on their parts whatever the boundary, shown as parts."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
import requests
import yaml

from llm_cache.cassette import Body, Entry, dump_entry, encode_body, encode_request_body, load_entry
from llm_cache.errors import CassetteError
from llm_cache.key import KeyRules, make_key
from llm_cache.multipart import describe

URL = "https://api.openai.com/v1/audio/transcriptions"
AUDIO = b"RIFF\x00\x01\x02binary audio"


def form(files: dict[str, Any] | None = None, data: dict[str, str] | None = None,
         client: str = "httpx") -> tuple[bytes, dict[str, str]]:
    files = {"file": ("hello.wav", AUDIO, "audio/wav")} if files is None else files
    data = {"model": "whisper-1", "language": "en"} if data is None else data
    if client == "httpx":
        request = httpx.Request("POST", URL, data=data, files=files)
        return request.read(), dict(request.headers)
    prepared = requests.Request("POST", URL, data=data, files=files).prepare()
    assert isinstance(prepared.body, bytes)
    return prepared.body, dict(prepared.headers)


def key(body: bytes, headers: dict[str, str], rules: KeyRules | None = None) -> str:
    return make_key("POST", URL, body, headers, rules or KeyRules()).key


def test_the_same_form_has_one_key_whatever_the_boundary_and_the_client() -> None:
    (one, h1), (two, h2), (three, h3) = form(), form(), form(client="requests")
    assert one != two  # a random boundary each time
    assert key(one, h1) == key(two, h2) == key(three, h3)


@pytest.mark.parametrize("change", [
    {"files": {"file": ("hello.wav", AUDIO + b"!", "audio/wav")}},
    {"files": {"file": ("other.wav", AUDIO, "audio/wav")}},
    {"files": {"file": ("hello.wav", AUDIO, "audio/mpeg")}},
    {"data": {"model": "whisper-1", "language": "fr"}},
    {"data": {"language": "en", "model": "whisper-1"}},  # the order of the parts
])
def test_content_file_name_type_text_and_order_change_the_key(change: dict[str, Any]) -> None:
    assert key(*form(**change)) != key(*form())


def test_the_model_field_names_the_model_and_ignored_fields_are_left_out() -> None:
    body, headers = form(data={"model": "whisper-1", "run_id": "r1"})
    rk = make_key("POST", URL, body, headers)
    assert (rk.model, rk.model_version, rk.body) == ("whisper-1", "whisper-1", None)
    rules = KeyRules(ignore_fields=("run_id",))
    other_run = form(data={"model": "whisper-1", "run_id": "r2"})
    assert key(body, headers, rules) == key(*other_run, rules) != key(*other_run)


def test_a_broken_form_is_hashed_as_bytes() -> None:
    body, headers = form()
    cut = body[: len(body) // 2]
    assert describe(cut, headers["content-type"]) is None
    rk = make_key("POST", URL, cut, headers)
    assert rk.model is None and rk.key != key(body, headers)


def test_the_cassette_shows_the_parts_and_recomputes_the_key_from_them() -> None:
    body, headers = form(data={"model": "whisper-1", "prompt": "two\nlines"})
    shown = encode_request_body(body, headers["content-type"])
    assert shown == Body("multipart", [
        {"name": "model", "text": "whisper-1"},
        {"name": "prompt", "text": "two\nlines"},
        {"name": "file", "filename": "hello.wav", "content_type": "audio/wav", "size": len(AUDIO),
         "sha256": shown.value[2]["sha256"]},
    ])
    assert make_key("POST", URL, b"", {}, form=shown.value).key == key(body, headers)
    # a response is never described: its bytes are what replay sends
    assert encode_body(body, headers["content-type"]).kind == "base64"


@pytest.mark.parametrize("bad, reason", [
    ({"name": "file", "size": 3}, "must hold a text, or a size and a sha256"),
    ({"name": "file", "size": 3, "sha256": "xyz"}, "must hold a text, or a size and a sha256"),
    ({"name": 7, "text": "x"}, "must map name, filename, content_type, text and sha256 to strings"),
])
def test_a_bad_multipart_section_is_a_cassette_error(bad: dict[str, Any], reason: str) -> None:
    good = Entry(key="a" * 64, recorded_at=datetime(2026, 1, 1, tzinfo=timezone.utc), model="whisper-1",
                 model_version="whisper-1", method="POST", path="/v1/audio/transcriptions", query=[],
                 request_headers={"content-type": "multipart/form-data"},
                 request_body=Body("multipart", [{"name": "model", "text": "whisper-1"}]), status=200,
                 response_headers={"content-type": "application/json"}, response_body=Body("json", {"text": "hi"}))
    text = dump_entry(good)
    assert load_entry(text, "c.yaml").request_body == good.request_body
    doc = yaml.safe_load(text)
    doc["request"]["multipart"] = [bad]
    with pytest.raises(CassetteError, match=reason):
        load_entry(yaml.safe_dump(doc), "c.yaml")
