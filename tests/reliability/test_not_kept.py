"""Record only what replays: an answer that would not replay as it was received is not stored.

Each case goes through the real openai SDK and plain httpx2 against the local server,
told to spoil its answer (a gzip body that does not decode, a stream cut before its
terminator), or sending one larger than the cassette limit. What is refused is counted
with its reason in the summary and the report; the test still gets what the API sent.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from typing import Any

import pytest
from conftest import Project

from llm_cache import cassette
from llm_cache.encoding import UndecodableBody, decode_content
from llm_cache.providers import stream_complete, stream_ended

QUIET = ("-W", "ignore::llm_cache.errors.LLMCacheWarning")


def _report(project: Project, result: pytest.RunResult) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project.pytester.path / "r.json").read_text())
    return data


def _calls(project: Project) -> int:
    return project.server.count()


# -- too large ---------------------------------------------------------------------------------

LARGE = """
from conftest import chat

def test_small(client, llm_cache, save):
    save("small", chat(client, "short").choices[0].message.content)

def test_large(client, llm_cache, save):
    save("large", len(chat(client, "word " * 1500).choices[0].message.content))
"""


def test_an_answer_larger_than_the_cassette_limit_is_not_stored(project: Project) -> None:
    project.pytester.makepyfile(test_large=LARGE)
    project.pytester.makeini("[pytest]\nllm_cache_max_cassette_size = 8KiB\n")
    result = project.run("--llm-cache=record", "--llm-cache-report=r.json")
    result.assert_outcomes(passed=2)
    assert project.result("large") > 7000  # the test got the whole answer
    [kept] = project.files()
    assert "short" in kept.read_text()
    assert _report(project, result)["not_stored_reasons"] == {"too large": 1}
    result.stdout.fnmatch_lines([
        ("*NotStoredWarning: not storing *: it would be * bytes, more than the limit of 8192 bytes a cassette"
        " may hold; raise it with the ini setting llm_cache_max_cassette_size (default 64MiB)"),
        "not stored: 1 (too large 1)",
    ])


def test_the_raised_limit_is_the_loaders_too(project: Project) -> None:
    """What a limit lets a run record, a run with that limit reads; the default limit is back after."""
    project.pytester.makepyfile(test_large=LARGE)
    project.pytester.makeini("[pytest]\nllm_cache_max_cassette_size = 32KiB\n")
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    assert len(project.files()) == 2 and max(p.stat().st_size for p in project.files()) > 8192
    assert cassette.MAX_CASSETTE_BYTES == 64 * 1024 * 1024  # this process's limit is untouched
    calls = _calls(project)
    shutil.rmtree(project.cassettes / ".llm-cache")  # no parsed copies: the YAML is read
    project.run().assert_outcomes(passed=2)  # replay reads the large cassette
    assert _calls(project) == calls
    # with a limit below it, the same cassette is refused on reading (a clear error, no call)
    project.pytester.makeini("[pytest]\nllm_cache_max_cassette_size = 8KiB\n")
    shutil.rmtree(project.cassettes / ".llm-cache", ignore_errors=True)
    result = project.run()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*cassette * is * bytes, more than llm_cache_max_cassette_size allows (8192 bytes); it is left as it is.",
        "*Raise the ini setting llm_cache_max_cassette_size (or -o llm_cache_max_cassette_size=SIZE) above its size to read it.",
    ])
    assert _calls(project) == calls
    # it is sound, not corrupt: record neither moves it aside nor records it again (the same
    # limit would refuse the new answer, and nothing would be left)
    before = {p: p.read_bytes() for p in project.files()}
    result = project.run("--llm-cache=record")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*more than llm_cache_max_cassette_size allows (8192 bytes); it is left as it is."])
    assert "corrupt" not in result.stdout.str()
    assert {p: p.read_bytes() for p in project.files()} == before
    assert not list(project.cassettes.rglob("*.corrupt"))
    assert _calls(project) == calls


@pytest.mark.parametrize("value", ["big", "0", "0.5b", "2EB"])
def test_a_bad_cassette_limit_is_a_usage_error(project: Project, value: str) -> None:
    project.pytester.makeini(f"[pytest]\nllm_cache_max_cassette_size = {value}\n")
    result = project.run()
    assert result.ret == 4
    result.stderr.fnmatch_lines([f"ERROR: llm_cache_max_cassette_size must be a size *, got '{value}'"])


# -- undecodable ---------------------------------------------------------------------------------

SDK_PLAIN = """
from conftest import chat

def test_sdk(client, llm_cache, save):
    try:
        save("sdk", chat(client, "spoil me").choices[0].message.content)
    except Exception as exc:
        save("sdk", type(exc).__name__)
"""

HTTPX2_PLAIN = """
import os
import httpx2

def test_httpx2(llm_cache, save):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "spoil me too"}]}
    try:
        response = httpx2.post(os.environ["FAKE_LLM_URL"] + "/v1/chat/completions", json=body,
                               headers={"accept-encoding": "gzip"})
        save("httpx2", response.json()["choices"][0]["message"]["content"])
    except Exception as exc:
        save("httpx2", type(exc).__name__)
"""

URLLIB_PLAIN = """
import json, os, urllib.request

def test_urllib(llm_cache, save):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "spoil urllib"}]}
    request = urllib.request.Request(
        os.environ["FAKE_LLM_URL"] + "/v1/chat/completions", data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "accept-encoding": "gzip"})
    with urllib.request.urlopen(request) as response:  # urllib hands over the gzip bytes as sent
        save("urllib", response.read()[:2].hex())
"""


def test_a_gzip_body_cut_short_is_not_stored(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx reads a truncated gzip body without an error; what it gives is half an answer,
    which the SDK fails to parse. It used to be stored, as base64 of the gzip bytes."""
    monkeypatch.setattr(project.server, "corrupt_gzip", "truncated")
    project.pytester.makepyfile(test_sdk=SDK_PLAIN, test_httpx2=HTTPX2_PLAIN)
    result = project.run("--llm-cache=record", "--llm-cache-report=r.json")
    result.assert_outcomes(passed=2)
    assert (project.result("sdk"), project.result("httpx2")) == ("JSONDecodeError", "JSONDecodeError")
    assert project.files() == []
    assert _report(project, result)["not_stored_reasons"] == {"undecodable": 2}
    result.stdout.fnmatch_lines([("*not storing *: the body does not decode as Content-Encoding 'gzip':"
                                 " its gzip data ends before the end of the stream (cut short)")])


@pytest.mark.parametrize("how", ["crc", "garbage"])
def test_a_gzip_body_that_does_not_decode_is_not_stored(
    project: Project, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The SDK and httpx2 fail on it (DecodingError); urllib, which does not decode, hands
    it over as it came. None of the three is stored, and each is counted."""
    monkeypatch.setattr(project.server, "corrupt_gzip", how)
    project.pytester.makepyfile(test_sdk=SDK_PLAIN, test_httpx2=HTTPX2_PLAIN, test_urllib=URLLIB_PLAIN)
    result = project.run("--llm-cache=record", "--llm-cache-report=r.json", *QUIET)
    result.assert_outcomes(passed=3)
    assert (project.result("sdk"), project.result("httpx2")) == ("APIConnectionError", "DecodingError")
    assert project.result("urllib") == "1f8b"
    assert project.files() == []
    assert _report(project, result)["not_stored_reasons"] == {"undecodable": 3}


def test_junk_after_a_sound_gzip_body_is_ignored_as_clients_ignore_it(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients read the gzip member and ignore what follows; the answer is stored decoded
    (it used to be stored as base64 of the gzip bytes) and replays."""
    monkeypatch.setattr(project.server, "corrupt_gzip", "trailing")
    project.pytester.makepyfile(test_sdk=SDK_PLAIN, test_httpx2=HTTPX2_PLAIN)
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    assert (project.result("sdk"), project.result("httpx2")) == ("echo: spoil me", "echo: spoil me too")
    docs = [json.dumps(__import__("yaml").safe_load(p.read_text())) for p in project.files()]
    assert len(docs) == 2 and all('"object": "chat.completion"' in doc for doc in docs)
    calls = _calls(project)
    project.clear_results()
    project.run().assert_outcomes(passed=2)
    assert (project.result("sdk"), project.result("httpx2")) == ("echo: spoil me", "echo: spoil me too")
    assert _calls(project) == calls


BODY = b'{"id": "chatcmpl-1", "choices": [{"message": {"content": "hi"}}]}' * 8


@pytest.mark.parametrize(
    ("raw", "encoding"),
    [
        (gzip.compress(BODY, mtime=0)[:-20], "gzip"),
        (gzip.compress(BODY, mtime=0)[:-8] + b"\0\0\0\0" + gzip.compress(BODY, mtime=0)[-4:], "gzip"),
        (b"\x1f\x8b" + bytes(40), "gzip"),
        (bytes(range(256)), "deflate"),
    ],
    ids=["gzip-cut-short", "gzip-wrong-checksum", "gzip-magic-then-zeros", "deflate-of-nothing"],
)
def test_a_body_that_does_not_decode_raises(raw: bytes, encoding: str) -> None:
    with pytest.raises(UndecodableBody, match=f"does not decode as Content-Encoding '{encoding}'"):
        decode_content(raw, encoding)


def test_what_decodes_as_clients_decode_it() -> None:
    two_members = gzip.compress(BODY[:100], mtime=0) + gzip.compress(BODY[100:], mtime=0)
    assert decode_content(two_members, "gzip") == BODY  # as urllib3 reads them
    assert decode_content(gzip.compress(BODY, mtime=0) + b"junk", "gzip") == BODY
    # a body some client decoded already, the header left naming gzip: text, kept as it is
    assert decode_content(BODY, "gzip") == BODY


# -- incomplete streams --------------------------------------------------------------------------

STREAMS = """
import os
import httpx2
from conftest import chat

def test_chat_stream(client, llm_cache, save):
    save("chat", "".join(c.choices[0].delta.content or "" for c in chat(client, "cut me", stream=True) if c.choices))

def test_anthropic_stream(anthropic_client, llm_cache, save):
    with anthropic_client.messages.stream(model="claude-3-5-sonnet-latest", max_tokens=50,
                                          messages=[{"role": "user", "content": "cut claude"}]) as stream:
        save("anthropic", "".join(stream.text_stream))

def test_responses_stream(client, llm_cache, save):
    events = list(client.responses.create(model="gpt-4o", input="cut responses", stream=True))
    save("responses", events[-1].type)

def test_httpx2_stream(llm_cache, save):
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "cut httpx2"}]}
    with httpx2.stream("POST", os.environ["FAKE_LLM_URL"] + "/v1/chat/completions", json=body) as response:
        save("httpx2", list(response.iter_lines())[-2])
"""


def test_a_stream_that_ends_without_its_providers_last_event_is_not_stored(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends each stream cleanly one event early: [DONE], message_stop,
    response.completed never come. The SDKs see a normal end; nothing is stored."""
    monkeypatch.setattr(project.server, "cut_streams", 1)
    project.pytester.makepyfile(test_streams=STREAMS)
    result = project.run("--llm-cache=record", "--llm-cache-report=r.json")
    result.assert_outcomes(passed=4)
    assert project.result("chat") == "echo: cut me"
    assert project.result("responses") == "response.output_item.done"
    assert project.files() == []
    assert _report(project, result)["not_stored_reasons"] == {"incomplete": 4}
    result.stdout.fnmatch_lines([
        ("*NotStoredWarning: not storing *: the stream ended without its provider's last event"
        " ([[]DONE[]], message_stop, response.completed): it was cut short"),
        "not stored: 4 (incomplete 4)",
    ])


def test_the_same_streams_whole_are_stored_and_replay(project: Project) -> None:
    project.pytester.makepyfile(test_streams=STREAMS)
    project.run("--llm-cache=record").assert_outcomes(passed=4)
    assert len(project.files()) == 4
    calls = _calls(project)
    project.clear_results()
    project.run().assert_outcomes(passed=4)
    assert (project.result("chat"), project.result("responses")) == ("echo: cut me", "response.completed")
    assert project.result("httpx2") == "data: [DONE]"
    assert _calls(project) == calls


GENERIC_SSE = """
import httpx2

def events(request):
    body = b"".join(b"event: tick\\ndata: {\\"n\\": %d}\\n\\n" % n for n in range(3))
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=httpx2.ByteStream(body))

def test_generic(llm_cache, save):
    client = httpx2.Client(transport=httpx2.MockTransport(events))
    with client.stream("GET", "https://sse.example.test/ticks") as response:
        save("ticks", list(response.iter_lines()))
"""


def test_a_stream_of_no_known_provider_has_no_terminator_to_miss_and_is_kept(project: Project) -> None:
    project.pytester.makepyfile(test_generic=GENERIC_SSE)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    assert len(project.files()) == 1
    first = project.result("ticks")
    project.clear_results()
    project.run().assert_outcomes(passed=1)
    assert project.result("ticks") == first and first[1] == 'data: {"n": 0}'


def _sse(*events: str) -> bytes:
    return "".join(event + "\n\n" for event in events).encode()


CHUNK = 'data: {"object":"chat.completion.chunk","choices":[{"delta":{"content":"hi"}}]}'
BIG_COMPLETED = 'event: response.completed\ndata: {"type":"response.completed","response":{"output":"' + "x" * 5000 + '"}}'


@pytest.mark.parametrize(
    ("body", "ctype", "complete"),
    [
        (_sse(CHUNK, "data: [DONE]"), "text/event-stream", True),
        (_sse(CHUNK), "text/event-stream", False),
        (_sse(CHUNK, "data: [DONE]")[:-2], "text/event-stream; charset=utf-8", True),  # no last blank line
        (_sse('event: message_start\ndata: {"type":"message_start"}', 'event: message_stop\ndata: {"type":"message_stop"}'),
         "text/event-stream", True),
        (_sse('event: message_start\ndata: {"type":"message_start"}', 'event: content_block_delta\ndata: {}'),
         "text/event-stream", False),
        (_sse('data: {"type":"message_start"}', 'data: {"type":"message_stop"}'), "text/event-stream", True),
        (_sse('event: response.created\ndata: {"type":"response.created"}', BIG_COMPLETED), "text/event-stream", True),
        (_sse('event: response.created\ndata: {"type":"response.created"}', 'event: error\ndata: {}'),
         "text/event-stream", False),
        (_sse("event: tick\ndata: 1", "event: tick\ndata: 2"), "text/event-stream", True),  # no known shape
        (b'{"model":"llama3","done":false}\n{"model":"llama3","done":true}\n', "application/x-ndjson", True),
        (b'{"model":"llama3","done":false}\n{"model":"llama3","done":false}\n', "application/x-ndjson", False),
        (b'{"n":1}\n{"n":2}\n', "application/x-ndjson", True),
        (_sse(CHUNK), "application/json", True),  # not a stream
    ],
)
def test_the_stream_end_rule(body: bytes, ctype: str, complete: bool) -> None:
    assert stream_complete(body, ctype) is complete


def test_a_last_event_longer_than_the_tail_still_ends_the_stream() -> None:
    """A long answer's response.completed holds all its text: its event line is far from the end."""
    chunks = [_sse('event: response.created\ndata: {"type":"response.created"}'),
              *(piece.encode() for piece in (BIG_COMPLETED[:3000], BIG_COMPLETED[3000:], "\n\n"))]
    assert stream_ended(chunks)
    assert not stream_ended(chunks[:1] + [_sse('event: response.output_text.delta\ndata: {"delta":"x"}')])


# -- where a warning points ----------------------------------------------------------------

WHERE = """
import httpx2

def test_too_large(client, llm_cache):
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "word " * 1500}])

def test_error_status(llm_cache):
    with httpx2.Client(base_url=client_base()) as http:
        http.post("/v1/chat/completions", json={"model": "error-500", "messages": []})
"""


def test_a_warning_points_at_the_users_line_not_the_caches(project: Project) -> None:
    """pytest's warnings summary places a not-stored warning at the test's line that made
    the call (through the SDK, httpx and the cache), where the user can act on it."""
    base = project.server.url
    project.pytester.makepyfile(test_where=WHERE.replace("client_base()", repr(base)))
    project.pytester.makeini("[pytest]\nllm_cache_max_cassette_size = 8KiB\n")
    result = project.run("--llm-cache=record")
    result.assert_outcomes(passed=2, warnings=2)
    text = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*test_where.py:4: NotStoredWarning: not storing *: it would be * bytes*",
        "*test_where.py:8: NotStoredWarning: not storing *: the API answered HTTP 500;*",
    ], consecutive=False)
    assert f"llm_cache{os.sep}" not in text.split("warnings summary")[1]
