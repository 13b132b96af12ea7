"""Request keys: what changes the key, what does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_cache.key import NO_MODEL, KeyRules, canonical_body, flatten, make_key

URL = "https://api.openai.com/v1/chat/completions"
BASE = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi", "name": "alice"},
    ],
    "temperature": 0.5,
    "tools": [{"type": "function", "function": {"name": "f", "description": "d"}}],
    "stream": True,
    "stream_options": {"include_usage": True},
}
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-aaaaaaaaaaaa"}


def key(body=BASE, *, method="POST", url=URL, headers=HEADERS, rules=KeyRules()):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return make_key(method, url, raw, headers, rules).key


def with_(path, value, body=BASE):
    """A deep copy of ``body`` with the dotted ``path`` set (or removed when value is ...)."""
    out = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    target = out
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is ...:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return out


# -- equivalent spellings --------------------------------------------------


def test_dict_order_and_whitespace_do_not_change_key():
    reordered = json.dumps(dict(reversed(list(BASE.items()))), indent=4).encode()
    compact = json.dumps(BASE, separators=(",", ":")).encode()
    assert key(reordered) == key(compact) == key(BASE)


@pytest.mark.parametrize(
    "a, b",
    [
        (b'{"model":"m","temperature":1}', b'{"model":"m","temperature":1.0}'),
        (b'{"model":"m","temperature":1}', b'{"model":"m","temperature":1e0}'),
        (b'{"model":"m","temperature":0.5}', b'{"model":"m","temperature":5e-1}'),
        (b'{"model":"m","n":[100]}', b'{"model":"m","n":[1E2]}'),
    ],
)
def test_equal_json_numbers_give_same_key(a, b):
    assert key(a) == key(b)


def test_integral_float_and_different_number_differ():
    assert key(b'{"model":"m","temperature":1.0}') != key(b'{"model":"m","temperature":1.5}')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=15,
)


def _shuffled(value, rnd):
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rnd) for v in value]
    return value


@settings(max_examples=50, deadline=None, database=None)
@given(body=st.dictionaries(st.text(max_size=5), json_values, max_size=6), rnd=st.randoms())
def test_shuffled_dict_order_keeps_key(body, rnd):
    body = {"model": "gpt-4o", **body}
    shuffled = json.dumps(_shuffled(body, rnd), indent=1).encode()
    assert key(json.dumps(body).encode()) == key(shuffled)


def test_key_is_the_same_in_another_process():
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "héllo"}], "temperature": 0.25}
    code = (
        "import json, sys; from llm_cache.key import make_key; "
        "print(make_key('POST', sys.argv[1], json.dumps(json.loads(sys.argv[2]), sort_keys=True).encode(), {}).key)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, URL, json.dumps(body)], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == key(body, headers={})


# -- what changes the key ----------------------------------------------------


@pytest.mark.parametrize(
    "changed",
    [
        with_("model", "gpt-4o-mini"),
        with_("messages.1.content", "hello"),
        with_("temperature", 0.7),
        with_("tools.0.function.name", "g"),
        with_("stream", False),
        with_("stream_options.include_usage", False),
    ],
    ids=["model", "content", "temperature", "tools", "stream", "include_usage"],
)
def test_body_changes_change_key(changed):
    assert key(changed) != key(BASE)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "PUT"},
        {"url": "https://api.openai.com/v1/responses"},
        {"url": URL + "?api-version=2024-06-01"},
        {"headers": {**HEADERS, "openai-beta": "assistants=v2"}},
        {"headers": {**HEADERS, "anthropic-version": "2023-06-01"}},
        {"headers": {**HEADERS, "anthropic-beta": "tools-2024-04-04"}},
    ],
    ids=["method", "path", "query", "openai-beta", "anthropic-version", "anthropic-beta"],
)
def test_request_line_and_version_headers_change_key(kwargs):
    assert key(**kwargs) != key()


def test_version_header_value_changes_key_but_name_case_does_not():
    a = key(headers={"anthropic-version": "2023-06-01"})
    assert a != key(headers={"anthropic-version": "2024-01-01"})
    assert a == key(headers={"Anthropic-Version": "2023-06-01"})


# -- what does not change the key ----------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"headers": {**HEADERS, "authorization": "Bearer sk-bbbbbbbbbbbbbbb"}},
        {"headers": {**HEADERS, "user-agent": "OpenAI/Python 9.9", "x-stainless-retry-count": "2"}},
        {"url": "http://localhost:8080/v1/chat/completions"},
        {"url": "https://api.openai.com:8443/v1/chat/completions"},
        {"method": "post"},
        {"url": URL + "?api_key=sk-zzzzzzzzzz"},
        {"url": URL + "?key=abc"},
        {"url": URL + "?token=abc&access_token=def&api-key=ghi"},
    ],
    ids=["authorization", "user-agent", "host", "port", "method-case", "api_key", "key", "token"],
)
def test_irrelevant_request_parts_keep_key(kwargs):
    assert key(**kwargs) == key()


@pytest.mark.parametrize("field", ["user", "metadata", "safety_identifier", "prompt_cache_key"])
def test_caller_fields_keep_key(field):
    assert key(with_(field, {"run": 1} if field == "metadata" else "someone")) == key(BASE)


def test_query_order_does_not_matter_but_values_do():
    assert key(url=URL + "?a=1&b=2") == key(url=URL + "?b=2&a=1")
    assert key(url=URL + "?a=1&b=2") != key(url=URL + "?a=1&b=3")


def test_match_host_puts_host_in_key():
    rules = KeyRules(match_host=True)
    other = "http://localhost:8080/v1/chat/completions"
    assert key(rules=rules) != key(url=other, rules=rules)
    assert key(rules=rules) != key(url=URL.replace("https", "http"), rules=rules)


# -- ignore_fields ---------------------------------------------------------------


@pytest.mark.parametrize(
    "ignore, changed, same",
    [
        ("temperature", with_("temperature", 0.9), True),
        ("stream_options.include_usage", with_("stream_options.include_usage", False), True),
        ("messages.1.name", with_("messages.1.name", "bob"), True),
        ("messages.-1.name", with_("messages.1.name", "bob"), True),
        ("messages.*.content", with_("messages.0.content", "x", with_("messages.1.content", "y")), True),
        ("*.include_usage", with_("stream_options.include_usage", False), True),
        # only the named item is ignored
        ("messages.0.content", with_("messages.1.content", "other"), False),
        ("messages.*.name", with_("messages.1.content", "other"), False),
    ],
)
def test_ignore_fields(ignore, changed, same):
    rules = KeyRules(ignore_fields=(ignore,))
    assert (key(changed, rules=rules) == key(BASE, rules=rules)) is same


def test_ignore_fields_removes_field_from_canonical_body():
    body = canonical_body(json.dumps(BASE).encode(), ["messages.*.role", "tools"])
    assert "tools" not in body
    assert body["messages"] == [{"content": "be brief"}, {"content": "hi", "name": "alice"}]


# -- non-JSON bodies --------------------------------------------------------------


def test_non_json_body_is_hashed_raw():
    a = make_key("POST", URL, b"hello world", {})
    b = make_key("POST", URL, b"hello worle", {})
    assert a.body is None and a.key != b.key
    assert a.key == make_key("POST", URL, b"hello world", {}).key


def test_invalid_json_is_hashed_raw():
    assert key(b'{"model": "m",') != key(b'{"model": "m", ')


# -- model version -----------------------------------------------------------------


def test_model_version_label_and_key():
    plain = make_key("POST", URL, json.dumps(BASE).encode(), {})
    pinned = make_key("POST", URL, json.dumps(BASE).encode(), {}, KeyRules(pinned_version="2024-08-06"))
    mapped = make_key(
        "POST", URL, json.dumps(BASE).encode(), {}, KeyRules(model_versions={"gpt-4o": "2024-08-06"})
    )
    assert plain.model_version == "gpt-4o"
    assert pinned.model_version == mapped.model_version == "gpt-4o@2024-08-06"
    assert plain.key != pinned.key
    assert pinned.key == mapped.key


def test_model_versions_mapping_only_applies_to_its_model():
    rules = KeyRules(model_versions={"gpt-4o-mini": "2024-07-18"})
    rk = make_key("POST", URL, json.dumps(BASE).encode(), {}, rules)
    assert rk.model_version == "gpt-4o"
    assert rk.key == key(BASE, headers={})


@pytest.mark.parametrize("body", [b"", b"not json", b'{"input": "x"}', b"[1, 2]"])
def test_no_model_label(body):
    rk = make_key("POST", URL, body, {}, KeyRules(pinned_version="v1"))
    assert rk.model is None
    assert rk.model_version == NO_MODEL == "_no_model"


def test_request_key_fields():
    rk = make_key("post", URL + "?b=2&a=1&api_key=s3cr3t", json.dumps(BASE).encode(), {})
    assert (rk.method, rk.path, rk.model, rk.query) == ("POST", "/v1/chat/completions", "gpt-4o", (("a", "1"), ("b", "2")))
    assert rk.prefix == rk.key[:12] and len(rk.key) == 64


# -- flatten --------------------------------------------------------------------------


def test_flatten_paths():
    assert flatten({"model": "m", "messages": [{"role": "u", "content": "a"}, {"content": "b"}], "o": {}, "l": []}) == {
        "model": "m",
        "messages[0].role": "u",
        "messages[0].content": "a",
        "messages[1].content": "b",
        "o": {},
        "l": [],
    }
