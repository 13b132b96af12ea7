"""The README's first example (section "Use"), run as written: recorded, then replayed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import Project

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_first_example_passes_when_recording_and_when_replaying(
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
