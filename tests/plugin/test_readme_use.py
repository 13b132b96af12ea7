"""The README's first example (section "Use"), run as written: recorded, then replayed."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from conftest import Project

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_first_example_passes_when_recording_replaying_and_refreshing(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    use = README.read_text().split("\n## Use\n", 1)[1].split("\n## ", 1)[0]
    [example] = re.findall(r"```python\n(.*?)```", use, re.DOTALL)
    project.pytester.makepyfile(test_first_example=example)
    monkeypatch.setenv("OPENAI_BASE_URL", project.server.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-readme-0000000000000000")
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    assert project.server.count() == 1
    monkeypatch.delenv("OPENAI_API_KEY")
    project.run().assert_outcomes(passed=1)
    assert project.server.count() == 1
    # and the refresh the README shows next, with the TTL passed
    monkeypatch.setenv("OPENAI_API_KEY", "sk-readme-0000000000000000")
    time.sleep(1.1)
    project.run("--llm-cache=refresh", "--llm-cache-ttl=1s").assert_outcomes(passed=1)
    assert project.server.count() == 2
