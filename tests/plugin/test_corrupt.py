"""A corrupt cassette: replay fails naming the file and why; record and refresh move it aside and re-record."""

from __future__ import annotations

import pytest

from conftest import Project

pytestmark = pytest.mark.all_xdist_modes

TEST = """
from conftest import chat
def test_it(client, llm_cache, save):
    save("answer", chat(client, "fragile").choices[0].message.content)
"""

BREAKAGES = {
    "not_yaml": ("key: [unclosed\n", "not valid YAML"),
    "wrong_type": ("- just\n- a list\n", "expected a mapping at the top (key:, request:, response:), got a list"),
    "empty": ("", "it is empty: no YAML document in it"),
    "truncated": (None, "request and response must be mappings"),
    "python_tag": ("!!python/object/apply:os.system ['touch pwned']\n", "not valid YAML"),
}


def _break(project: Project, how: str) -> None:
    [path] = project.files()
    text, _ = BREAKAGES[how]
    if text is None:
        original = path.read_text()
        text = original[: original.index("request:")]
    path.write_text(text)


@pytest.mark.parametrize("how", sorted(BREAKAGES))
def test_replay_fails_with_cassette_error_naming_file_and_reason(project: Project, how: str) -> None:
    project.pytester.makepyfile(test_c=TEST)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    [path] = project.files()
    _break(project, how)
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"E*CassetteError: cassette {path} is unusable: {BREAKAGES[how][1]}*"])
    assert not (project.pytester.path / "pwned").exists()
    assert path.exists()  # replay never deletes or moves a cassette


@pytest.mark.parametrize("mode", ["record", "refresh"])
def test_record_and_refresh_move_it_aside_and_record_again(project: Project, mode: str) -> None:
    project.pytester.makepyfile(test_c=TEST)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    [path] = project.files()
    _break(project, "not_yaml")
    result = project.run(f"--llm-cache={mode}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*LLMCacheWarning: {path} is unusable (not valid YAML*moved to {path}.corrupt*"])
    assert path.with_name(path.name + ".corrupt").read_text() == "key: [unclosed\n"
    assert project.result("answer") == "echo: fragile"
    project.run().assert_outcomes(passed=1)  # the new cassette replays


def test_cassette_whose_key_does_not_match_is_refused(project: Project) -> None:
    project.pytester.makepyfile(test_c=TEST)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    [path] = project.files()
    text = path.read_text()
    key_line = next(line for line in text.splitlines() if line.startswith("key: "))
    path.write_text(text.replace(key_line, "key: " + "f" * 64))
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*is unusable: it holds key ffffffffffff..., not the key it was looked up by*"])
