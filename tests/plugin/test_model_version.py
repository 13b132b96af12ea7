"""Model versions: pins go into the key and the directory; the response's snapshot is stored."""

from __future__ import annotations

import yaml

from conftest import Project

TEST = """
from conftest import chat
def test_it(client, llm_cache):
    chat(client, "versioned")
"""


def test_cassette_stores_response_model_and_fingerprint(project: Project) -> None:
    project.pytester.makepyfile(test_v=TEST)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    [path] = project.files()
    assert path.parent.name == "gpt-4o"
    doc = yaml.safe_load(path.read_text())
    assert doc["model"] == "gpt-4o"
    assert doc["model_version"] == "gpt-4o"
    assert doc["response_model"] == "gpt-4o-2024-08-06"
    assert doc["system_fingerprint"] == "fp_aaa111"


def test_pinning_a_version_moves_cassettes_to_a_new_directory(project: Project) -> None:
    project.pytester.makepyfile(test_v=TEST)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    project.run().assert_outcomes(passed=1)

    project.pytester.makeini("[pytest]\nllm_cache_model_versions =\n    gpt-4o = 2024-11-20\n")
    # the old cassette no longer answers: the pin is part of the key
    project.run().assert_outcomes(failed=1)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    dirs = sorted(p.parent.name for p in project.files())
    assert dirs == ["gpt-4o", "gpt-4o@2024-11-20"]  # the old one kept, not deleted
    new = yaml.safe_load((project.cassettes / "gpt-4o@2024-11-20").joinpath(
        next((project.cassettes / "gpt-4o@2024-11-20").iterdir()).name).read_text())
    assert new["model_version"] == "gpt-4o@2024-11-20"
    project.run().assert_outcomes(passed=1)


def test_marker_model_version(project: Project) -> None:
    project.pytester.makepyfile(
        test_v="""
import pytest
from conftest import chat
@pytest.mark.llm_cache(model_version="snap-2")
def test_it(client):
    chat(client, "marked")
"""
    )
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    assert [p.parent.name for p in project.files()] == ["gpt-4o@snap-2"]


def test_requests_without_model_go_under_no_model(project: Project) -> None:
    project.pytester.makepyfile(
        test_v="""
def test_it(client, llm_cache):
    client.models.list()
"""
    )
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    assert [p.parent.name for p in project.files()] == ["_no_model"]
    project.run().assert_outcomes(passed=1)


def test_hostile_model_name_stays_inside_the_cassette_dir(project: Project) -> None:
    project.pytester.makepyfile(
        test_v="""
from conftest import chat
def test_it(client, llm_cache):
    chat(client, "x", model="../../escape/\\u00e9" + "a" * 300)
"""
    )
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    [path] = project.files()
    assert path.resolve().parent.parent == project.cassettes.resolve()
    assert not (project.pytester.path.parent / "escape").exists()
    project.run().assert_outcomes(passed=1)
