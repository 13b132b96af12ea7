"""The usage index: merged under a lock, rebuilt when damaged, kept out of git."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_cache.usage import Usage, UsageIndex


def test_update_merges_hits_and_latest_use(tmp_path: Path) -> None:
    index = UsageIndex(tmp_path)
    index.update({"k1": Usage(100.0, 2), "k2": Usage(50.0, 0)})
    merged = index.update({"k1": Usage(90.0, 3)})
    assert merged["k1"] == Usage(100.0, 5)
    assert index.load() == {"k1": Usage(100.0, 5), "k2": Usage(50.0, 0)}


def test_keep_drops_keys_of_removed_entries(tmp_path: Path) -> None:
    index = UsageIndex(tmp_path)
    index.update({"k1": Usage(1.0, 1), "k2": Usage(2.0, 1)})
    index.update({}, keep={"k2"})
    assert set(index.load()) == {"k2"}


@pytest.mark.parametrize("damage", ["{not json", '{"format": 99, "keys": {}}', '{"format": 1, "keys": {"k": "x"}}', "[]"])
def test_damaged_index_loads_empty_and_is_rewritten(tmp_path: Path, damage: str) -> None:
    index = UsageIndex(tmp_path)
    index.update({"k": Usage(1.0, 1)})
    index.path.write_text(damage)
    assert index.load() == {}
    index.update({"k": Usage(2.0, 1)})
    assert json.loads(index.path.read_text())["keys"] == {"k": [2.0, 1]}


def test_meta_dir_ignores_itself_in_git(tmp_path: Path) -> None:
    UsageIndex(tmp_path).update({})
    assert (tmp_path / ".llm-cache" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert not list((tmp_path / ".llm-cache").glob("*.tmp"))
