"""A replay miss fails the test with CacheMiss, says what is missing, where, what is closest, and the fix."""

from __future__ import annotations

import re
import sys

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


PROMPTS = """
from conftest import chat
{tests}
"""
OTHERS = ("Tell me a joke about cats", "What is the capital of France?", "Summarise this text", "Say hello",
          "Translate good morning", "Name three colours", "Count to five")


def test_of_equally_close_cassettes_the_one_most_alike_is_named(project: Project) -> None:
    # an edited prompt differs from its old cassette in one field, and so does every other
    # test's: the old prompt is named, not whichever cassette comes first in the store
    tests = "".join(f"def test_{n}(client, llm_cache):\n    chat(client, {text!r})\n"
                    for n, text in enumerate(("Where is my order?", *OTHERS)))
    project.pytester.makepyfile(test_p=PROMPTS.format(tests=tests))
    project.run("--llm-cache=record").assert_outcomes(passed=8)
    [old] = [p for p in project.files() if "Where is my order?" in p.read_text()]
    assert sorted(project.files())[0] != old  # store order alone would name another test's
    project.pytester.makepyfile(test_p=PROMPTS.format(tests=tests.replace("my order", "my parcel")))
    result = project.run("-k", "test_0")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"E*  closest:   {old}", "E*  differs in: messages[[]0].content"])


def test_a_miss_after_ignore_fields_changed_names_the_rules(project: Project) -> None:
    project.pytester.makepyfile(test_m=TWO_MESSAGES.format(text="first question", temp=0))
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    [recorded] = project.files()
    # the same call, now with a marker that drops temperature from the key
    marked = "import pytest\npytestmark = pytest.mark.llm_cache(ignore_fields=['temperature'])\n"
    project.pytester.makepyfile(test_m=marked + TWO_MESSAGES.format(text="first question", temp=0))
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"E*  closest:   {recorded}",
        "E*  differs in: ignore_fields (recorded ignoring nothing; this run ignores temperature: re-record it)",
    ])


def test_miss_with_nothing_stored_says_so(project: Project) -> None:
    """An empty store is named whole, and the likely cause said: a run from a directory
    whose rootdir is not the one the cassettes were recorded under."""
    project.pytester.makepyfile(test_m=ONE.format(text="never recorded"))
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"E*  closest:   none: {project.cassettes} holds no cassette at all",
        "E*  check:     is it the directory the cassettes were recorded into? The plugin's is under pytest's "
        "rootdir, which, with no pytest config file (*), is the directory pytest was started in",
    ])
    result.stdout.fnmatch_lines([f"no cassette at all in {project.cassettes}: is it the directory*"])
    assert project.server.count() == 0


def test_miss_with_nothing_stored_for_this_model_says_so(project: Project) -> None:
    project.pytester.makepyfile(test_m=ONE.format(text="recorded for another model").replace(
        'chat(client, "recorded for another model")', 'chat(client, "recorded for another model", model="gpt-4o-mini")'))
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    project.pytester.makepyfile(test_m=ONE.format(text="never recorded"))
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E*  closest:   no stored request for this model and endpoint"])
    result.stdout.no_fnmatch_line("*holds no cassette at all*")
    result.stdout.no_fnmatch_line("no cassette at all in*")
    assert project.server.count() == 1  # the recording's call only


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


def test_anthropic_gets_a_miss_as_its_own_error_so_it_neither_retries_nor_wraps_it(project: Project) -> None:
    # anthropic 2.x takes any other exception of its transport for a connection error: it
    # sleeps and retries it (max_retries, 2 by default), then raises "Connection error."
    project.pytester.makepyfile(
        test_anthropic_miss="""
import asyncio, os, time
import anthropic, anyio, pytest
from llm_cache import CacheMiss

def no_sleep(*args):
    raise AssertionError("the SDK slept to retry the miss")

ASK = dict(model="claude-3-5-sonnet-20241022", max_tokens=10, messages=[{"role": "user", "content": "hi"}])

def test_sync(llm_cache, monkeypatch):
    monkeypatch.setattr(time, "sleep", no_sleep)
    client = anthropic.Anthropic(base_url=os.environ["FAKE_LLM_URL"], api_key="sk-ant-x")  # max_retries 2
    with pytest.raises(CacheMiss) as caught:
        client.messages.create(**ASK)
    assert isinstance(caught.value, anthropic.AnthropicError)
    assert caught.value.__cause__ is None and caught.value.model == "claude-3-5-sonnet-20241022"
    assert llm_cache.stats.misses == 1

def test_async(llm_cache, monkeypatch):
    monkeypatch.setattr(anyio, "sleep", no_sleep)
    async def go():
        client = anthropic.AsyncAnthropic(base_url=os.environ["FAKE_LLM_URL"], api_key="sk-ant-x")
        await client.messages.create(**ASK)
    with pytest.raises(CacheMiss) as caught:
        asyncio.run(go())
    assert isinstance(caught.value, anthropic.AnthropicError)

def test_aiohttp(llm_cache, monkeypatch):  # its aiohttp transport: vcrpy's aiohttp stub answers
    monkeypatch.setattr(anyio, "sleep", no_sleep)
    async def go():
        client = anthropic.AsyncAnthropic(base_url=os.environ["FAKE_LLM_URL"], api_key="sk-ant-x",
                                          http_client=anthropic.DefaultAioHttpClient())
        async with client:
            await client.messages.create(**ASK)
    with pytest.raises(CacheMiss) as caught:
        asyncio.run(go())
    assert isinstance(caught.value, anthropic.AnthropicError)

def test_unmissed_by_openai(llm_cache):
    import openai
    client = openai.OpenAI(base_url=os.environ["FAKE_LLM_URL"] + "/v1", api_key="sk-x", max_retries=0)
    with pytest.raises(CacheMiss) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert not isinstance(caught.value, anthropic.AnthropicError)  # only the SDK that needs it
"""
    )
    project.run().assert_outcomes(passed=4)
    assert project.server.count() == 0


def test_anthropic_gets_a_recording_that_cannot_be_written_as_its_own_error(project: Project) -> None:
    # the answer is read, and the recording written, inside the SDK's call: a StoreError
    # from there was wrapped and retried, sending the request to the API three times
    project.pytester.makepyfile(
        test_full="""
import errno, os, time
import anthropic, pytest
import llm_cache.stores.files as files
from llm_cache.errors import StoreError

def test_full_disk(llm_cache, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files, "write_atomic", full)  # a full disk, for this test's writes only
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail("the SDK slept to retry"))
    client = anthropic.Anthropic(base_url=os.environ["FAKE_LLM_URL"], api_key="sk-ant-x")
    with pytest.raises(StoreError, match="the disk is full") as caught:
        client.messages.create(model="claude-3-5-sonnet-20241022", max_tokens=10,
                               messages=[{"role": "user", "content": "nowhere to keep it"}])
    assert isinstance(caught.value, anthropic.AnthropicError)
"""
    )
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    assert project.server.count() == 1  # asked once, not retried
    assert project.files() == []


def _section(output: str, test: str) -> str:
    """The failure report of one test: from its ``____ test ____`` header to the next header."""
    return re.split(r"\n_{3,} \S+ _{3,}\n", output.split(f" {test} _")[1])[0]


SDK_FAILURE = """
import json, os
from conftest import chat
def test_missed(client, llm_cache):
    chat(client, "never recorded")

def test_other_failure(llm_cache):
    json.loads("{")
"""


def test_a_miss_is_shown_down_to_the_projects_own_line_not_through_the_sdk(project: Project) -> None:
    # pytest parses the whole source file of each frame it prints: the SDK's fifteen frames
    # made a failed miss cost about 0.35 s
    project.pytester.makepyfile(test_m=SDK_FAILURE)
    result = project.run("-rf")
    result.assert_outcomes(failed=2)
    missed = _section(result.stdout.str(), "test_missed")
    assert "CacheMiss: no cassette for POST /v1/chat/completions" in missed
    assert "conftest.py:" in missed  # chat(), the project's own helper, is the last frame shown
    assert "llm_cache = <llm_cache replay test_m.py::test_missed: 0 hits, 1 misses, 0 recorded, 0 refreshed>" in missed
    for frame in ("_base_client.py", "httpx", "llm_cache/"):
        assert frame not in missed
    # any other failure is shown as pytest shows it: here, through the json module
    assert "json/decoder.py" in result.stdout.str()


def test_fulltrace_shows_a_miss_through_every_frame(project: Project) -> None:
    project.pytester.makepyfile(test_m=SDK_FAILURE)
    result = project.run("--fulltrace", "test_m.py::test_missed")
    result.assert_outcomes(failed=1)
    assert "_base_client.py" in result.stdout.str()


def test_a_miss_in_a_task_group_is_shown_down_to_the_projects_own_line(project: Project) -> None:
    project.pytester.makepyfile(
        test_group="""
import asyncio
from conftest import chat

async def ask(aclient):
    await aclient.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "in a group"}])

def test_grouped(aclient, llm_cache):
    async def go():
        async with asyncio.TaskGroup() as group:
            group.create_task(ask(aclient))
    asyncio.run(go())
"""
    )
    if sys.version_info < (3, 11):
        pytest.skip("asyncio.TaskGroup is Python 3.11+")
    result = project.run()
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "CacheMiss: no cassette for POST /v1/chat/completions" in out
    assert "in ask" in out  # the task's own coroutine, the last frame of the project's
    assert "_base_client.py" not in out and "httpx" not in out


def test_a_helper_of_the_project_installed_in_site_packages_is_still_shown(project: Project) -> None:
    # tox and `pip install .` run the project's package from site-packages, not from src/
    source = "def ask(client):\n    return client.chat.completions.create(model='gpt-4o', messages=[{'role': 'user', 'content': 'helped'}])\n"
    for where in ("src/mypkg", "env/lib/site-packages/mypkg"):
        package = project.pytester.path / where
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(source)
    project.pytester.makepyfile(
        test_helper="""
import sys
sys.path.insert(0, "env/lib/site-packages")
import mypkg

def test_helped(client, llm_cache):
    assert "site-packages" in mypkg.__file__
    mypkg.ask(client)
"""
    )
    result = project.run()
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "site-packages/mypkg/__init__.py:2: CacheMiss" in out.replace("\\", "/")  # the crash line is the helper's
    assert "_base_client.py" not in out
