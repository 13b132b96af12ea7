"""Bad input, property-based: keys are stable and sensitive; hostile cassettes are refused quickly
and run nothing; hostile model names stay inside the cassette directory."""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_cache.cassette import MAX_CASSETTE_BYTES, load_entry
from llm_cache.errors import CassetteError
from llm_cache.key import KeyRules, make_key
from llm_cache.stores.files import FileStore, safe_dirname

# How many examples each property tries: more under --stress (see the README's figures).
EXAMPLES = int(os.environ.get("LLM_CACHE_HYPOTHESIS_EXAMPLES", "150"))
URL = "https://api.openai.com/v1/chat/completions"

text = st.text(min_size=1, max_size=40)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                      st.floats(allow_nan=False, allow_infinity=False, width=32), text)
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
                          max_leaves=12)

# Fields whose change changes the answer, with a way to change each.
OUTPUT_FIELDS = {
    "model": lambda b: {**b, "model": b["model"] + "-x"},
    "messages": lambda b: {**b, "messages": b["messages"] + [{"role": "user", "content": "more"}]},
    "temperature": lambda b: {**b, "temperature": (b.get("temperature") or 0) + 0.5},
    "top_p": lambda b: {**b, "top_p": 0.123},
    "seed": lambda b: {**b, "seed": (b.get("seed") or 0) + 1},
    "max_tokens": lambda b: {**b, "max_tokens": (b.get("max_tokens") or 0) + 7},
    "stop": lambda b: {**b, "stop": ["END"]},
    "n": lambda b: {**b, "n": (b.get("n") or 1) + 1},
    "tools": lambda b: {**b, "tools": [{"type": "function", "function": {"name": "f"}}]},
    "tool_choice": lambda b: {**b, "tool_choice": "required"},
    "response_format": lambda b: {**b, "response_format": {"type": "json_object"}},
    "reasoning_effort": lambda b: {**b, "reasoning_effort": "high"},
    "stream": lambda b: {**b, "stream": not b.get("stream", False)},
    "stream_options": lambda b: {**b, "stream_options": {"include_usage": True}},
    "logit_bias": lambda b: {**b, "logit_bias": {"50256": -100}},
    "extra field": lambda b: {**b, "some_new_parameter": 1},
}

bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["gpt-4o", "gpt-4o-mini", "claude-x"]),
     "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": text}),
                          min_size=1, max_size=3)},
    optional={"temperature": st.floats(0, 2, allow_nan=False), "seed": st.integers(0, 1000),
              "max_tokens": st.integers(1, 4000), "metadata": st.dictionaries(text, text, max_size=2),
              "user": text, "stream": st.booleans()},
)


def _key(body: Any, **kw: Any) -> str:
    return make_key("POST", URL, json.dumps(body).encode(), {}, KeyRules(**kw)).key


def _shuffled(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shuffled(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_shuffled(v) for v in value]
    return value


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, extra=st.dictionaries(st.sampled_from(["x", "y", "z"]), json_value, max_size=3))
def test_key_is_stable_across_key_order_whitespace_and_float_spelling(body: dict[str, Any], extra: dict[str, Any]) -> None:
    body = {**body, **extra}
    expected = _key(body)
    assert make_key("POST", URL, json.dumps(_shuffled(body), indent=2).encode(), {}).key == expected
    # integral floats spelled as floats (1.0) equal their integers (1), as JSON says
    if isinstance(body.get("seed"), int):
        spelled = json.dumps(body).replace(f'"seed": {body["seed"]}', f'"seed": {body["seed"]}.0')
        assert make_key("POST", URL, spelled.encode(), {}).key == expected


@settings(max_examples=EXAMPLES, deadline=None)
@given(body=bodies, field=st.sampled_from(sorted(OUTPUT_FIELDS)))
def test_key_changes_when_a_field_that_changes_the_answer_changes(body: dict[str, Any], field: str) -> None:
    changed = OUTPUT_FIELDS[field](copy.deepcopy(body))
    assert changed != body
    assert _key(changed) != _key(body)


@settings(max_examples=EXAMPLES, deadline=None)
@given(body=bodies, value=text)
def test_key_ignores_fields_that_do_not_change_the_answer(body: dict[str, Any], value: str) -> None:
    for field in ("user", "metadata", "safety_identifier", "prompt_cache_key"):
        assert _key({**body, field: value}) == _key({k: v for k, v in body.items() if k != field})


def _entry() -> Any:
    from datetime import datetime, timezone

    from llm_cache.cassette import Body, Entry

    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    rk = make_key("POST", URL, json.dumps(body).encode(), {})
    return Entry(key=rk.key, recorded_at=datetime.now(timezone.utc), model="gpt-4o", model_version="gpt-4o",
                 method="POST", path=rk.path, query=[], request_headers={}, request_body=Body("json", body),
                 status=200, response_headers={"content-type": "application/json"},
                 response_body=Body("json", {"choices": [{"message": {"content": "hello"}}]}))


def _refused_quickly(data: bytes | str) -> None:
    started = time.monotonic()
    try:
        load_entry(data, "fuzzed.yaml")
    except CassetteError as exc:
        assert exc.path == "fuzzed.yaml" and exc.reason
    else:  # only a real, valid cassette may load: these are not
        raise AssertionError("hostile input was accepted")
    assert time.monotonic() - started < 5


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_are_a_cassette_error(data: bytes) -> None:
    _refused_quickly(data)


HOSTILE = {
    "python object": "!!python/object/apply:os.system ['touch {marker}']\n",
    "python name": "key: !!python/name:os.system\n",
    "python module": "!!python/module:os\n",
    "tagged in place": "llm_cache: 1\nkey: !!python/object/new:os.system ['touch {marker}']\n",
    "billion laughs": "a: &a ['x','x','x','x','x','x','x','x','x']\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)),
    "deep nesting": "x: " + "[" * 20000 + "]" * 20000 + "\n",
    "deep mappings": "x: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "huge scalar": "x: '" + "a" * (MAX_CASSETTE_BYTES + 10) + "'\n",
    "wrong types": "llm_cache: 1\nkey: [1, 2]\nrequest: 7\nresponse: no\n",
    "key mismatch": None,  # filled in below from a real cassette
    "binary junk": "\x00\x01\x02\x03",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_yaml_is_refused_and_runs_nothing(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = HOSTILE[name]
    if text is None:
        from llm_cache.cassette import dump_entry

        real = dump_entry(_entry())
        text = real.replace(real.split("\n")[1], "key: " + "f" * 64)
    if name == "key mismatch":
        with pytest.raises(CassetteError, match="not the key it was looked up by"):
            load_entry(text, "fuzzed.yaml", expected_key=_entry().key)
        return
    _refused_quickly(text.replace("{marker}", str(marker)))
    assert not marker.exists()


@settings(max_examples=EXAMPLES, deadline=None)
@given(label=st.one_of(
    st.text(min_size=0, max_size=300),
    st.sampled_from(["..", ".", "../../etc", "/etc/passwd", "a/../../b", "\x00", "con", "a" * 10_000, "é/ü", "~root"]),
))
def test_any_model_name_stays_one_directory_inside_the_root(label: str) -> None:
    name = safe_dirname(label)
    assert name and "/" not in name and "\x00" not in name and not name.startswith(".")
    assert len(name.encode("utf-8", "surrogatepass")) <= 255
    root = Path("/cassettes")
    assert (root / name).parent == root


def test_a_symlinked_cassette_is_replaced_not_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    store = FileStore(tmp_path / "cassettes")
    entry = _entry()
    target = store.path_for(entry.key, entry.model_version)
    target.parent.mkdir(parents=True)
    target.symlink_to(outside)
    store.put(entry)
    assert outside.read_text() == "precious"
    assert not target.is_symlink() and load_entry(target.read_text(), str(target)).key == entry.key
