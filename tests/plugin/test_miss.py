"""A replay miss fails the test with CacheMiss, says what is missing, where, what is closest, and the fix."""

from __future__ import annotations

import pytest

from conftest import Project

pytestmark = pytest.mark.all_xdist_modes

ONE = """
from conftest import chat
def test_it(client, llm_cache):
    chat(client, "{text}")
"""

TWO_MESSAGES = """
def test_it(client, llm_cache):
    client.chat.completions.create(model="gpt-4o", temperature={temp}, messages=[
        {{"role": "system", "content": "be brief"}},
        {{"role": "user", "content": "{text}"}},
    ])
"""


def test_miss_message_names_key_path_closest_fields_and_fix(project: Project) -> None:
    project.pytester.makepyfile(test_m=TWO_MESSAGES.format(text="first question", temp=0))
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    [recorded] = project.files()

    project.pytester.makepyfile(test_m=TWO_MESSAGES.format(text="second question", temp=0.5))
    result = project.run()
    result.assert_outcomes(failed=1)
    assert project.server.count() == 1  # the miss never went upstream
    result.stdout.fnmatch_lines(
        [
            "E*CacheMiss: no cassette for POST /v1/chat/completions (model gpt-4o) in replay mode",
            "E*  host:      127.0.0.1:[0-9]*",
            "E*  key:       [0-9a-f]*",
            f"E*  looked in: {project.cassettes}/gpt-4o/*.yaml",
            f"E*  closest:   {recorded}",
            "E*  differs in: messages[[]1].content, temperature",
            "E*  fix: record it with --llm-cache=record (or LLM_CACHE_MODE=record)",
        ],
        consecutive=True,
    )
    result.stdout.fnmatch_lines(
        [
            "*- llm-cache -*",
            "mode: replay*",
            "hits: 0   misses: 1   recorded: 0*",
            "misses (1):",
            "  test_m.py::test_it  gpt-4o  /v1/chat/completions  [0-9a-f]*",
            "record them with --llm-cache=record",
        ],
        consecutive=True,
    )


def test_miss_with_nothing_stored_says_so(project: Project) -> None:
    project.pytester.makepyfile(test_m=ONE.format(text="never recorded"))
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E*  closest:   no stored request for this model and endpoint"])
    assert project.server.count() == 0


def test_miss_is_not_retried_by_the_sdk(project: Project) -> None:
    # The SDK retries connection errors; a CacheMiss must reach the test at once.
    project.pytester.makepyfile(
        test_retry="""
import openai, os, pytest
from llm_cache import CacheMiss
def test_it(llm_cache):
    client = openai.OpenAI(base_url=os.environ["FAKE_LLM_URL"] + "/v1", api_key="sk-x", max_retries=5)
    with pytest.raises(CacheMiss):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert llm_cache.stats.misses == 1
"""
    )
    project.run().assert_outcomes(passed=1)
    assert project.server.count() == 0
