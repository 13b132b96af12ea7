"""What never reaches a cassette: secret values and headers outside the allow-list."""

from __future__ import annotations

import base64
import bz2
import gzip
import json
import lzma
import zlib
from datetime import datetime, timezone
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st

from llm_cache.cassette import Body, Entry, dump_entry
from llm_cache.key import KeyRules, make_key
from llm_cache.leaks import shaped
from llm_cache.redact import (
    REDACTED,
    REQUEST_HEADERS,
    RESPONSE_HEADERS,
    SECRET_PATTERNS,
    environment_secrets,
    field_credential,
    find_entry_secrets,
    find_secrets,
    keep_headers,
    mask_url,
    plausible_secret,
    redact,
    request_credentials,
    secret_values,
)


@pytest.mark.parametrize(
    "name",
    [
        "OPENAI_API_KEY", "GITHUB_TOKEN", "CLIENT_SECRET", "my_api_key",
        # names that mark a credential without ending in _API_KEY, _TOKEN or _SECRET
        "OPENAI_KEY", "SECRET_KEY", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "SMTP_PASSWD",
        "GPG_PASSPHRASE", "SERVICE_CREDENTIALS", "MISTRAL_APIKEY", "APP_SECRETS", "PASSWORD",
        "DB_PASS", "SMTP_PWD", "SECRETKEY", "OPENAI_API_KEY_2", "GH_PAT", "API_AUTH",
    ],
)
def test_secret_env_names(name):
    assert secret_values({}, {name: "s3cr3t-value-0123456"}) == ["s3cr3t-value-0123456"]


@pytest.mark.parametrize(
    "environ",
    [
        {"OPENAI_API_KEY": "short"},  # under 16 characters
        {"OPENAI_API_KEY": "s3cr3t-value"},
        {"HOME": "/home/someone"},  # not a secret-looking name
        {"API_KEY_FILE": "/run/secrets/key"},  # suffix, not infix
        {"TOKENIZERS_PARALLELISM": "s3cr3t-value-0123456"},  # TOKEN inside a word
        {"MONKEY": "s3cr3t-value-0123456"},  # KEY ending a word, not after _
        {"SORT_KEY": "created_at"},  # a credential name, not a secret's value
        {"PWD": "/home/someone/projects/app-9f8e7d6c"},  # the shell's directory: no _PWD
        {"OLDPWD": "/home/someone/projects/app-9f8e7d6c"},
        {"DB_PASSWORD": "postgres"},  # a password of words: from 12 characters
        {"REDIS_URL": "redis://localhost:6379/0"},  # a URL without a password
    ],
)
def test_env_values_ignored(environ):
    assert secret_values({}, environ) == []


@pytest.mark.parametrize(
    ("environ", "secret"),
    [
        ({"GPG_PASSPHRASE": "purple monkey dishwasher rocket"}, "purple monkey dishwasher rocket"),
        ({"DB_PASSWORD": "correct-horse-battery-staple"}, "correct-horse-battery-staple"),
        ({"DATABASE_URL": "postgres://app:Pw-9f8e7d6c5b@db:5432/app"}, "Pw-9f8e7d6c5b"),
        ({"CACHE": "redis://:long%20enough%20words@h:6379/0"}, "long enough words"),
    ],
)
def test_passwords_of_words_and_url_passwords_in_the_environment_are_secrets(environ, secret):
    assert secret in secret_values({}, environ)


def test_bearer_authorization_gives_header_and_token():
    found = secret_values({"Authorization": "Bearer sk-abcdefghijkl"}, {})
    assert {"Bearer sk-abcdefghijkl", "sk-abcdefghijkl"} <= set(found)
    # and the forms a body could echo them in
    assert {"Bearer%20sk-abcdefghijkl", "Bearer+sk-abcdefghijkl"} <= set(found)


@pytest.mark.parametrize("header", ["x-api-key", "X-Api-Key", "api-key", "x-goog-api-key"])
def test_api_key_headers(header):
    assert secret_values({header: "sk-ant-0123456789"}, {}) == ["sk-ant-0123456789"]


def test_short_and_non_credential_headers_ignored():
    assert secret_values({"authorization": "abc", "x-api-key": "short", "user-agent": "OpenAI/Python 1.50.0"}, {}) == []


def test_secret_values_longest_first_so_longer_secret_is_redacted_whole():
    secrets = secret_values({"x-api-key": "abcdefgh", "api-key": "abcdefgh12345"}, {})
    assert secrets == ["abcdefgh12345", "abcdefgh"]
    assert redact("x abcdefgh12345 y abcdefgh", secrets) == f"x {REDACTED} y {REDACTED}"


def test_redact_nested_values_and_keys():
    secret = "sk-live-12345678"
    value = {
        "echo": f"your key is {secret}!",
        "list": [secret, {"deep": [f"{secret}{secret}"]}],
        secret: 1,
        "n": 42,
        "none": None,
    }
    assert redact(value, [secret]) == {
        "echo": f"your key is {REDACTED}!",
        "list": [REDACTED, {"deep": [REDACTED + REDACTED]}],
        REDACTED: 1,
        "n": 42,
        "none": None,
    }


def test_redact_without_secrets_returns_value():
    value = {"a": "sk-live-12345678"}
    assert redact(value, []) == {"a": "sk-live-12345678"}


def test_keep_headers_allow_list():
    headers = {
        "Authorization": "Bearer sk-abcdefghijkl",
        "Content-Type": "application/json",
        "OpenAI-Beta": ["assistants=v2", "x"],
        "Cookie": "session=1",
        "OpenAI-Organization": "org-1",
    }
    assert keep_headers(headers, REQUEST_HEADERS) == {
        "content-type": "application/json",
        "openai-beta": "assistants=v2, x",
    }


def test_response_allow_list_drops_encoding_and_ids():
    headers = {"content-type": "text/event-stream", "content-encoding": "gzip", "x-request-id": "req_1",
               "set-cookie": "a=b", "openai-version": "2020-10-01"}
    assert keep_headers(headers, RESPONSE_HEADERS) == {"content-type": "text/event-stream", "openai-version": "2020-10-01"}


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("key: sk-proj-" + "A1b2C3d4" * 4, "openai or anthropic key"),
        ("key: sk-ant-api03-" + "x" * 40, "openai or anthropic key"),
        ("authorization: Bearer abcdefghijklmnop1234", "bearer token"),
        ("aws: AKIAQ7ZR2LM9XC4VB8NT", "aws access key"),
        ("t: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "jwt"),
        ("g: AIza" + "B" * 35, "google api key"),
        ("gh: ghp_" + "a1" * 18, "github token"),
    ],
)
def test_find_secrets_by_shape(text, kind):
    from llm_cache.redact import find_secrets

    [finding] = find_secrets("first line\n" + text)
    assert finding.kind == kind and finding.line == 2
    assert text.split(": ", 1)[1][10:-3] not in finding.excerpt  # masked


@pytest.mark.parametrize(
    "text",
    ["Bearer <redacted>", "chatcmpl-670846ad20ead5f9a53f093f", "sk-short", "task-manager-skills", "fp_aaa111"],
)
def test_find_secrets_leaves_ordinary_text(text):
    from llm_cache.redact import find_secrets

    assert find_secrets(text) == []


def test_find_secrets_allow_list():
    from llm_cache.redact import find_secrets

    text = "sk-proj-" + "Z9" * 15
    assert find_secrets(text, allow=[r"sk-proj-(Z9)+"]) == []
    assert len(find_secrets(text, allow=[r"something-else"])) == 1


# -- which environment values are secrets -------------------------------------------------------

@pytest.mark.parametrize(
    "value",
    ["application", "json", "true", "false", "8080", "12345678901234567890", "application/json",
     "/usr/local/share/applications", "C:\\Program Files\\app", "ContentTypeHeaders", "https://api.openai.com/v1",
     "text/event-stream; charset=utf-8", "x86_64-linux-gnu.so.3"],
)
def test_not_plausibly_secret(value):
    assert not plausible_secret(value)
    assert secret_values({}, {"MY_TOKEN": value}) == []


@pytest.mark.parametrize(
    "value",
    ["tok_9f8e7d6c5b4a39281706", "sk-proj-" + "A1b2C3d4" * 4, "123e4567-e89b-12d3-a456-426614174000",
     "c00kie-sess-9a8b7c6d5e4f", "deadbeef0123456789abcdef", "ghp_" + "a1" * 18, "hunter2hunter2hunter2"],
)
def test_plausibly_secret(value):
    assert plausible_secret(value)
    assert secret_values({}, {"MY_TOKEN": value}) == [value]


def test_a_word_in_a_token_variable_leaves_content_type_alone():
    # MY_TOKEN=application once rewrote content-type to "<redacted>/json"
    headers = {"content-type": "application/json"}
    assert redact(headers, secret_values({}, {"MY_TOKEN": "application"})) == headers


# -- what a request carried ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("header", "value", "expected"),
    [
        ("OpenAI-Organization", "org-Zq4X9mT2LpW8vK1rB6nY", {"org-Zq4X9mT2LpW8vK1rB6nY"}),
        ("OpenAI-Project", "proj_H7fK2mQ9xW4zL1vB8n", {"proj_H7fK2mQ9xW4zL1vB8n"}),
        ("x-goog-api-key", "goog-7Hk2Lm9Qx4Wz", {"goog-7Hk2Lm9Qx4Wz"}),
        ("x-amz-security-token", "IQoJb3JpZ2luX2VjEJr", {"IQoJb3JpZ2luX2VjEJr"}),
        ("Cookie", "session=c00kie-sess-9a8b; theme=dark", {"c00kie-sess-9a8b"}),
        ("Authorization", "Token schemed-3e9f1a7c", {"schemed-3e9f1a7c"}),
        ("Authorization", "Basic " + base64.b64encode(b"svc-account:pa55-w0rd-7f").decode(),
         {"svc-account:pa55-w0rd-7f", "pa55-w0rd-7f"}),
        ("Authorization", ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE1/20260101/us-east-1/s3/aws4_request, "
                           "SignedHeaders=host, Signature=5d672d79c15b13162d92"),
         {"AKIDEXAMPLE1", "AKIDEXAMPLE1/20260101/us-east-1/s3/aws4_request", "5d672d79c15b13162d92"}),
        ("X-Custom-Tenant", "tenant-8f7e6d5c4b3a", {"tenant-8f7e6d5c4b3a"}),  # any header, when it could be one
    ],
)
def test_request_credentials_from_headers(header, value, expected):
    found = request_credentials({header: value})
    assert expected <= found
    assert value in found
    assert "dark" not in found  # a short cookie value is not taken


def test_protocol_headers_are_not_credentials():
    headers = {"user-agent": "OpenAI/Python 1.50.0", "x-stainless-runtime-version": "3.11.7-final-x9",
               "accept": "application/json", "host": "api.example.test:8443", "content-type": "application/json",
               "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
               "X-Title": "MyApplicationName"}
    assert request_credentials(headers) == set()


def test_request_credentials_from_the_url():
    url = ("https://svc-account:pa55%2Bw0rd-7f@api.example.test/v1/x?Key=qk-4f6e8d0c2b&sig=sI9%2BnAtuRe%2Fx8Kq2%3D%3D"
           "&X-AMZ-SIGNATURE=5d672d79c15b&page=12345678901&code=oauth-c0de")
    found = request_credentials({}, url)
    # as sent and decoded: an echo of the URL shows the first, of the value the second
    assert {"svc-account:pa55%2Bw0rd-7f", "pa55%2Bw0rd-7f", "pa55+w0rd-7f", "qk-4f6e8d0c2b",
            "sI9%2BnAtuRe%2Fx8Kq2%3D%3D", "sI9+nAtuRe/x8Kq2==", "5d672d79c15b", "oauth-c0de"} <= found
    assert "12345678901" not in found  # not a credential parameter


def test_a_lone_userinfo_is_a_credential():
    assert "tok3n-abcdef123" in request_credentials({}, "https://tok3n-abcdef123@host.test/v1")


def test_echoed_credentials_are_redacted_in_every_form():
    url = "https://api.example.test/v1/x?sig=sI9%2BnAtuRe%2Fx8Kq2%3D%3D"
    secrets = secret_values({"Cookie": "s=c00kie-sess-9a8b"}, {}, url)
    echoed = {"target": "/v1/x?sig=sI9%2BnAtuRe%2Fx8Kq2%3D%3D", "sig": "sI9+nAtuRe/x8Kq2==",
              "cookie": "s=c00kie-sess-9a8b"}
    assert redact(echoed, secrets) == {"target": f"/v1/x?sig={REDACTED}", "sig": REDACTED, "cookie": REDACTED}


# -- credential query parameters and userinfo in the key ----------------------------------------

BODY = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.mark.parametrize(
    "name",
    ["key", "api-key", "api_key", "token", "access_token", "sig", "signature", "code", "X-Amz-Signature",
     "X-Amz-Credential", "X-Amz-Security-Token", "KEY", "Sig", "x-amz-signature"],
)
def test_credential_query_parameters_are_neither_in_the_key_nor_stored(name):
    base = "https://api.example.test/v1/chat/completions?api-version=2024-10-21"
    with_it = make_key("POST", f"{base}&{name}=s3cret-value-1", BODY, {})
    assert with_it.query == (("api-version", "2024-10-21"),)
    assert with_it.key == make_key("POST", base, BODY, {}).key


def test_keys_without_credential_parameters_are_those_of_earlier_releases():
    # committed cassettes keep replaying: the rule change touches only requests that carry one
    url = "https://api.openai.com/v1/chat/completions?api-version=2024-10-21&key=abc"
    assert make_key("POST", url, BODY, {}).key == "0ef7cc227ba5016e40fb4671b5244ff6e0899b8456e2eca6efea38600d11169e"
    assert make_key("POST", url, BODY, {}, KeyRules(match_host=True)).key == \
        "5c5cbbea964f5cf57d3d1940057cc0a7212caa90d98344c31fb46622293f7dcf"


def test_userinfo_is_not_part_of_the_host():
    rules = KeyRules(match_host=True)
    with_userinfo = make_key("POST", "https://u:pa55w0rd-123@api.example.test:8443/v1/x", BODY, {}, rules)
    assert with_userinfo.host == "https://api.example.test:8443"
    assert with_userinfo.key == make_key("POST", "https://api.example.test:8443/v1/x", BODY, {}, rules).key


# -- masked URLs ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://user:s3cret@127.0.0.1:6379/0?prefix=p:", "redis://user:***@127.0.0.1:6379/0?prefix=p:"),
        ("redis://s3cret@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
        ("rediss://127.0.0.1:6379/0?Password=s3cret&prefix=p:", "rediss://127.0.0.1:6379/0?Password=***&prefix=p:"),
        ("https://tok3n@api.example.test/v1?key=s3cret&page=2", "https://***@api.example.test/v1?key=***&page=2"),
        ("redis://127.0.0.1:6379/0?prefix=p:", "redis://127.0.0.1:6379/0?prefix=p:"),
        ("redis://[::1/0", "<unparsable url>"),
        # a password with '#', '?' or '/' left unencoded ends the netloc early: still masked
        ("redis://:Pa#ss99secret@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
        ("redis://u:Pa?ss99secret@127.0.0.1:1/0?prefix=p:", "redis://u:***@127.0.0.1:1/0?prefix=p:"),
        ("redis://:Pa/ss99secret@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
        ("redis://u/x:Pa@ss99secret@127.0.0.1:1/0", "redis://***@127.0.0.1:1/0"),
        # a parameter named as a credential header would be, when its value could be a secret
        ("https://apim.example.test/v1?subscription-key=zq9Xv2Lm4Np7Rt1Wy8Kb&max_tokens=1024&page_token=2",
         "https://apim.example.test/v1?subscription-key=***&max_tokens=1024&page_token=2"),
    ],
)
def test_mask_url(url, shown):
    assert mask_url(url) == shown


# -- binary bodies ------------------------------------------------------------------------------

def _entry(raw: bytes, side: str = "response") -> Entry:
    binary = Body("base64", base64.b64encode(raw).decode())
    plain = Body("json", {"model": "tts-1"})
    return Entry(
        key="0" * 64, recorded_at=datetime(2026, 1, 1, tzinfo=timezone.utc), model="tts-1", model_version="tts-1",
        method="POST", path="/v1/audio/speech", query=[], request_headers={},
        request_body=binary if side == "request" else plain, status=200, response_headers={},
        response_body=binary if side == "response" else plain,
    )


@pytest.mark.parametrize("side", ["request", "response"])
def test_a_secret_shape_in_a_base64_body_is_found(side):
    key = "sk-proj-" + "A1b2C3d4" * 4
    # between bytes that are not UTF-8, and not word characters either
    entry = _entry(b"\x89\xfb\xff" + key.encode() + b"\xfe\x00", side)
    text = dump_entry(entry)
    assert key not in text
    [finding] = find_entry_secrets(entry, text)
    assert (finding.kind, finding.where, finding.excerpt) == ("openai or anthropic key", f"base64 {side} body",
                                                              "sk-pro...d4")
    assert find_entry_secrets(entry, text, allow=["sk-proj-A1b2"]) == []


def test_a_known_value_in_a_base64_body_is_found():
    entry = _entry(b"\xff\xfe" + b"xk-2b4d6f8h0j2l" + b"\x00")
    [finding] = find_entry_secrets(entry, dump_entry(entry), known={"xk-2b4d6f8h0j2l": "credential the request carried"})
    assert (finding.kind, finding.where) == ("credential the request carried", "base64 response body")
    assert find_entry_secrets(entry, dump_entry(entry), known={"something-else-1": "x"}) == []


@pytest.mark.parametrize("side", ["request", "response"])
@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress, lambda b: zlib.compress(b, 9)])
def test_a_secret_in_compressed_bytes_without_a_content_encoding_is_found(side, compress):
    """A body gzipped or zlib-compressed on its own terms (no Content-Encoding: kept as the
    bytes the client got) hides the key from the plain search; it is searched inflated."""
    key = "sk-proj-" + "A1b2C3d4" * 4
    entry = _entry(compress(f"notes\nOPENAI_API_KEY={key}\n".encode()), side)
    text = dump_entry(entry)
    assert key.encode() not in base64.b64decode(entry.request_body.value if side == "request"
                                                else entry.response_body.value)
    [finding] = find_entry_secrets(entry, text)
    assert finding.kind == "openai or anthropic key" and finding.where.startswith("compressed data")
    echoed = _entry(compress(b"echo: xk-2b4d6f8h0j2l, done"), side)
    [known] = find_entry_secrets(echoed, dump_entry(echoed), known={"xk-2b4d6f8h0j2l": "credential the request carried"})
    assert known.kind == "credential the request carried"
    # data that only starts like gzip is searched as it is, and finds nothing
    assert find_entry_secrets(_entry(b"\x1f\x8bnot gzip at all"), dump_entry(_entry(b"\x1f\x8bnot gzip at all"))) == []


def test_a_secret_in_gzip_inside_base64_inside_json_is_found() -> None:
    key = "sk-proj-" + "A1b2C3d4" * 4
    entry = _entry(b"", "request")
    entry.request_body = Body("json", {"file": base64.b64encode(gzip.compress(f"KEY={key}".encode())).decode()})
    [finding] = find_entry_secrets(entry, dump_entry(entry))
    assert finding.where == "compressed data in base64 inside the request's JSON"


_KEY = "sk-proj-" + "A1b2C3d4" * 4
_PLAIN = f"notes\nOPENAI_API_KEY={_KEY}\n".encode()


def _zipped(data: bytes) -> bytes:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("notes.txt", data)
    return out.getvalue()


def _zip_of(members: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _sse(content: str) -> Body:
    chunk = {"choices": [{"index": 0, "delta": {"content": content}}]}
    return Body("events", [f"data: {json.dumps(chunk)}", "data: [DONE]"])


@pytest.mark.parametrize(("body", "headers"), [
    # base64 that is not a whole string: glued after other text, so the key's encoding is at
    # another alignment; line-wrapped as MIME writes it; in a text body; in streamed chunks
    (Body("text", _b64(b"k=" + _PLAIN)), {"content-type": "text/plain"}),
    (Body("json", {"content": "b64:" + _b64(b"xy" + _PLAIN)}), {}),
    (Body("json", {"content": base64.encodebytes(b"header " * 20 + _PLAIN).decode()}), {}),
    (_sse(_b64(b"x" + _PLAIN)), {"content-type": "text/event-stream"}),
    (Body("lines", [json.dumps({"response": _b64(_PLAIN)}), json.dumps({"done": True})]),
     {"content-type": "application/x-ndjson"}),
    # hex, in JSON and in a stream
    (Body("json", {"content": _PLAIN.hex()}), {}),
    (_sse(_PLAIN.hex()), {"content-type": "text/event-stream"}),
    # HTML character references inside JSON and inside a streamed chunk
    (Body("json", {"content": "".join(f"&#{ord(c)};" for c in _KEY)}), {}),
    (_sse("your key: " + "".join(f"&#x{ord(c):x};" for c in _KEY)), {"content-type": "text/event-stream"}),
])
def test_a_secret_encoded_inside_a_string_is_found(body: Body, headers: dict[str, str]) -> None:
    entry = _entry(b"", "request")
    entry.response_body, entry.response_headers = body, headers
    text = dump_entry(entry)
    assert _KEY not in text and find_secrets(text) == []
    found = find_entry_secrets(entry, text)
    assert found and {f.kind for f in found} == {"openai or anthropic key"}


def _tarred(data: bytes) -> bytes:
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        info = tarfile.TarInfo("notes.zip")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-15)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize("pack", [
    bz2.compress, lzma.compress, _zipped, lambda b: gzip.compress(gzip.compress(b)),
    lambda b: zlib.compress(gzip.compress(b)),
    # four layers of gzip; a zip inside a .tar.gz; a zip as the second member of a zip; raw
    # deflate with no header; lzma's "alone" format
    lambda b: gzip.compress(gzip.compress(gzip.compress(gzip.compress(b)))),
    lambda b: gzip.compress(_tarred(_zipped(b))),
    lambda b: _zip_of({"a.txt": b"first", "b.zip": _zipped(b)}),
    _raw_deflate,
    lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE),
])
def test_a_secret_in_other_compressions_and_in_layers_is_found(pack) -> None:
    entry = _entry(pack(_PLAIN))
    [finding] = find_entry_secrets(entry, dump_entry(entry))
    assert finding.kind == "openai or anthropic key" and finding.where == "compressed data in the base64 response body"


def test_ordinary_long_ids_and_digests_find_nothing() -> None:
    entry = _entry(b"", "request")
    entry.response_body = Body("json", {
        "id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz0123", "sha256": "9f" * 32, "system_fingerprint": "fp_44709d6fcb",
        "content": "Use &amp; and &lt;b&gt; in HTML; the key is set in OPENAI_API_KEY.",
    })
    assert find_entry_secrets(entry, dump_entry(entry), known={"xk-2b4d6f8h0j2l": "credential"}) == []


@pytest.mark.parametrize("written", ["&#115;k-proj-", "&#x73;k&#x2d;proj&#45;", "s&#107;-proj-"])
def test_a_secret_behind_html_entities_is_found(written: str) -> None:
    key = "A1b2C3d4" * 4
    entry = _entry(b"", "request")
    entry.response_body = Body("text", f"<html><body><p>Your key: {written}{key}</p></body></html>")
    entry.response_headers = {"content-type": "text/html"}
    text = dump_entry(entry)
    assert find_secrets(text) == []
    [finding] = find_entry_secrets(entry, text)
    assert finding.kind == "openai or anthropic key" and finding.where == "the response's text, HTML entities decoded"
    assert find_entry_secrets(entry, text, known={"sk-proj-" + key: "secret environment value"})[-1].kind == \
        "secret environment value"


def test_a_known_value_is_shown_by_its_length_only():
    entry = _entry(b"\xff\xfe" + b"Xy7kQ2mP9aZ" + b"\x00")
    [finding] = find_entry_secrets(entry, dump_entry(entry), known={"Xy7kQ2mP9aZ": "credential the request carried"})
    assert finding.excerpt == "<11 characters>"  # not 'Xy7kQ2...aZ': 8 of its 11 characters


@pytest.mark.parametrize("prefix", ["data:text/plain;base64,", ""])
def test_a_secret_in_base64_inside_a_json_string_is_found(prefix: str) -> None:
    key = "sk-proj-" + "A1b2C3d4" * 4
    document = base64.b64encode(f"notes\nOPENAI_API_KEY={key}\n".encode()).decode()  # at no aligned offset
    entry = _entry(b"", "response")
    entry.request_body = Body("json", {"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": prefix + document}}]}]})
    text = dump_entry(entry)
    assert key not in text
    [finding] = find_entry_secrets(entry, text)
    assert finding.kind == "openai or anthropic key" and finding.where == "base64 inside the request's JSON"
    env = "db-Pw_9f8e7d6c5b4a3928"
    entry.request_body = Body("json", {"file_data": prefix + base64.b64encode(f"X={env}".encode()).decode() * 2})
    [known] = find_entry_secrets(entry, dump_entry(entry), known={env: "secret environment value"})
    assert known.kind == "secret environment value"
    entry.request_body = Body("json", {"id": "chatcmpl-" + "AbCdEf0123456789" * 3, "image": prefix + "iVBORw0KGgo" * 8})
    assert find_entry_secrets(entry, dump_entry(entry)) == []


def _streamed(pieces: list[str]) -> Entry:
    events = [f'data: {json.dumps({"choices": [{"index": 0, "delta": {"content": p}}]})}' for p in pieces]
    entry = _entry(b"", "request")
    entry.response_body = Body("events", [*events, "data: [DONE]"])
    return entry


def test_a_secret_split_over_a_streams_events_is_found():
    key = "sk-proj-" + "A1b2C3d4" * 4
    pieces = ["Your key is ", *(key[i:i + 4] for i in range(0, len(key), 4)), "."]  # as a model streams tokens
    entry = _streamed(pieces)
    text = dump_entry(entry)
    assert key not in text and find_secrets(text) == []  # no one event holds it
    [shaped] = find_entry_secrets(entry, text)
    assert shaped.kind == "openai or anthropic key" and "choices[0].delta.content, joined" in shaped.where
    split = _streamed(["a token: db-Pw_", "9f8e7d6c", "5b4a3928"])
    [known] = find_entry_secrets(split, dump_entry(split), known={"db-Pw_9f8e7d6c5b4a3928": "secret environment value"})
    assert known.kind == "secret environment value"
    ordinary = _streamed(["an ", "ordinary ", "answer"])
    assert find_entry_secrets(ordinary, dump_entry(ordinary)) == []


@pytest.mark.parametrize("lines", [False, True], ids=["SSE", "NDJSON"])
def test_a_secret_a_stream_writes_with_json_escapes_is_found(lines: bool) -> None:
    """A server may escape any character of a JSON string (``\\u0073`` for ``s``, ``\\/`` for
    ``/``, as PHP and some Java servers write a slash): the event's text then holds no secret
    shape and no known value as such, in one event or joined."""
    key = "sk-proj-" + "A1b2C3d4" * 4
    escaped = "".join(f"\\u{ord(c):04x}" if c in "sp" else c for c in key)
    aws = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
    for secret, raw, known in ((key, escaped, {}), (aws, aws.replace("/", "\\/"), {aws: "secret environment value"})):
        data = '{"choices": [{"index": 0, "delta": {"content": "it is ' + raw + '"}}]}'
        entry = _entry(b"", "request")
        entry.response_body = Body("lines", [data]) if lines else Body("events", [f"data: {data}", "data: [DONE]"])
        assert json.loads(data)["choices"][0]["delta"]["content"] == "it is " + secret
        text = dump_entry(entry)
        assert secret not in text
        [finding] = find_entry_secrets(entry, text, known=known)
        assert finding.kind == (known[secret] if known else "openai or anthropic key")
        assert "unescaped" in finding.where
    plain = _streamed(["caf\u00e9 ", "au lait"])  # escapes of ordinary text find nothing
    assert find_entry_secrets(plain, dump_entry(plain)) == []


@pytest.mark.parametrize(
    "event",
    [
        'data: {"choices": [{"delta": {"content": "Here:\\nKEY"}}]}',  # no word boundary after \n
        'data: "a bare JSON string:\\tKEY"',
        'data: {"choices": [{"delta":\ndata: {"content": "split data lines:\\nKEY"}}]}',
    ],
    ids=["after a newline escape", "a bare string", "over two data lines"],
)
def test_a_secret_in_a_single_event_behind_an_escape_is_found(event: str) -> None:
    key = "sk-proj-" + "A1b2C3d4" * 4
    entry = _entry(b"", "request")
    entry.response_body = Body("events", [event.replace("KEY", key), "data: [DONE]"])
    text = dump_entry(entry)
    assert find_secrets(text) == []  # the YAML's search, and so redaction, cannot see it
    [finding] = find_entry_secrets(entry, text)
    assert finding.kind == "openai or anthropic key" and "unescaped" in finding.where
    quoted = 'pa"ss\\word-9f8e7d6c5b'  # a known value holding a quote, echoed escaped
    entry.response_body = Body("events", ['data: {"text": "echo: pa\\"ss\\\\word-9f8e7d6c5b"}'])
    [known] = find_entry_secrets(entry, dump_entry(entry), known={quoted: "secret environment value"})
    assert known.kind == "secret environment value"


# The literal-prefix prefilters only skip patterns that cannot match: the findings are
# those of the patterns alone, on texts made of secret shapes, near-misses and words.
_PIECES = [
    "sk-", "sk-proj-", "sk-ant-", "xsk-", "Bearer ", "bearer ", "Bearer\t", "AKIA", "ASIA", "eyJ", ".eyJ", "AIza",
    "ghp_", "gho_", "gh", "ABCDEFGHIJKLMNOP", "abcdefghij0123456789", "A1b2C3d4E5f6G7h8", "-", "_", ".", " ", "\n",
    "x", "<redacted>", "data: ", '"', "task-", "earer ",
]


def _unfiltered(text: str) -> list[tuple[str, int, str]]:
    return sorted(
        (kind, text.count("\n", 0, m.start()) + 1, m.group(0))
        for kind, pattern in SECRET_PATTERNS.items() for m in pattern.finditer(text) if shaped(kind, m.group(0))
    )


@pytest.mark.parametrize("prose", [
    "Send it as Bearer tokens/credentials in the header.",
    "This is bearer authentication/authorization, as RFC 6750 names it.",
    "The bearer instrument-to-instrument transfer settles at once.",
    "Authorization: Bearer YOUR_ACCESS_TOKEN_HERE_PLEASE",
    "Use the sk-learn-preprocessing-pipelines package.",
    "AWS's documented example key AKIAIOSFODNN7EXAMPLE is no key.",
])
def test_prose_with_a_keys_prefix_is_not_a_secret(prose: str) -> None:
    """An answer that explains bearer tokens, or names a package, is stored: refused, its
    replay would miss."""
    assert find_secrets(prose) == []


@pytest.mark.parametrize("key", [
    "Bearer " + "q7Zr2Lm9Xc4Vb8Nt", "bearer eyJhbGciOiJIUzI1NiJ9.abc123", "sk-proj-" + "A1b2C3d4" * 4,
    "sk-" + "q7Zr2Lm9Xc4Vb8Nt1Kp6", "AKIA" + "Q7ZR2LM9XC4VB8NT",
])
def test_keys_beside_that_prose_still_are(key: str) -> None:
    assert len(find_secrets(f"the answer: {key} end")) == 1


@hypothesis.settings(max_examples=500, deadline=None)
@hypothesis.given(st.lists(st.sampled_from(_PIECES), max_size=30).map("".join))
def test_the_prefilters_never_change_what_is_found(text: str) -> None:
    found = [(f.kind, f.line) for f in find_secrets(text)]
    assert sorted(found) == [(kind, line) for kind, line, _ in _unfiltered(text)]


def test_the_environment_is_read_again_when_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOME_API_KEY", raising=False)
    before = environment_secrets()
    value = "sk-" + "q7Zr2Lm9Xc4Vb8Nt1Kp6" * 2
    monkeypatch.setenv("SOME_API_KEY", value)
    assert value in environment_secrets()  # the cached answer is not kept across the change
    monkeypatch.delenv("SOME_API_KEY")
    assert environment_secrets() == before


def test_a_pattern_replaced_or_added_gets_its_own_prefilter(monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    patterns = dict(SECRET_PATTERNS)
    patterns["github token"] = re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,}")
    patterns["shouting key"] = re.compile(r"\bsk-[a-z0-9]{20,}", re.IGNORECASE)
    patterns["no boundary"] = re.compile(r"xoxb-[0-9]{10,}")
    monkeypatch.setattr("llm_cache.leaks.SECRET_PATTERNS", patterns)
    text = "a github_pat_" + "A1b2C3d4E5" * 3 + " and SK-" + "ABCDEFGHIJ" * 3 + " and xoxb-1234567890123"
    kinds = sorted(f.kind for f in find_secrets(text))
    assert kinds == ["github token", "no boundary", "shouting key"]


@pytest.mark.parametrize(
    ("name", "value", "credential"),
    [
        ("api_key", "ak-1", True),  # a credential field: any value
        ("Client_Secret", "x", True),
        ("subscription-key", "zq9Xv2Lm4Np7Rt1Wy8Kb", True),  # named as one, and could be a secret
        ("x-api-key", "Rk4Hs7Bd2Wq8Zt3Lm6Xv", True),
        ("auth", "Hs7Bd2Wq8Zt3Lm6Xv1Np", True),
        ("subscription-key", "short", False),  # too short to redact where an answer echoes it
        ("sort_key", "created_at", False),  # ordinary words: redacting them would corrupt answers
        ("max_tokens", "1024", False),
        ("purpose", "zq9Xv2Lm4Np7Rt1Wy8Kb", False),  # not named as a credential
        ("code_verifier", "short", True),  # PKCE's secret: a credential field, any value
        ("passphrase", "Hs7Bd2Wq8Zt3Lm6Xv1Np", True),
        ("ssh_passphrase", "Hs7Bd2Wq8Zt3Lm6Xv1Np", True),
        ("verifier", "gpt-4o-mini-2024-07-18", False),  # a verifier model is no credential
        ("db_pwd", "Hs7Bd2Wq8Zt3Lm6Xv1Np", True),
        # a credential word inside a name that holds none
        ("prompt_cache_key", "user_7f3a9c2e", False),
        ("tokenizer", "cl100k_base_v2x9", False),
        ("keywords", "gpt4o,claude3x9", False),
        ("monkey", "Hs7Bd2Wq8Zt3Lm6Xv1Np", False),
        ("max_completion_tokens", "Hs7Bd2Wq8Zt3Lm6Xv1Np", False),
    ],
)
def test_which_fields_carry_a_credential(name: str, value: str, credential: bool) -> None:
    assert field_credential(name, value) is credential


TOKEN = "tok_9f8e7d6c5b4a39281706ZQ"  # known only from the request: no secret shape


def _chunk(text: str, index: int = 0) -> str:
    return json.dumps({"id": "c1", "object": "chat.completion.chunk",
                       "choices": [{"index": index, "delta": {"content": text}}]})


@pytest.mark.parametrize(
    "body, ctype",
    [
        (f"data: {_chunk('key is tok_9f8e7d6c5')}\n\ndata: {_chunk('b4a39281706ZQ ok')}\n\ndata: [DONE]\n",
         "text/event-stream"),  # the last event without its blank line
        (f"data: {_chunk('key is tok_9f8e7d6c5')}\r\n\r\ndata: {_chunk('b4a39281706ZQ ok')}\n\n",
         "text/event-stream"),  # mixed line ends
        (f": keepalive\n\ndata: {_chunk('key is tok_9f8e7d6c5')}\n\ndata: {_chunk('b4a39281706ZQ ok')}\n\n: ping\n",
         "text/event-stream"),  # comment lines
        ('{"message": {"content": "key is tok_9f8e7d6c5"}}\n\n{"message": {"content": "b4a39281706ZQ"}}\n',
         "application/x-ndjson"),  # a blank NDJSON line
        ('{"message": {"content": "key is tok_9f8e7d6c5"}}\r\n{"message": {"content": "b4a39281706ZQ"}}\r\n',
         "application/x-ndjson"),  # CRLF NDJSON
        ("data: key is tok_9f8e7d6c5\n\ndata: b4a39281706ZQ\n\n", "text/event-stream"),  # data that is not JSON
    ],
    ids=["no final blank line", "mixed line ends", "comments", "blank ndjson line", "crlf ndjson", "plain data"],
)
def test_a_secret_split_over_a_stream_kept_as_text_is_found(body: str, ctype: str) -> None:
    """A stream the encoder keeps as text (not byte for byte what it would write back) is
    split as the client splits it, and its fields joined, as a stream kept as events is."""
    from llm_cache.body import encode_body

    stored = encode_body(body.encode(), ctype)
    entry = _entry(b"", "request")
    entry.response_headers = {"content-type": ctype}
    entry.response_body = stored
    text = dump_entry(entry)
    assert TOKEN not in text
    found = find_entry_secrets(entry, text, known={TOKEN: "credential of the request"})
    assert [f.kind for f in found] == ["credential of the request"], (stored.kind, found)


def test_a_secret_split_over_interleaved_choices_or_an_anthropic_block_is_found() -> None:
    """With n=2 the choices' deltas interleave; each choice is joined on its own. Anthropic's
    block start holds the block's first text, its deltas the rest."""
    entry = _entry(b"", "request")
    events = [_chunk("key tok_9f8e7d6c5", 0), _chunk("Hello", 1), _chunk("b4a39281706ZQ", 0), _chunk(" there", 1)]
    entry.response_body = Body("events", [f"data: {e}" for e in events])
    [found] = find_entry_secrets(entry, dump_entry(entry), known={TOKEN: "credential"})
    assert found.where == "the streamed response's choices[0].delta.content, joined"
    start = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "key tok_9f8e7d6c5"}}
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "b4a39281706ZQ"}}
    entry.response_body = Body("events", [f"event: {d['type']}\ndata: {json.dumps(d)}" for d in (start, delta)])
    assert [f.kind for f in find_entry_secrets(entry, dump_entry(entry), known={TOKEN: "credential"})] == ["credential"]
    two = [_chunk("an ordinary", 0), _chunk("the other", 1), _chunk(" answer", 0), _chunk(" one", 1)]
    entry.response_body = Body("events", [f"data: {e}" for e in two])
    assert find_entry_secrets(entry, dump_entry(entry), known={TOKEN: "credential"}) == []


def test_an_escaped_or_split_secret_in_an_aws_event_stream_text_payload_is_found() -> None:
    """A Bedrock payload that json.dumps does not give back byte for byte is kept as text:
    it is decoded as JSON all the same, its escapes and its split fields."""
    from llm_cache import eventstream
    from llm_cache.body import encode_body

    escaped = "".join(f"\\u{ord(c):04x}" for c in TOKEN)
    for payloads in (
        ['{"contentBlockIndex":0,"delta":{"text":"' + escaped + '"}}'],
        ['{"contentBlockIndex":0,"delta":{"text":"caf\\u00e9 key tok_9f8e7d6c5"}}',
         '{"contentBlockIndex":0,"delta":{"text":"b4a39281706ZQ"}}'],
    ):
        raw = b"".join(eventstream.encode(eventstream.Message({":event-type": "contentBlockDelta"}, p.encode()))
                       for p in payloads)
        entry = _entry(b"", "request")
        entry.response_body = encode_body(raw, "application/vnd.amazon.eventstream")
        assert entry.response_body.kind == "eventstream"
        assert "text" in entry.response_body.value[0]  # not kept as JSON
        text = dump_entry(entry)
        assert TOKEN not in text
        assert [f.kind for f in find_entry_secrets(entry, text, known={TOKEN: "credential"})] == ["credential"]


def test_an_escaped_secret_in_a_text_body_is_found() -> None:
    """A JSONP answer, or an error page quoting JSON: the text's escapes are decoded."""
    escaped = "".join(f"\\u{ord(c):04x}" for c in TOKEN)
    entry = _entry(b"", "request")
    entry.response_body = Body("text", 'callback({"echo": "' + escaped + '"})')
    text = dump_entry(entry)
    assert TOKEN not in text
    [found] = find_entry_secrets(entry, text, known={TOKEN: "credential"})
    assert found.where == "the response's text, unescaped"
    entry.response_body = Body("text", 'callback({"echo": "caf\\u00e9"})')
    assert find_entry_secrets(entry, dump_entry(entry), known={TOKEN: "credential"}) == []


@pytest.mark.parametrize("raw", [
    b"PK\x03\x04" + b"not a zip at all" * 4,  # damaged zip
    b"\xfd7zXZ\x00" + b"garbage" * 8,  # damaged xz
    b"BZh9" + b"garbage" * 8,
    b"\x1f\x8b" + b"garbage" * 8,
])
def test_damaged_compressed_data_finds_nothing_and_never_raises(raw: bytes) -> None:
    """The search only reads: data that merely starts like a compressed file, in a body or
    in base64 inside an answer, is searched as it is."""
    entry = _entry(raw)
    assert find_entry_secrets(entry, dump_entry(entry)) == []
    echoed = _entry(b"", "request")
    echoed.response_body = Body("json", {"content": "it begins " + base64.b64encode(raw).decode()})
    assert find_entry_secrets(echoed, dump_entry(echoed)) == []


def test_a_number_is_redacted_only_under_a_credentials_name() -> None:
    """A digit credential's number under its name is redacted; the same number elsewhere (a
    timestamp equal to a header's value) stays a number."""
    body = {"created": 1717171717, "password": 8675309123456, "nested": {"pin_code": 1, "ids": [1717171717]}}
    assert redact(body, ["1717171717", "8675309123456"]) == {
        "created": 1717171717, "password": REDACTED, "nested": {"pin_code": 1, "ids": [1717171717]}}


@pytest.mark.parametrize("name", ["auth_tokens", "access_tokens", "api_tokens", "tokenized_secret", "primarykey"])
def test_credential_names_that_hold_an_innocent_word_are_still_credentials(name: str) -> None:
    assert field_credential(name, "Zx9kQ2mP7vR4tY8wL3nB1")


@pytest.mark.parametrize("environ", [
    {"SSH_KEY": "/home/runner/.ssh/id_ed25519"}, {"SERVICE_CREDENTIALS": "~/.config/gcloud/adc_9f8e7d.json"},
    {"TLS_KEY": "C:\\keys\\a9f8e7d6c5b4a3.pem"}, {"X_PWD": "/home/someone/projects/abc"},
])
def test_an_environment_value_that_is_a_files_path_is_no_secret(environ: dict[str, str]) -> None:
    assert secret_values({}, environ) == []


def test_every_percent_encoding_of_a_secret_is_redacted() -> None:
    """urllib's default quote() keeps '/', some servers write lower-case hex, a value can be
    encoded twice: an AWS secret (which holds '/' and '+') echoed any of these ways is found."""
    from urllib.parse import quote

    from llm_cache.redact import echo_forms

    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYz9Qk3Lm"
    forms = echo_forms(secret)
    for written in (quote(secret), quote(secret, safe="").replace("%2F", "%2f").replace("%2B", "%2b"),
                    quote(quote(secret, safe=""), safe="")):
        assert redact(f"echo: {written}!", forms) == f"echo: {REDACTED}!", written


@pytest.mark.parametrize("name", ["pass", "db_pass", "pw", "user-pw", "DB_PASS"])
def test_short_password_names_are_credential_names(name: str) -> None:
    assert field_credential(name.lower(), "Xy7#kL9!mQ2$vB")
    assert request_credentials(body={name: "Xy7#kL9!mQ2$vB"}) >= {"Xy7#kL9!mQ2$vB"}


@pytest.mark.parametrize("name", ["bypass", "compass", "passage", "passes", "second_pass_model", "pass_id", "pw_len"])
def test_words_holding_pass_are_not(name: str) -> None:
    assert not field_credential(name, "Xy7kL9mQ2vBsW3")
    assert request_credentials(body={name: "Xy7kL9mQ2vBsW3"}) == set()


def test_a_connection_strings_password_and_a_semicolon_separated_query_are_found() -> None:
    found = request_credentials(body={"dsn": "Server=db;User Id=app;Password=Xy7#kL9!mQ2$vE;"})
    assert "Xy7#kL9!mQ2$vE" in found and "app" not in found
    assert request_credentials(body={"dsn": "Server=db;Password=short;"}) == set()  # under 8: ordinary words
    # prose and code in a prompt are no connection string: nothing of them is taken for a password
    for prompt in ("password = getpass.getpass(); login(user, password)",
                   "Set Password = the one from step two; then log in"):
        assert request_credentials(body={"messages": [{"content": prompt}]}) == set(), prompt
    assert "Qw3rTy7uIo9pAsDj" in request_credentials(url="https://h/v1/x?model=gpt-4o;api_key=Qw3rTy7uIo9pAsDj")


def _b64json(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize("events", [
    # Bedrock's InvokeModelWithResponseStream: each chunk's bytes are base64 of a JSON event
    [{"json": {"bytes": _b64json({"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "text_delta", "text": "your key is " + _KEY[:14]}})}},
     {"json": {"bytes": _b64json({"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "text_delta", "text": _KEY[14:]}})}}],
])
def test_a_secret_split_across_base64_stream_chunks_is_found(events: list[dict[str, Any]]) -> None:
    entry = _entry(b"", "request")
    entry.response_body = Body("eventstream", events)
    entry.response_headers = {"content-type": "application/vnd.amazon.eventstream"}
    text = dump_entry(entry)
    found = find_entry_secrets(entry, text)
    assert {f.kind for f in found} == {"openai or anthropic key"}
    assert any("from base64" in f.where for f in found)
    known = find_entry_secrets(entry, text, known={_KEY: "secret environment value"})
    assert "secret environment value" in {f.kind for f in known}


def test_a_secret_split_across_base64_audio_deltas_is_found() -> None:
    raw = b"\x00\x01 audio " + _KEY.encode() + b" more audio \xff"
    cut = 17  # in the key, and no multiple of three: each chunk is base64 of its own bytes
    chunks = [base64.b64encode(part).decode() for part in (raw[:cut], raw[cut:])]
    entry = _entry(b"", "request")
    entry.response_body = Body("events", [
        f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'audio': {'data': c}}}]})}" for c in chunks
    ] + ["data: [DONE]"])
    entry.response_headers = {"content-type": "text/event-stream"}
    text = dump_entry(entry)
    assert find_secrets(text) == []
    found = find_entry_secrets(entry, text, known={_KEY: "secret environment value"})
    assert {f.where for f in found} >= {"the streamed response's choices[0].delta.audio.data, base64 decoded and joined"}
