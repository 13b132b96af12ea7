"""Secrets never reach a cassette, a report or a message: a security property.

Every scenario drives a real client (the openai SDK, or plain httpx2 for what the SDK
does not send) against the local server, which echoes what the request carried into
its answer, JSON or binary. Afterwards every file the run wrote and everything it
printed is searched for each secret, raw, percent-encoded and base64-encoded: no hit.
The secrets reach the inner tests through environment variables whose names look
like nothing secret, so that only what the request carried can give them away (and
the test files, which are not searched, never spell them).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import yaml
from conftest import Project
from redis_server import RedisServer, require_redis_server

from llm_cache import cli
from llm_cache.cassette import Body, Entry, dump_entry
from llm_cache.key import make_key
from llm_cache.redact import REDACTED, secret_values
from llm_cache.stores.files import FileStore

# Values the request carries; none is in a *_API_KEY, *_TOKEN or *_SECRET variable.
CARRIED = {
    "S_CRED": "k3y-of-the-request-5c2a9e7d41f0",
    "S_ORG": "org-Zq4X9mT2LpW8vK1rB6nY3cD0",
    "S_PROJ": "proj_H7fK2mQ9xW4zL1vB8nR5tY0e",
    "S_COOKIE": "c00kie-sess-9a8b7c6d5e4f3a2b",
    "S_GOOG": "goog-7Hk2Lm9Qx4Wz1Vb8Nr5Ty0Ep3",
    "S_AMZ": "IQoJb3JpZ2luX2VjEJr0Fw8Kd3NzdGVzdA9x",
    "S_QKEY": "qk-4f6e8d0c2b4a6987q",
    "S_SIG": "sI9+nAtuRe/x8Kq2==Zw",
    "S_AMZSIG": "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
    "S_CODE": "oauth-c0de-81f2a9b7e6d5",
    "S_TOK": "Tok-q9W8e7R6t5Y4u3I2",
    "S_SCHEME": "schemed-3e9f1a7c5b2d8e4f",
    "S_XAPI": "xk-2b4d6f8h0j2l4n6p8r",
    "S_USER": "svc-account",
    "S_PW": "pa55-w0rd-7f3e9d1c5b",
}
# A key in no header and no environment variable: only its shape gives it away.
LEAKED = "sk-proj-LEAKEDINTOBINARY1234567890abcdef"


def encodings(secret: str) -> list[str]:
    """The forms a secret could be written in: raw, percent-encoded, and base64 at each alignment."""
    raw = secret.encode()
    forms = {secret, quote(secret, safe=""), quote_plus(secret)}
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw).decode()
        # drop the groups that also hold the padding or what follows the secret
        forms.add(encoded[4 if pad else 0 : -4])
    return sorted(f for f in forms if len(f) >= 8)


def hits(haystack: str, secrets: Iterable[str]) -> list[str]:
    return [f"{secret} as {form}" for secret in secrets for form in encodings(secret) if form in haystack]


def written(project: Project, *extra: str) -> str:
    """Every file of the cassette directory (parsed copies and usage index included), and ``extra``."""
    texts = [p.read_bytes().decode("latin-1") for p in project.cassettes.rglob("*") if p.is_file()] \
        if project.cassettes.exists() else []
    return "\n".join([*texts, *extra])


def output(result: pytest.RunResult) -> str:
    return result.stdout.str() + "\n" + result.stderr.str()


@pytest.fixture
def carried(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in CARRIED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("S_LEAKED", LEAKED)
    return CARRIED


def test_the_secret_values_are_not_taken_from_the_environment(carried: dict[str, str]) -> None:
    # Otherwise these tests would pass on the environment rule alone.
    assert set(secret_values({}, dict(os.environ))).isdisjoint(carried.values())


# -- compressed bodies and HTML pages ------------------------------------------------------

ENCODED_TESTS = """
import os, httpx2

def test_gzip_without_a_content_encoding(llm_cache):
    r = httpx2.get(os.environ["FAKE_LLM_URL"] + "/v1/echo?as=gzip", headers={"x-api-key": os.environ["S_XAPI"]})
    assert r.status_code == 200 and r.content[:2] == b"\\x1f\\x8b"

def test_html_character_references(llm_cache):
    r = httpx2.get(os.environ["FAKE_LLM_URL"] + "/v1/echo?as=html", headers={"X-Debug": os.environ["S_LEAKED"]})
    assert r.status_code == 200 and "&#" in r.text and os.environ["S_LEAKED"] not in r.text

def test_html_without_a_secret(llm_cache):
    r = httpx2.get(os.environ["FAKE_LLM_URL"] + "/v1/echo?as=html", headers={"X-Debug": "nothing to hide"})
    assert r.status_code == 200
"""


def test_a_secret_gzipped_or_behind_html_references_is_not_stored(project: Project, carried: dict[str, str]) -> None:
    """Bytes compressed without a Content-Encoding are kept as the client got them (base64),
    and an HTML page's character references are what the YAML shows: neither shows the key
    as it is, to redaction or to the search for secret shapes."""
    project.pytester.makepyfile(test_encoded=ENCODED_TESTS)
    result = project.run("--llm-cache=record")
    result.assert_outcomes(passed=3, warnings=2)
    result.stdout.fnmatch_lines(["not stored: 2 (secret-looking 2)"])
    [stored] = project.files()  # the page without a secret is kept
    assert "&#" in stored.read_text() and "text/html" in stored.read_text()
    assert carried["S_XAPI"] not in written(project, output(result))
    assert LEAKED not in written(project, output(result))


# -- binary bodies -------------------------------------------------------------------------

BINARY_TESTS = """
import os, httpx2, openai

def test_shaped_key_in_binary(llm_cache):
    # a header outside the allow-list, echoed inside bytes that are not UTF-8
    r = httpx2.get(os.environ["FAKE_LLM_URL"] + "/v1/echo?as=binary", headers={"X-Debug": os.environ["S_LEAKED"]})
    assert r.status_code == 200 and os.environ["S_LEAKED"].encode() in r.content

def test_request_credential_in_binary(llm_cache):
    # the SDK's own Authorization, echoed into a binary "audio" answer
    client = openai.OpenAI(base_url=os.environ["FAKE_LLM_URL"] + "/v1", api_key=os.environ["S_CRED"], max_retries=0)
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input="echo me")
    assert os.environ["S_CRED"].encode() in audio.content

def test_api_key_header_in_binary(llm_cache):
    # a credential that has no known shape: only the request gives it away
    r = httpx2.get(os.environ["FAKE_LLM_URL"] + "/v1/echo?as=binary&n=2", headers={"x-api-key": os.environ["S_XAPI"]})
    assert os.environ["S_XAPI"].encode() in r.content

def test_plain_binary(llm_cache):
    r = httpx2.get(os.environ["FAKE_LLM_URL"] + "/v1/echo?as=binary", headers={"X-Debug": "nothing to hide"})
    assert r.content.startswith(b"\\x89BIN")
"""


def test_a_secret_in_a_binary_body_is_not_stored(project: Project, carried: dict[str, str]) -> None:
    project.pytester.makepyfile(test_binary=BINARY_TESTS)
    result = project.run("--llm-cache=record", "--llm-cache-report=report.json")
    result.assert_outcomes(passed=4, warnings=3)
    result.stdout.fnmatch_lines(["not stored: 3 (secret-looking 3)"])
    [stored] = project.files()  # the binary answer without a secret is kept, as base64
    assert "base64:" in stored.read_text()
    report = (project.pytester.path / "report.json").read_text()
    assert json.loads(report)["not_stored_reasons"] == {"secret-looking": 3}
    assert hits(written(project, report, output(result)), [LEAKED, carried["S_CRED"], carried["S_XAPI"]]) == []
    # the warnings say what and where, masked
    warning = "*not storing *: it would contain what looks like a secret: "
    result.stdout.fnmatch_lines([
        warning + "*openai or anthropic key (base64 response body: sk-pro...ef)*",
        # a value known to be secret is shown by its length only; a shape's match, masked
        warning + "*bearer token (base64 response body: Bearer...f0)*",
        warning + "credential the request carried (base64 response body: <21 characters>)*",
    ])
    # and replay serves the kept one, misses the three refused
    project.run().assert_outcomes(passed=1, failed=3)


def _binary_entry(raw: bytes, prompt: str) -> Entry:
    from datetime import datetime, timezone

    request = {"model": "tts-1", "input": prompt}
    rk = make_key("POST", "https://api.example.test/v1/audio/speech", json.dumps(request).encode(), {})
    return Entry(
        key=rk.key, recorded_at=datetime(2026, 1, 1, tzinfo=timezone.utc), model=rk.model,
        model_version=rk.model_version, method="POST", path=rk.path, query=[], request_headers={},
        request_body=Body("json", request), status=200, response_headers={"content-type": "audio/mpeg"},
        response_body=Body("base64", base64.b64encode(raw).decode()),
    )


def test_verify_flags_a_secret_in_a_base64_body(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = FileStore(tmp_path / "cassettes")
    leaking = _binary_entry(b"ID3\x04\x00\xff\xfb" + LEAKED.encode() + b"\xff", "a")
    clean = _binary_entry(b"ID3\x04\x00\xff\xfb" + b"\x00" * 64, "b")
    for entry in (leaking, clean):
        store.put(entry, dump_entry(entry))
    path = store.path_for(leaking.key, leaking.model_version)
    assert LEAKED not in path.read_text()  # only its base64
    assert cli.main(["verify", "--dir", str(store.root)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"{path}: base64 response body: looks like an openai or anthropic key (sk-pro...ef)",
        "2 cassettes checked, 1 with problems",
    ]


def test_verify_flags_a_credential_query_parameter_kept_by_an_older_release(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = FileStore(tmp_path / "cassettes")
    entry = _binary_entry(b"\xff" * 8, "c")
    entry.query = [["Sig", "not-a-shape-anyone-knows"]]
    store.put(entry, dump_entry(entry))
    assert cli.main(["verify", "--dir", str(store.root)]) == 1
    out = capsys.readouterr().out
    assert "the query parameter 'Sig' carries a credential: re-record it" in out


# -- credentials the request carried, echoed into JSON ---------------------------------------

ECHO_TESTS = """
import os, httpx2, openai
E = os.environ
URL = E["FAKE_LLM_URL"]

def test_sdk_headers_and_query(llm_cache, save):
    client = openai.OpenAI(
        base_url=URL + "/v1", api_key=E["S_CRED"], organization=E["S_ORG"], project=E["S_PROJ"], max_retries=0,
        default_headers={"Cookie": "session=" + E["S_COOKIE"] + "; theme=dark", "x-goog-api-key": E["S_GOOG"],
                         "x-amz-security-token": E["S_AMZ"]},
        default_query={"key": E["S_QKEY"], "Sig": E["S_SIG"], "X-Amz-Signature": E["S_AMZSIG"], "code": E["S_CODE"],
                       "TOKEN": E["S_TOK"], "api-version": "2024-10-21"},
    )
    r = client.chat.completions.create(model="echo-request", messages=[{"role": "user", "content": "echo"}])
    save("sdk", r.choices[0].message.content)

def test_other_schemes(llm_cache, save):
    for auth in ("Token " + E["S_SCHEME"], "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/bedrock/aws4_request, "
                 "SignedHeaders=host, Signature=" + E["S_AMZSIG"]):
        r = httpx2.get(URL + "/v1/echo?as=json&n=" + auth[:3], headers={"Authorization": auth, "x-api-key": E["S_XAPI"]})
        save("scheme-" + auth[:3], r.json()["headers"])

def test_credential_query_values(llm_cache, save):
    r = httpx2.get(URL + "/v1/echo", params={"api_key": E["S_QKEY"], "X-Amz-Credential": E["S_AMZ"],
                                             "signature": E["S_SIG"], "access_token": E["S_TOK"], "page": "2"})
    save("query", r.json()["target"])
"""


def test_every_credential_the_request_carried_is_redacted_where_the_answer_echoes_it(
    project: Project, carried: dict[str, str]
) -> None:
    project.pytester.makepyfile(test_echo=ECHO_TESTS)
    result = project.run("--llm-cache=record")
    result.assert_outcomes(passed=3)
    live = {name: json.dumps(project.result(name)) for name in ("sdk", "scheme-Tok", "scheme-AWS", "query")}
    # the server did echo them (otherwise there would be nothing to find)
    for name, values in {"sdk": ("S_CRED", "S_ORG", "S_PROJ", "S_COOKIE", "S_GOOG", "S_AMZ", "S_QKEY", "S_CODE"),
                         "scheme-Tok": ("S_SCHEME", "S_XAPI"), "scheme-AWS": ("S_AMZSIG",),
                         "query": ("S_QKEY", "S_TOK")}.items():
        assert all(carried[v] in live[name] for v in values), name
    files = project.files()
    assert len(files) == 4
    text = written(project, output(result))
    assert hits(text, [v for k, v in carried.items() if k not in ("S_USER", "S_PW")]) == []
    assert REDACTED in text
    queries = sorted(tuple(map(tuple, yaml.safe_load(p.read_text())["request"].get("query") or [])) for p in files)
    # only the harmless parameters are kept, in the cassette as in the key
    assert queries == [(("api-version", "2024-10-21"),), (("as", "json"), ("n", "AWS")), (("as", "json"), ("n", "Tok")),
                       (("page", "2"),)]
    # the echoed values were replaced, not the answers dropped: they replay
    project.clear_results()
    project.run().assert_outcomes(passed=3)
    assert project.server.count() == 4
    for name in live:
        replayed = json.dumps(project.result(name))
        assert REDACTED in replayed and hits(replayed, carried.values()) == [], name


# -- compressed and form request bodies -------------------------------------------------------

# A key held in an environment variable the environment rule reads (..._API_KEY), and a
# credential header: in a request body that is gzip- or deflate-compressed, neither is
# visible to a search of the bytes sent.
ZIPPED_KEY = "Zq9Wm3Xv7Lp2Rt6Ks8Jh1c"
SESSION = "Xy7Qm2Vt9Lp4Wk8R-session"

COMPRESSED_TESTS = """
import gzip, json, os, zlib, httpx2
E = os.environ
URL = E["FAKE_LLM_URL"]

def _chat(content, encoding, mtime, headers={}):
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}).encode()
    packed = gzip.compress(body, mtime=mtime) if encoding == "gzip" else zlib.compress(body)
    return httpx2.post(URL + "/v1/chat/completions", content=packed,
                       headers={"content-type": "application/json", "content-encoding": encoding, **headers})

def test_gzip(llm_cache, save):
    # a gzip header holds the time it was made: another on every call, the same request
    r = _chat("key " + E["S_ZIPPED_API_KEY"], "gzip", 1 if llm_cache.mode.value == "record" else 2)
    save("gzip", r.json()["choices"][0]["message"]["content"])

def test_deflate(llm_cache, save):
    r = _chat("session " + E["S_SESSION"], "deflate", 0, {"x-session-id": E["S_SESSION"]})
    save("deflate", r.json()["choices"][0]["message"]["content"])

def test_token_form(llm_cache, save):
    form = {"grant_type": "password", "model": "gpt-4o", "client_secret": E["S_CRED"],
            "password": E["S_PW"], "refresh_token": E["S_TOK"], "code": "0k-7"}
    save("form", httpx2.post(URL + "/v1/echo", data=form).json()["body"])
"""


def test_secrets_in_compressed_and_form_request_bodies_never_reach_a_cassette(
    project: Project, carried: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S_ZIPPED_API_KEY", ZIPPED_KEY)
    monkeypatch.setenv("S_SESSION", SESSION)
    project.pytester.makepyfile(test_bodies=COMPRESSED_TESTS)
    result = project.run("--llm-cache=record")
    result.assert_outcomes(passed=3)
    # the server read them (otherwise there would be nothing to find)
    assert ZIPPED_KEY in project.result("gzip") and SESSION in project.result("deflate")
    assert carried["S_CRED"] in project.result("form") and "code=0k-7" in project.result("form")
    files = project.files()
    assert len(files) == 3
    text = written(project, output(result))
    assert hits(text, [ZIPPED_KEY, SESSION, carried["S_CRED"], carried["S_PW"], carried["S_TOK"]]) == []
    docs = {p.name: yaml.safe_load(p.read_text()) for p in files}
    bodies = sorted(str({k: v for k, v in d["request"].items() if k not in ("method", "path", "headers")})
                    for d in docs.values())
    # a form's credential field is redacted however short (an answer echoing it keeps
    # values under 8 characters, as for every credential: they would redact ordinary words)
    assert not any("0k-7" in b for b in bodies)
    # kept as the API read them, readable: the JSON decompressed, the form with its credentials redacted
    assert all(d["model_version"] == "gpt-4o" for d in docs.values())
    assert all("base64" not in b for b in bodies)
    assert any("client_secret=%3Credacted%3E" in b or "client_secret=<redacted>" in b for b in bodies)
    assert any("key <redacted>" in b for b in bodies)
    # what is stored gives back its key (verify recomputes it from the stored request)
    assert cli.main(["verify", "--dir", str(project.cassettes)]) == 0
    # and they replay: the gzip body made at another time, the form with another secret
    project.clear_results()
    monkeypatch.setenv("S_CRED", "another-client-secret-0f9e8d7c")
    project.run().assert_outcomes(passed=3)
    assert project.server.count() == 3
    assert project.result("gzip") == "echo: key <redacted>"


# -- query values, multipart fields, UTF-16 and base64 ----------------------------------------

# A token the environment rule reads (..._TOKEN), sent where no header rule looks: a query
# value of an ordinary parameter, the URL path (as chat-bot APIs take it), base64-encoded in
# a prompt; credentials in query parameters and form fields named as a header holding one
# would be; a shaped key in a UTF-16 body.
PATH_TOKEN = "Wq8Zt3Lm6Xv1Np9Rk4Hs7Bd2"
FIELD_SECRETS = {
    "subscription-key": "zq9Xv2Lm4Np7Rt1Wy8Kb",
    "x-api-key": "Rk4Hs7Bd2Wq8Zt3Lm6Xv",
    "api_token": "Lm6Xv1Np9Rk4Hs7Bd2Wq",
    "access-token": "Np9Rk4Hs7Bd2Wq8Zt3Lm",
    "auth": "Hs7Bd2Wq8Zt3Lm6Xv1Np",
}
FORM_SECRETS = {"password": "zq9Xv2Lm4Np7Rt1Wy8KbMPPW", "client_secret": "cs_zq9Xv2Lm4Np7Rt1Wy8", "api_key": "ak-12"}
UTF16_KEY = "sk-proj-Utf16Encoded0123456789abcdefABCD"

FIELD_TESTS = """
import base64, json, os, httpx2, requests
E = os.environ
URL = E["FAKE_LLM_URL"]
FIELDS = json.loads(E["S_FIELDS"])
FORM = json.loads(E["S_FORM"])

def test_query_value(llm_cache, save):
    save("query", httpx2.get(URL + "/v1/echo", params={"q": E["S_PATH_TOKEN"], "page": "2"}).json()["target"])

def test_named_query_fields(llm_cache, save):
    save("named", httpx2.get(URL + "/v1/echo", params={**FIELDS, "max_tokens": "1024"}).json()["target"])

def test_path(llm_cache, save):
    save("path", httpx2.get(URL + "/v1/echo/bot" + E["S_PATH_TOKEN"] + "/send").status_code)

def test_base64_in_a_prompt(llm_cache, save):
    cred = base64.b64encode(E["S_PATH_TOKEN"].encode()).decode()
    r = httpx2.post(URL + "/v1/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": "cred " + cred}]})
    save("b64", r.json()["choices"][0]["message"]["content"])

def test_multipart(llm_cache, save):
    r = requests.post(URL + "/v1/echo", data={"purpose": "batch", **FORM},
                      files={"file": ("b.jsonl", b'{"b":1}\\n', "application/jsonl")})
    save("multipart", r.json()["body"])

def test_utf16(llm_cache, save):
    body = json.dumps({"model": "gpt-4o", "prompt": "my key is " + E["S_UTF16_KEY"]}).encode("utf-16")
    r = httpx2.post(URL + "/v1/echo", content=body, headers={"content-type": "text/plain; charset=utf-16"})
    save("utf16", r.status_code)
"""


def test_secrets_in_query_values_paths_forms_and_other_encodings_never_reach_a_cassette(
    project: Project, carried: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S_PATH_TOKEN", PATH_TOKEN)  # a *_TOKEN variable: the environment rule's
    monkeypatch.setenv("S_FIELDS", json.dumps(FIELD_SECRETS))
    monkeypatch.setenv("S_FORM", json.dumps(FORM_SECRETS))
    monkeypatch.setenv("S_UTF16_KEY", UTF16_KEY)
    project.pytester.makepyfile(test_fields=FIELD_TESTS)
    result = project.run("--llm-cache=record", "-W", "ignore::llm_cache.NotStoredWarning")
    result.assert_outcomes(passed=6)
    # the server read them (otherwise there would be nothing to find)
    assert PATH_TOKEN in project.result("query")
    assert all(v in project.result("named") for v in FIELD_SECRETS.values())
    assert all(v in project.result("multipart") for v in FORM_SECRETS.values())
    secrets = [PATH_TOKEN, UTF16_KEY, *FIELD_SECRETS.values(), *FORM_SECRETS.values()]
    text = written(project, output(result))
    assert hits(text, secrets) == []
    # nor in UTF-16, NUL bytes between the letters
    assert [s for s in secrets if s.encode("utf-16-le") in text.encode("latin-1")] == []
    docs = [yaml.safe_load(p.read_text()) for p in project.files()]
    # what could be kept was kept, redacted; the UTF-16 body's answer was not stored
    assert len(docs) == 5
    named = next(d for d in docs if any(k == "max_tokens" for k, _ in d["request"].get("query") or []))
    assert dict(map(tuple, named["request"]["query"])) == {
        **dict.fromkeys(FIELD_SECRETS, REDACTED), "max_tokens": "1024"}
    form = next(d for d in docs if d["request"].get("multipart"))
    fields = {part["name"]: part.get("text") for part in form["request"]["multipart"]}
    assert fields == {"purpose": "batch", **dict.fromkeys(FORM_SECRETS, REDACTED), "file": None}
    assert "not stored" in output(result)
    assert cli.main(["verify", "--dir", str(project.cassettes)]) == 0
    # and they replay, with another secret in the environment as on another machine
    project.clear_results()
    project.run("-k", "not utf16 and not query_value and not path and not base64").assert_outcomes(passed=2)
    replayed = project.result("named")
    assert REDACTED in replayed and "max_tokens=1024" in replayed and hits(replayed, secrets) == []
    assert project.server.count() == 6  # nothing more reached it


def test_a_credential_field_of_a_json_body_is_redacted_and_ordinary_fields_are_not(
    fake_api: Any, tmp_path: Path
) -> None:
    import httpx2

    from llm_cache import LLMCache

    secret = "tvly-Zq9Wm3Xv7Lp2Rt6Ks8Jh"  # a search API's key, sent in the JSON body
    cache = LLMCache("file://c", root=tmp_path)
    body = {"api_key": secret, "query": "weather in Paris", "code": "print(1)", "max_tokens": 1024,
            "auth": {"session_token": secret + "-s"}}
    with httpx2.Client(transport=cache.transport()) as http:
        echoed = http.post(fake_api.url + "/v1/echo", json=body).json()["body"]
    assert secret in echoed  # the server read it
    [kept] = (tmp_path / "c").rglob("*.yaml")
    text = kept.read_text()
    assert hits(text, [secret, secret + "-s"]) == []
    doc = yaml.safe_load(text)
    assert doc["request"]["json"] == {"api_key": REDACTED, "query": "weather in Paris", "code": "print(1)",
                                      "max_tokens": 1024, "auth": {"session_token": REDACTED}}
    assert cli.main(["verify", "--dir", str(tmp_path / "c")]) == 0


def test_a_credential_field_of_words_or_digits_is_redacted_and_its_echo_too(fake_api: Any, tmp_path: Path) -> None:
    """A password of words or an API key of digits looks like no secret, but its field says
    it is one (as a form's or a multipart part's does), from 8 characters."""
    import httpx2

    from llm_cache import LLMCache

    cache = LLMCache("file://c", root=tmp_path)
    body = {"api_key": "84629173058261947305", "password": "correcthorsebatterystaple",
            "client_secret": "Correct Horse Battery", "token": "Hello", "model": "gpt-4o"}
    with httpx2.Client(transport=cache.transport()) as http:
        echoed = http.post(fake_api.url + "/v1/echo", json=body).json()["body"]
    assert "correcthorsebatterystaple" in echoed
    [kept] = (tmp_path / "c").rglob("*.yaml")
    text = kept.read_text()
    assert hits(text, ["84629173058261947305", "correcthorsebatterystaple", "Correct Horse Battery"]) == []
    assert yaml.safe_load(text)["request"]["json"] == {
        "api_key": REDACTED, "password": REDACTED, "client_secret": REDACTED, "token": "Hello", "model": "gpt-4o"}


def test_numbers_lists_and_pwd_fields_are_credentials_and_innocent_names_are_not(fake_api: Any, tmp_path: Path) -> None:
    """A password that is a JSON number, a list of keys under a credential's name and a
    ``pwd`` are redacted, in the request and in the echo; ``prompt_cache_key``, a
    tokenizer's name and keywords are not, so a replay gives them back as they were."""
    import httpx2

    from llm_cache import LLMCache

    cache = LLMCache("file://c", root=tmp_path)
    body = {"model": "gpt-4o", "password": 8675309123456, "api_keys": ["lst-9Hq2Wm4Zr8Tx1Kc7", "lst-3Zr8Tx1Kc79Hq2Wm"],
            "db": {"pwd": "Pwd-7Gh2Kd9Lq4Zs"}, "prompt_cache_key": "user_7f3a9c2e",
            "metadata": {"tokenizer": "cl100k_base", "keywords": "gpt4o,claude3"}}
    with httpx2.Client(transport=cache.transport()) as http:
        echoed = http.post(fake_api.url + "/v1/echo", json=body).json()["body"]
    assert "lst-9Hq2Wm4Zr8Tx1Kc7" in echoed and "8675309123456" in echoed  # the live answer is whole
    [kept] = (tmp_path / "c").rglob("*.yaml")
    text = kept.read_text()
    assert hits(text, ["8675309123456", "lst-9Hq2Wm4Zr8Tx1Kc7", "lst-3Zr8Tx1Kc79Hq2Wm", "Pwd-7Gh2Kd9Lq4Zs"]) == []
    request = yaml.safe_load(text)["request"]["json"]
    assert request["password"] == REDACTED and request["api_keys"] == [REDACTED, REDACTED]
    assert request["db"] == {"pwd": REDACTED}
    assert request["prompt_cache_key"] == "user_7f3a9c2e"
    assert request["metadata"] == {"tokenizer": "cl100k_base", "keywords": "gpt4o,claude3"}
    replay = LLMCache("file://c", root=tmp_path, mode="replay")
    with httpx2.Client(transport=replay.transport()) as http:
        again = http.post(fake_api.url + "/v1/echo", json=body).json()["body"]
    assert "user_7f3a9c2e" in again and "cl100k_base" in again and "<redacted>" in again


def test_an_environment_secret_in_the_path_percent_encoded_or_in_a_miss_never_shows(
    fake_api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx2

    from llm_cache import CacheMiss, LLMCache

    token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"  # a chat bot's token, taken in the path
    storage = "Ab/Cd+Ef9Gh0Ij1Kl2Mn3Op4"
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", token)
    monkeypatch.setenv("STORAGE_SECRET", storage)
    cache = LLMCache("file://c", root=tmp_path, mode="record")
    with httpx2.Client(transport=cache.transport()) as http:
        http.get(fake_api.url + "/v1/echo/bot" + quote(token, safe="") + "/getMe")  # the ':' percent-encoded
        http.get(fake_api.url + "/v1/echo", params={"webhook": storage})
        http.post(fake_api.url + "/v1/echo", data={"note": storage})
    text = written_under(tmp_path / "c")
    assert len(list((tmp_path / "c").rglob("*.yaml"))) == 3
    assert hits(text, [token, storage]) == []
    replay = LLMCache("file://c", root=tmp_path, mode="replay")
    with httpx2.Client(transport=replay.transport()) as http, pytest.raises(CacheMiss) as missed:
        http.get(fake_api.url + "/v1/echo/bot" + token + "/sendMessage")
    shown = "\n".join([str(missed.value), json.dumps(replay.stats(), default=str)])
    assert "bot<redacted>/sendMessage" in str(missed.value)
    assert hits(shown, [token]) == []


def written_under(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())


# -- userinfo ---------------------------------------------------------------------------------

USERINFO_TESTS = """
import os, httpx2, pytest
from llm_cache import CacheMiss
E = os.environ
HOST = E["FAKE_LLM_URL"].replace("http://", "http://" + E["S_USER"] + ":" + E["S_PW"] + "@")

def test_userinfo(llm_cache, save):
    save("echo", httpx2.get(HOST + "/v1/echo?as=json").json())

def test_miss(llm_cache, save):
    if llm_cache.mode.value == "replay":
        with pytest.raises(CacheMiss) as caught:
            httpx2.get(HOST + "/v1/echo?as=json&other=1")
        save("miss", [str(caught.value), repr(caught.value.args), repr(vars(caught.value))])
"""


def test_userinfo_never_reaches_a_cassette_or_a_message(project: Project, carried: dict[str, str]) -> None:
    project.pytester.makepyfile(test_userinfo=USERINFO_TESTS)
    project.pytester.makeini("[pytest]\nllm_cache_match_host = true\n")
    recorded = project.run("--llm-cache=record", "-k", "not test_miss")
    recorded.assert_outcomes(passed=1, deselected=1)
    secrets = [carried["S_PW"], f"{carried['S_USER']}:{carried['S_PW']}"]
    # httpx2 sent the userinfo as Basic credentials, and the server echoed them
    assert project.result("echo")["headers"]["Authorization"].startswith("Basic ")
    assert hits(json.dumps(project.result("echo")), secrets) != []
    [path] = project.files()
    assert yaml.safe_load(path.read_text())["key_rules"]["host"] == project.server.url
    # it replays, and a miss names no userinfo either
    replayed = project.run("--llm-cache-report=report.json")
    replayed.assert_outcomes(passed=2)
    assert "no cassette for GET /v1/echo" in project.result("miss")[0]
    report = (project.pytester.path / "report.json").read_text()
    shown = written(project, report, output(recorded), output(replayed), json.dumps(project.result("miss")))
    assert hits(shown, secrets) == []
    assert REDACTED in json.dumps(project.result("echo"))


# -- environment values -----------------------------------------------------------------------

def test_environment_values_that_are_not_plausibly_secret_are_left_alone(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    harmless = {"MY_TOKEN": "application", "FORMAT_TOKEN": "json", "FLAG_SECRET": "true", "PORT_API_KEY": "8080",
                "HOME_SECRET": "/usr/local/share/applications", "MIME_TOKEN": "application/json",
                "WORDS_SECRET": "ContentTypeHeaders"}
    for name, value in harmless.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REAL_SERVICE_TOKEN", "tok_9f8e7d6c5b4a39281706")
    project.pytester.makepyfile(test_env="""
from conftest import chat
def test_it(client, llm_cache):
    chat(client, "application/json true 8080 /usr/local/share/applications ContentTypeHeaders tok_9f8e7d6c5b4a39281706")
""")
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    [path] = project.files()
    doc = yaml.safe_load(path.read_text())
    assert doc["response"]["headers"]["content-type"] == "application/json"
    assert doc["request"]["headers"]["content-type"] == "application/json"
    prompt = doc["request"]["json"]["messages"][0]["content"]
    assert prompt == f"application/json true 8080 /usr/local/share/applications ContentTypeHeaders {REDACTED}"
    assert "tok_9f8e7d6c5b4a39281706" not in path.read_text()


# -- the Redis password -----------------------------------------------------------------------

REDIS_PASSWORD = "r3dis-pa55-9c8b7a6f5e4d"


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    binary = require_redis_server()
    with RedisServer(binary=binary, extra_args=("--requirepass", REDIS_PASSWORD)) as server:
        yield server


def test_the_redis_password_is_masked_in_the_summary_report_and_stats(
    project: Project, locked_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{locked_redis.port}/0?prefix=secrets-test:"
    shown = f"redis://:***@127.0.0.1:{locked_redis.port}/0?prefix=secrets-test:"
    project.pytester.makepyfile(test_r="from conftest import chat\ndef test_it(client, llm_cache):\n    chat(client, 'r')\n")
    recorded = project.run("--llm-cache=record", f"--llm-cache-store={url}", "--llm-cache-report=report.json",
                           "--log-level=DEBUG", "-rA")
    recorded.assert_outcomes(passed=1)
    recorded.stdout.fnmatch_lines([f"mode: record   store: {shown} (1 entry, *)"])
    report = (project.pytester.path / "report.json").read_text()
    assert json.loads(report)["store"] == shown

    from llm_cache import LLMCache

    caplog.set_level(logging.DEBUG, logger="llm_cache")
    cache = LLMCache(store=url, root=project.pytester.path)
    try:
        stats = cache.stats()
        assert stats["store"] == shown
        shown_by_library = json.dumps(stats) + repr(cache.session.store)
    finally:
        cache.close()
    # a store that cannot be reached, passed through: the log line masks it too
    down = f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0?timeout=0.2"
    LLMCache(store=down, root=project.pytester.path, fallback="passthrough").close()
    assert "redis://:***@127.0.0.1:1/0" in caplog.text
    everything = written(project, report, output(recorded), shown_by_library, caplog.text)
    assert hits(everything, [REDIS_PASSWORD]) == []
