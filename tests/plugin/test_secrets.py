"""Secrets never reach a cassette: a security property, checked by searching every file written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import Project

pytestmark = pytest.mark.all_xdist_modes

KEY = "sk-proj-SECRETSECRET1234567890abcdef"
ANTHROPIC_KEY = "sk-ant-api03-ALSOSECRET0987654321"
TOKEN = "tok_9f8e7d6c5b4a39281706"


def _everything_under(project: Project) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace") for p in project.cassettes.rglob("*") if p.is_file()
    )


def test_api_keys_in_env_headers_query_and_echoed_bodies_are_never_written(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("MY_SERVICE_TOKEN", TOKEN)
    project.pytester.makepyfile(
        test_s=f"""
import httpx, os
from conftest import chat
def test_echo(client, llm_cache):
    # the server echoes every request header, Authorization included, into its answer
    r = chat(client, "show headers", model="echo-headers")
    assert "{KEY}" in r.choices[0].message.content
def test_anthropic(anthropic_client, llm_cache):
    anthropic_client.messages.create(model="claude-x", max_tokens=50,
        messages=[{{"role": "user", "content": "hi {TOKEN}"}}])
def test_query_key(llm_cache):
    url = os.environ["FAKE_LLM_URL"] + "/v1/models?api_key={KEY}&token={TOKEN}&api-version=2024-10-21"
    httpx.get(url, headers={{"x-api-key": "{ANTHROPIC_KEY}", "Cookie": "session=abcdef123456789"}})
"""
    )
    project.run("--llm-cache=record").assert_outcomes(passed=3)
    assert len(project.files()) == 3
    written = _everything_under(project)
    for secret in (KEY, ANTHROPIC_KEY, TOKEN, "abcdef123456789"):
        assert secret not in written
    assert "<redacted>" in written  # the echoed key and the prompt's token were replaced
    for path in project.files():
        doc = yaml.safe_load(path.read_text())
        assert set(doc["request"].get("headers", {})) <= {"content-type", "anthropic-version"}
    assert "api-version" in written  # harmless query parameters stay
    # and the cassettes still replay
    project.run().assert_outcomes(passed=2, failed=1)  # test_echo asserts the live key
    # llm-cache verify, the CI step, passes on what the plugin wrote: a redacted request is a note
    script = Path(sys.executable).with_name("llm-cache")
    verify = subprocess.run([str(script), "verify", "--dir", str(project.cassettes)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "note: its request was redacted (a secret-looking value was replaced by <redacted>), so its key " \
        "cannot be checked against it" in verify.stdout
    assert verify.stdout.strip().endswith("3 cassettes checked, all sound")


def test_response_headers_only_from_the_allow_list(project: Project) -> None:
    project.pytester.makepyfile(test_h="from conftest import chat\ndef test_it(client, llm_cache):\n    chat(client, 'h')\n")
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    written = _everything_under(project).lower()
    assert "x-request-id" not in written
    assert "openai-processing-ms" not in written
    assert "content-type: application/json" in written


PASTED = "sk-proj-PASTEDINTOPROMPT1234567890"

PASTED_TEST = f"""
from conftest import chat
def test_it(client, llm_cache, save):
    # a key that is in no environment variable and no header: only its shape gives it away
    save("answer", chat(client, "my key is {PASTED}").choices[0].message.content)
"""


def test_a_secret_looking_value_is_refused_and_the_test_still_gets_its_answer(project: Project) -> None:
    project.pytester.makepyfile(test_pasted=PASTED_TEST)
    result = project.run("--llm-cache=record")
    result.assert_outcomes(passed=1, warnings=1)
    assert project.result("answer") == f"echo: my key is {PASTED}"
    assert project.files() == []
    result.stdout.fnmatch_lines(
        [
            "*NotStoredWarning: not storing */gpt-4o/*.yaml: it would contain what looks like a secret: "
            "openai or anthropic key (line *: sk-pro...90)*llm_cache_secret_allowlist*",
            "not stored: 1 (secret-looking 1)",
        ]
    )
    assert PASTED not in result.stdout.str()  # the warning masks it too
    # replay's miss says why recording did not help, and the note it reads holds no secret
    missed = project.run()
    missed.assert_outcomes(failed=1)
    missed.stdout.fnmatch_lines(["*recorded, not kept: it would contain what looks like a secret*",
                                 "*fix: add a regex to llm_cache_secret_allowlist if it is not one*"])
    assert PASTED not in _everything_under(project)  # (pytest shows the test's own source, which has it)


def test_the_allow_list_lets_a_known_false_positive_through(project: Project) -> None:
    project.pytester.makepyfile(test_pasted=PASTED_TEST)
    project.pytester.makeini("[pytest]\nllm_cache_secret_allowlist =\n    sk-proj-PASTED\n")
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    assert len(project.files()) == 1


def test_a_bad_allow_list_regex_is_a_usage_error(project: Project) -> None:
    project.pytester.makeini("[pytest]\nllm_cache_secret_allowlist =\n    sk-(unclosed\n")
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: llm_cache_secret_allowlist must be a regular expression (*), got 'sk-(unclosed'"])
