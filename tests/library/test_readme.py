"""The README's library examples, run as written against the local server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fakeapi import FakeLLMServer

README = Path(__file__).resolve().parents[2] / "README.md"


def _library_blocks() -> list[str]:
    text = README.read_text()
    blocks = []
    for title in ("## Library API", "## In production"):
        section = text[text.index(title) :]
        section = section[: section.index("\n## ", 1)]
        blocks += re.findall(r"```python\n(.*?)```", section, re.S)
    return blocks


BLOCKS = _library_blocks()


def test_the_readme_has_library_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(
    index: int, server: FakeLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-readme-example-key-0000")
    before = server.count()
    exec(compile(BLOCKS[index], f"README.md library example {index + 1}", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    calls = server.count() - before
    expected = {0: ("1 1", 1), 1: ("{'echo: Hi'} 1", 1), 2: ("", 1), 3: ("2 0 0", 2), 4: ("", 1),
                5: ("1 1", 1), 6: ("", 1), 7: ("miss hit miss refresh\n1", 3)}
    printed, upstream = expected[index]
    assert out.strip() == printed
    assert calls == upstream
