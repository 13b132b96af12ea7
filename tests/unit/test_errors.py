"""The exceptions: messages built from attributes, and pickling (pytest-xdist)."""

from __future__ import annotations

import errno
import pickle
import sys

import pytest

from llm_cache.errors import (
    CacheMiss,
    CassetteError,
    ConfigError,
    LLMCacheError,
    NetworkBlocked,
    StaleCassette,
    StoreError,
)

KEY = "9f2c" * 16


def cache_miss(**kw):
    fields = dict(
        method="POST",
        endpoint="/v1/chat/completions",
        model="gpt-4o",
        key=KEY,
        path="cassettes/gpt-4o/9f2c9f2c9f2c9f2c.yaml",
        mode="replay",
        test_id="tests/test_x.py::test_a",
        closest_path="cassettes/gpt-4o/0000111122223333.yaml",
        differences=["messages[0].content", "temperature"],
    )
    fields.update(kw)
    return CacheMiss(**fields)


ERRORS = {
    "CacheMiss": cache_miss,
    "CacheMiss-bare": lambda: cache_miss(model=None, closest_path=None, differences=None, test_id=None),
    "CacheMiss-host": lambda: cache_miss(host="api.openai.com", port=443),
    "CassetteError": lambda: CassetteError(path="cassettes/m/abc.yaml", reason="not valid YAML"),
    "NetworkBlocked": lambda: NetworkBlocked(
        host="api.example.com", port=443, test_id="tests/test_x.py::test_a", address="93.184.216.34"
    ),
    "ConfigError": lambda: ConfigError(setting="--llm-cache-ttl", value="soon", expected="a duration"),
}


@pytest.mark.parametrize("make", ERRORS.values(), ids=ERRORS.keys())
def test_pickle_round_trip(make):
    error = make()
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert vars(back) == vars(error)
    assert str(back) == str(error)
    assert isinstance(back, LLMCacheError)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="add_note is Python 3.11+")
@pytest.mark.parametrize("make", ERRORS.values(), ids=ERRORS.keys())
def test_pickle_round_trip_with_note(make):
    error = make()
    error.add_note("while recording tests/test_x.py::test_a")
    back = pickle.loads(pickle.dumps(error))
    assert back.__notes__ == ["while recording tests/test_x.py::test_a"]


TWINNED = {
    **ERRORS,
    "StoreError": lambda: StoreError.from_os_error("cassettes/m/abc.yaml", OSError(errno.ENOSPC, "full")),
    "StaleCassette": lambda: StaleCassette(path="cassettes/m/abc.yaml", age_seconds=90.0, ttl_seconds=60.0,
                                           test_id="tests/test_x.py::test_a"),
}


@pytest.mark.parametrize("make", TWINNED.values(), ids=TWINNED.keys())
def test_an_error_raised_as_anthropics_own_keeps_its_name_and_pickles_back_to_itself(make):
    anthropic = pytest.importorskip("anthropic")
    from llm_cache.adapters.sdkerrors import as_sdk_error

    error = make()
    plain = type(error)
    as_sdk_error(error, {"user-agent": "Anthropic/Python 2.0.0"})
    assert isinstance(error, anthropic.AnthropicError) and isinstance(error, plain)
    assert f"{type(error).__module__}.{type(error).__qualname__}" == f"llm_cache.errors.{plain.__name__}"
    if hasattr(error, "add_note"):  # Python 3.11+
        error.add_note("while recording")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is plain
    assert vars(back) == vars(error) and str(back) == str(error)
    assert getattr(back, "errno", None) == getattr(error, "errno", None)


def test_an_error_on_another_sdks_request_is_left_as_it_is():
    pytest.importorskip("anthropic")
    from llm_cache.adapters.sdkerrors import as_sdk_error

    error = cache_miss()
    as_sdk_error(error, {"user-agent": "OpenAI/Python 3.0.0"})
    assert type(error) is CacheMiss
    as_sdk_error(error, {"user-agent": "x", "anthropic-version": "2023-06-01"})  # litellm, langchain
    assert type(error) is not CacheMiss


def test_config_error_is_a_value_error():
    assert isinstance(ConfigError(setting="s", value=1, expected="e"), ValueError)


def test_cache_miss_message():
    message = str(cache_miss())
    for part in [
        "POST /v1/chat/completions",
        "(model gpt-4o)",
        "in replay mode",
        KEY,
        "cassettes/gpt-4o/9f2c9f2c9f2c9f2c.yaml",
        "closest:   cassettes/gpt-4o/0000111122223333.yaml",
        "differs in: messages[0].content, temperature",
        "--llm-cache=record",
    ]:
        assert part in message


def test_cache_miss_without_closest():
    message = str(cache_miss(model=None, closest_path=None, differences=None))
    assert "(model -)" in message
    assert "closest:   no stored request for this model and endpoint" in message
    assert "differs in" not in message


def test_cache_miss_caps_differences():
    message = str(cache_miss(differences=[f"f{i}" for i in range(13)]))
    assert "differs in: f0, f1, f2, f3, f4, f5, f6, f7, f8, f9 (+3 more)" in message
    assert "f10" not in message


def test_cassette_error_message():
    message = str(CassetteError(path="c/x.yaml", reason="bad key"))
    assert message.startswith("cassette c/x.yaml is unusable: bad key\n")
    assert "--llm-cache=record" in message
