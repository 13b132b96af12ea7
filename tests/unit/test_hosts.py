"""Host patterns: parsing, matching, and the host of a URL."""

from __future__ import annotations

import pytest

from llm_cache.errors import ConfigError
from llm_cache.hosts import HostPattern, any_match, parse_host, parse_hosts, url_host


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("localhost", HostPattern("localhost")),
        ("API.OpenAI.com.", HostPattern("api.openai.com")),
        ("127.0.0.1:8080", HostPattern("127.0.0.1", 8080)),
        ("::1", HostPattern("::1")),
        ("[::1]", HostPattern("::1")),
        ("[::1]:8080", HostPattern("::1", 8080)),
        ("*.example.com", HostPattern("*.example.com")),
        ("fe80::*", HostPattern("fe80::*")),
    ],
)
def test_parse_host(text: str, pattern: HostPattern) -> None:
    assert parse_host(text, "llm_cache_hosts") == pattern


@pytest.mark.parametrize(
    "text", ["", "http://example.com", "example.com/x", "a b", "host:", "host:http", "host:70000", "[::1",
             "[::1]8080", "api.openai.com:443:1", "user@host", "*:*:*", "?::*"],
)
def test_parse_host_refuses_what_is_not_a_host(text: str) -> None:
    with pytest.raises(ConfigError, match="must be hosts or host:port, one a line"):
        parse_host(text, "llm_cache_hosts")


def test_parse_hosts_skips_blank_lines_and_comments() -> None:
    assert parse_hosts("a.com\n\n# a comment\nb.com:1\n", "s") == (HostPattern("a.com"), HostPattern("b.com", 1))
    assert parse_hosts(["a.com"], "s") == (HostPattern("a.com"),)
    assert parse_hosts(None, "s") == ()


@pytest.mark.parametrize(
    ("pattern", "host", "port", "matches"),
    [
        ("api.openai.com", "API.openai.com", 443, True),
        ("api.openai.com", "api.openai.com.", 443, True),
        ("api.openai.com", "openai.com", 443, False),
        ("*.example.com", "cdn.example.com", 443, True),
        ("*.example.com", "example.com", 443, False),
        ("example.com:8080", "example.com", 8080, True),
        ("example.com:8080", "example.com", 443, False),
        ("[::1]:80", "::1", 80, True),
        ("127.*.1", "127.0.0.1", 1, True),
        ("127.*.1", "127.0.0.2", 1, False),
    ],
)
def test_matches(pattern: str, host: str, port: int, matches: bool) -> None:
    assert parse_host(pattern, "s").matches(host, port) is matches


def test_any_match_looks_at_every_name_given() -> None:
    patterns = parse_hosts("localhost", "s")
    assert any_match(patterns, 80, "127.0.0.1", "localhost")
    assert not any_match(patterns, 80, "127.0.0.1", None)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://api.openai.com/v1/chat/completions", ("api.openai.com", 443)),
        ("http://127.0.0.1:8080/v1", ("127.0.0.1", 8080)),
        ("http://[::1]:8080/v1", ("::1", 8080)),
        ("http://example.com./x", ("example.com", 80)),
        ("function://local/module.fn", ("", None)),  # @cached functions are no network request
        ("http://bad:port/", ("", None)),
    ],
)
def test_url_host(url: str, host: tuple[str, int | None]) -> None:
    assert url_host(url) == host
