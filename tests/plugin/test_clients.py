"""Interception with no change to the code under test: plain httpx, httpx2 and requests clients."""

from __future__ import annotations

import pytest

from conftest import Project

TEMPLATE = """
import json, os
BODY = {{"model": "gpt-4o", "messages": [{{"role": "user", "content": "from {name}"}}]}}
URL = os.environ["FAKE_LLM_URL"] + "/v1/chat/completions"
HEADERS = {{"Authorization": "Bearer sk-plain-client-key", "Accept-Encoding": "gzip"}}

def test_call(llm_cache, save):
{call}
    save("{name}", data)
    save("{name}_stats", [llm_cache.stats.hits, llm_cache.stats.recorded])
"""

CALLS = {
    "httpx": "    import httpx\n    data = httpx.post(URL, json=BODY, headers=HEADERS).json()",
    "httpx2": "    import httpx2\n    data = httpx2.post(URL, json=BODY, headers=HEADERS).json()",
    "httpx_async": (
        "    import asyncio, httpx\n"
        "    async def go():\n"
        "        async with httpx.AsyncClient() as c:\n"
        "            return (await c.post(URL, json=BODY, headers=HEADERS)).json()\n"
        "    data = asyncio.run(go())"
    ),
    "requests": "    import requests\n    data = requests.post(URL, json=BODY, headers=HEADERS).json()",
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_client_records_then_replays_offline(project: Project, name: str) -> None:
    project.pytester.makepyfile(**{f"test_{name}_client": TEMPLATE.format(name=name, call=CALLS[name])})
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    first = project.result(name)
    assert first["choices"][0]["message"]["content"] == f"echo: from {name}"
    assert project.result(f"{name}_stats") == [0, 1]
    assert project.server.count() == 1
    [path] = project.files()
    assert "content-encoding" not in path.read_text()  # stored decoded

    project.clear_results()
    project.run().assert_outcomes(passed=1)
    assert project.server.count() == 1
    assert project.result(name) == first
    assert project.result(f"{name}_stats") == [1, 0]


def test_a_stream_read_through_plain_httpx_replays_byte_for_byte(project: Project) -> None:
    project.pytester.makepyfile(
        test_raw_stream="""
import os, httpx
def test_it(llm_cache, save):
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "raw bytes"}]}
    with httpx.stream("POST", os.environ["FAKE_LLM_URL"] + "/v1/chat/completions", json=body) as r:
        save("raw", r.read().decode())
"""
    )
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    first = project.result("raw")
    assert first.endswith("data: [DONE]\n\n")
    project.clear_results()
    project.run().assert_outcomes(passed=1)
    assert project.result("raw") == first
