"""Cassettes written in format 1 replay as they are: hits, no misses, nothing reaches the server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Kept imported here: pytester's in-process runs drop the modules a run imported, and
# PyYAML imported again beside its C extension from before cannot load anything.
import yaml  # noqa: F401
from conftest import Project

pytestmark = pytest.mark.all_xdist_modes

FORMAT1 = Path(__file__).parent.parent / "data" / "format1"

# The requests the committed format-1 cassettes were recorded for.
REPLAYED = '''
from conftest import chat

def test_plain(client, save, llm_cache):
    save("plain", chat(client, "Where can I download my invoice?").choices[0].message.content)

def test_openai_stream(client, save, llm_cache):
    chunks = chat(client, "Where is my order?", stream=True)
    save("openai_stream", [c.choices[0].delta.content or "" for c in chunks if c.choices])

def test_anthropic_stream(anthropic_client, save, llm_cache):
    with anthropic_client.messages.stream(
        model="claude-3-5-sonnet-latest", max_tokens=200,
        messages=[{"role": "user", "content": "Can I change my address?"}],
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    save("anthropic_stream", pieces)
    save("anthropic_final", final.content[0].text)
'''


def test_format_1_cassettes_replay_without_reaching_the_server(project: Project) -> None:
    shutil.copytree(FORMAT1, project.cassettes)
    before = {path: path.read_bytes() for path in project.files()}
    assert len(before) == 3 and all(data.startswith(b"llm_cache: 1\n") for data in before.values())
    project.pytester.makepyfile(test_replayed=REPLAYED)

    result = project.run("--llm-cache=replay")

    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*hits: 3   misses: 0   recorded: 0*hit rate: 100%"])
    assert project.server.count() == 0, "replay reached the server"
    assert project.result("plain") == "echo: Where can I download my invoice?"
    assert project.result("openai_stream") == ["", "echo: ", "Where ", "is ", "my ", "order?", ""]
    assert project.result("anthropic_stream") == ["echo: ", "Can ", "I ", "change ", "my ", "address?"]
    assert project.result("anthropic_final") == "echo: Can I change my address?"
    # replaying reads a cassette; it never rewrites one
    assert {path: path.read_bytes() for path in project.files()} == before
