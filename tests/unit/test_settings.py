"""Setting parsers and their precedence."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from llm_cache.errors import ConfigError
from llm_cache.key import KeyRules
from llm_cache.marker import parse_marker
from llm_cache.modes import Mode
from llm_cache.settings import (
    format_duration,
    parse_bool,
    parse_duration,
    parse_lines,
    parse_mapping,
    parse_mode,
    resolve,
)

# -- durations ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        ("1.5h", timedelta(minutes=90)),
        (" 12H ", timedelta(hours=12)),
        ("never", None),
        ("Never", None),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text, "--llm-cache-ttl") == expected


@pytest.mark.parametrize("text", ["0s", "0d", "0.0h"])
def test_a_zero_duration_is_said_to_need_more_than_zero(text):
    with pytest.raises(ConfigError) as info:
        parse_duration(text, "--llm-cache-ttl")
    assert str(info.value) == ("--llm-cache-ttl must be a duration above 0 (90s, 30m, 12h, 30d or 2w), or 'never' "
                               f"for cassettes that never expire, got {text!r}")


@pytest.mark.parametrize("text", ["soon", "-3d", "10 years", "", "12", "3x"])
def test_parse_duration_rejects(text):
    with pytest.raises(ConfigError) as info:
        parse_duration(text, "--llm-cache-ttl")
    message = str(info.value)
    assert message.startswith("--llm-cache-ttl must be a duration like 90s, 30m, 12h, 30d or 2w, or 'never'")
    assert message.endswith(f"got {text!r}")
    assert info.value.setting == "--llm-cache-ttl" and info.value.value == text


@pytest.mark.parametrize(
    "value, text",
    [
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=90), "90m"),
        (timedelta(hours=12), "12h"),
        (timedelta(days=30), "30d"),
        (timedelta(weeks=2), "2w"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(seconds=999_999), "999999s"),
        (None, "never"),
    ],
)
def test_format_duration_round_trips(value, text):
    assert format_duration(value) == text
    assert parse_duration(format_duration(value), "x") == value


@pytest.mark.parametrize("seconds", [1_000_001, 864_000.5])
def test_format_duration_round_trips_large_odd_seconds(seconds):
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value), "x") == value


# -- modes, booleans, lists, mappings ---------------------------------------------


@pytest.mark.parametrize(
    "text, mode", [("replay", Mode.REPLAY), ("RECORD", Mode.RECORD), (" refresh ", Mode.REFRESH), ("off", Mode.OFF)]
)
def test_parse_mode(text, mode):
    assert parse_mode(text, "LLM_CACHE_MODE") is mode


def test_parse_mode_rejects():
    with pytest.raises(ConfigError, match=r"^LLM_CACHE_MODE must be one of replay\|record\|refresh\|off, got 'recrod'$"):
        parse_mode("recrod", "LLM_CACHE_MODE")


@pytest.mark.parametrize("text", ["1", "true", "Yes", "ON", True])
def test_parse_bool_true(text):
    assert parse_bool(text, "s") is True


@pytest.mark.parametrize("text", ["0", "false", "No", "off", "", False])
def test_parse_bool_false(text):
    assert parse_bool(text, "s") is False


def test_parse_bool_rejects():
    with pytest.raises(ConfigError, match="llm_cache_match_host must be true or false, got 'maybe'"):
        parse_bool("maybe", "llm_cache_match_host")


def test_parse_lines():
    assert parse_lines("metadata.run_id\n\n# comment\n  messages.*.name  \n", "s") == ("metadata.run_id", "messages.*.name")
    assert parse_lines(["a", " b.c "], "s") == ("a", "b.c")
    assert parse_lines(None, "s") == ()


@pytest.mark.parametrize("value", ["a b", "a..b", ".a", "a.", 5, [""], ["a", "  "], ["model"], "temperature\nmodel"])
def test_parse_lines_rejects(value):
    with pytest.raises(ConfigError, match="llm_cache_ignore_fields must be"):
        parse_lines(value, "llm_cache_ignore_fields")


def test_the_model_cannot_be_ignored_and_says_what_to_do_instead():
    with pytest.raises(ConfigError, match="fields other than model, which names the cassette directory"):
        parse_marker((), {"ignore_fields": ["temperature", "model"]})


def test_parse_mapping():
    text = "gpt-4o = 2024-08-06\n# comment\n\nclaude-3-5-sonnet=20241022\n"
    assert parse_mapping(text, "s") == {"gpt-4o": "2024-08-06", "claude-3-5-sonnet": "20241022"}
    assert parse_mapping(["a = 1"], "s") == {"a": "1"}
    assert parse_mapping({"a": 1}, "s") == {"a": "1"}
    assert parse_mapping(None, "s") == {}


@pytest.mark.parametrize("line", ["gpt-4o", "= 2024", "gpt-4o ="])
def test_parse_mapping_rejects(line):
    with pytest.raises(ConfigError, match="llm_cache_model_versions must be lines 'alias = version'"):
        parse_mapping(line, "llm_cache_model_versions")


# -- resolve --------------------------------------------------------------------------


ROOT = Path("/project")


@pytest.mark.parametrize(
    "cli, env, ini, mode, from_cli",
    [
        ({}, {}, {}, Mode.REPLAY, False),
        ({}, {}, {"mode": "record"}, Mode.RECORD, False),
        ({}, {"LLM_CACHE_MODE": "refresh"}, {"mode": "record"}, Mode.REFRESH, False),
        ({"mode": "off"}, {"LLM_CACHE_MODE": "refresh"}, {"mode": "record"}, Mode.OFF, True),
        ({"mode": None}, {"LLM_CACHE_MODE": ""}, {"mode": "record"}, Mode.RECORD, False),
    ],
)
def test_resolve_mode_precedence(cli, env, ini, mode, from_cli):
    settings = resolve(cli, ini, env, ROOT)
    assert settings.mode is mode
    assert settings.mode_from_cli is from_cli


@pytest.mark.parametrize(
    "cli, ini, ttl",
    [
        ({}, {}, timedelta(days=30)),
        ({}, {"ttl": "12h"}, timedelta(hours=12)),
        ({"ttl": "90s"}, {"ttl": "12h"}, timedelta(seconds=90)),
        ({"ttl": "never"}, {"ttl": "12h"}, None),
    ],
)
def test_resolve_ttl_precedence(cli, ini, ttl):
    assert resolve(cli, ini, {}, ROOT).ttl == ttl


@pytest.mark.parametrize(
    "cli, ini, expected",
    [
        ({}, {}, ROOT / "cassettes"),
        ({}, {"dir": "tests/tapes"}, ROOT / "tests/tapes"),
        ({"dir": "cli_tapes"}, {"dir": "tests/tapes"}, ROOT / "cli_tapes"),
        ({"dir": "/abs/tapes"}, {}, Path("/abs/tapes")),
    ],
)
def test_resolve_cassette_dir(cli, ini, expected):
    assert resolve(cli, ini, {}, ROOT).cassette_dir == expected


def test_resolve_reads_ini_rules_and_flags():
    ini = {
        "ignore_fields": ["metadata.run_id"],
        "match_host": "true",
        "model_versions": ["gpt-4o = 2024-08-06"],
        "record_errors": "yes",
        "autouse": "1",
        "report": "out/report.json",
    }
    settings = resolve({}, ini, {}, ROOT)
    assert settings.rules == KeyRules(
        ignore_fields=("metadata.run_id",), match_host=True, model_versions={"gpt-4o": "2024-08-06"}
    )
    assert settings.record_errors and settings.autouse
    assert settings.report_path == ROOT / "out/report.json"  # relative to the rootdir, like the cassette dir


@pytest.mark.parametrize(
    "cli, env, ini, setting",
    [
        ({"mode": "bogus"}, {}, {}, "--llm-cache "),
        ({}, {"LLM_CACHE_MODE": "bogus"}, {}, "LLM_CACHE_MODE "),
        ({}, {}, {"mode": "bogus"}, "llm_cache_mode "),
        ({"ttl": "soon"}, {}, {}, "--llm-cache-ttl "),
        ({}, {}, {"ttl": "soon"}, "llm_cache_ttl "),
        ({}, {}, {"match_host": "perhaps"}, "llm_cache_match_host "),
    ],
)
def test_resolve_errors_name_the_source(cli, env, ini, setting):
    with pytest.raises(ConfigError) as info:
        resolve(cli, ini, env, ROOT)
    assert str(info.value).startswith(setting)


# -- the marker ------------------------------------------------------------------------------


def test_parse_marker_reads_kwargs():
    options = parse_marker((), {"mode": "record", "ttl": "1h", "model_version": {"gpt-4o": "x"}, "ignore_fields": ["a.b"]})
    assert options.mode is Mode.RECORD
    assert options.ttl == timedelta(hours=1)
    assert options.model_version == {"gpt-4o": "x"}
    assert options.ignore_fields == ("a.b",)


def test_parse_marker_defaults():
    options = parse_marker((), {})
    assert options.mode is None and options.ttl is ... and options.model_version is None


def test_parse_marker_ttl_never_is_none():
    assert parse_marker((), {"ttl": "never"}).ttl is None


def test_parse_marker_rejects_positional_args():
    with pytest.raises(ConfigError, match=r"@pytest.mark.llm_cache must be keyword arguments only: mode, ttl"):
        parse_marker(("record",), {})


def test_parse_marker_rejects_unknown_kwargs():
    with pytest.raises(ConfigError, match=r"argument must be one of the arguments mode, ttl, model_version, .* \(did you mean mode\?\), got 'mdoe'"):
        parse_marker((), {"mdoe": "record"})


@pytest.mark.parametrize(
    "kwargs, where", [({"mode": "x"}, "(mode=...)"), ({"ttl": "x"}, "(ttl=...)"), ({"model_version": 3}, "(model_version=...)")]
)
def test_parse_marker_rejects_bad_values(kwargs, where):
    with pytest.raises(ConfigError, match="^" + re.escape("@pytest.mark.llm_cache" + where)):
        parse_marker((), kwargs)


@pytest.mark.parametrize(
    ("text", "size"),
    [("500KB", 500_000), ("50MB", 50_000_000), ("1GB", 10**9), ("1GiB", 2**30), ("2048", 2048), ("10 kb", 10_000), ("1.5MB", 1_500_000)],
)
def test_parse_size(text, size):
    from llm_cache.settings import parse_size

    assert parse_size(text, "--llm-cache-max-size") == size


@pytest.mark.parametrize("text", ["big", "-5MB", "0", "5 parsecs", "MB"])
def test_parse_size_rejects(text):
    from llm_cache.settings import parse_size

    with pytest.raises(ConfigError, match=r"--llm-cache-max-size must be a size like 500KB, 50MB or 1GB"):
        parse_size(text, "--llm-cache-max-size")


@pytest.mark.parametrize("text", ["0", "-1", "ten", "1.5"])
def test_parse_count_rejects(text):
    from llm_cache.settings import parse_count

    with pytest.raises(ConfigError, match="must be a whole number above 0"):
        parse_count(text, "llm_cache_max_entries")


def test_parse_eviction():
    from llm_cache.policy import Eviction
    from llm_cache.settings import parse_eviction

    assert parse_eviction("LFU", "x") is Eviction.LFU
    with pytest.raises(ConfigError, match=r"--llm-cache-eviction must be one of lru\|lfu\|fifo, got 'random'"):
        parse_eviction("random", "--llm-cache-eviction")


@pytest.mark.parametrize("environ, expected", [
    ({}, False), ({"CI": "true"}, True), ({"CI": "1"}, True), ({"CI": "yes"}, True), ({"CI": "false"}, False),
    ({"CI": "0"}, False), ({"CI": " "}, False), ({"BUILD_NUMBER": "12"}, True),
    ({"JENKINS_URL": "http://jenkins.internal/"}, True), ({"TF_BUILD": "True"}, True),
    ({"TEAMCITY_VERSION": "2025.1"}, True), ({"CODEBUILD_BUILD_ID": "b:1"}, True), ({"BUILD_NUMBER": ""}, False),
])
def test_in_ci(environ: dict[str, str], expected: bool) -> None:
    from llm_cache.settings import in_ci

    assert in_ci(environ) is expected


def test_parsed_copies_auto_follows_ci_and_on_off_do_not(tmp_path: Path) -> None:
    from llm_cache.settings import resolve

    def copies(ini: dict[str, object], environ: dict[str, str]) -> int | None:
        return resolve({}, ini, environ, tmp_path).parsed_copies

    assert copies({}, {}) == 0  # auto: a copy of every cassette read
    assert copies({}, {"CI": "true"}) is None
    assert copies({"parsed_copies": "on"}, {"CI": "true"}) == 0  # every cassette
    assert copies({"parsed_copies": "OFF"}, {}) is None
    assert copies({"warm": "all"}, {}) == 0
    assert copies({"warm": "all"}, {"CI": "true"}) is None
    assert copies({"warm": "all", "parsed_copies": "off"}, {}) is None
