"""What never reaches a cassette: secret values and headers outside the allow-list."""

from __future__ import annotations

import pytest

from llm_cache.redact import REDACTED, REQUEST_HEADERS, RESPONSE_HEADERS, keep_headers, redact, secret_values


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "GITHUB_TOKEN", "CLIENT_SECRET", "my_api_key"])
def test_secret_env_names(name):
    assert secret_values({}, {name: "s3cr3t-value"}) == ["s3cr3t-value"]


@pytest.mark.parametrize(
    "environ",
    [
        {"OPENAI_API_KEY": "short"},  # under 8 characters
        {"HOME": "/home/someone"},  # not a secret-looking name
        {"API_KEY_FILE": "/run/secrets/key"},  # suffix, not infix
    ],
)
def test_env_values_ignored(environ):
    assert secret_values({}, environ) == []


def test_bearer_authorization_gives_header_and_token():
    found = secret_values({"Authorization": "Bearer sk-abcdefghijkl"}, {})
    assert set(found) == {"Bearer sk-abcdefghijkl", "sk-abcdefghijkl"}


@pytest.mark.parametrize("header", ["x-api-key", "X-Api-Key", "api-key", "x-goog-api-key"])
def test_api_key_headers(header):
    assert secret_values({header: "sk-ant-0123456789"}, {}) == ["sk-ant-0123456789"]


def test_short_and_non_credential_headers_ignored():
    assert secret_values({"authorization": "abc", "x-api-key": "short", "user-agent": "OpenAI/Python 1.50.0"}, {}) == []


def test_secret_values_longest_first_so_longer_secret_is_redacted_whole():
    secrets = secret_values({}, {"A_TOKEN": "abcdefgh", "B_TOKEN": "abcdefgh12345"})
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
        ("aws: AKIAIOSFODNN7EXAMPLE", "aws access key"),
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

    text = "sk-proj-" + "Z" * 30
    assert find_secrets(text, allow=[r"sk-proj-Z+"]) == []
    assert len(find_secrets(text, allow=[r"something-else"])) == 1
