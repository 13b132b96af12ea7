"""The file store: paths, atomic writes, safe directory names, housekeeping."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from llm_cache.cassette import Body, Entry, dump_entry
from llm_cache.errors import CassetteError
from llm_cache.stores.files import FileStore, safe_dirname


def make_entry(key: str = "ab" * 32, model_version: str = "gpt-4o", text: str = "hello") -> Entry:
    return Entry(
        key=key,
        recorded_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        model="gpt-4o",
        model_version=model_version,
        method="POST",
        path="/v1/chat/completions",
        query=[],
        request_headers={"content-type": "application/json"},
        request_body=Body("json", {"model": "gpt-4o"}),
        status=200,
        response_headers={"content-type": "text/plain"},
        response_body=Body("text", text),
    )


def test_put_then_get(tmp_path):
    store = FileStore(tmp_path / "c")
    entry = make_entry()
    location = store.put(entry)
    assert location == str(tmp_path / "c" / "gpt-4o" / ("ab" * 8 + ".yaml")) == store.location(entry.key, "gpt-4o")
    assert Path(location).read_text(encoding="utf-8") == dump_entry(entry)
    assert store.get(entry.key, "gpt-4o") == entry


def test_get_missing_is_none(tmp_path):
    assert FileStore(tmp_path).get("ab" * 32, "gpt-4o") is None


def test_get_with_same_prefix_other_key_is_refused(tmp_path):
    store = FileStore(tmp_path)
    store.put(make_entry())
    other = "ab" * 8 + "0" * 48
    with pytest.raises(CassetteError, match="not the key it was looked up by"):
        store.get(other, "gpt-4o")


def test_put_replaces(tmp_path):
    store = FileStore(tmp_path)
    store.put(make_entry(text="old"))
    store.put(make_entry(text="new"))
    assert store.get("ab" * 32, "gpt-4o").response_body.value == "new"


def test_put_makes_the_model_dir_again_when_it_went_since_the_last_write(tmp_path):
    store = FileStore(tmp_path / "c")
    first = Path(store.put(make_entry(text="old")))
    shutil.rmtree(first.parent)  # removed by hand while the store lives: its check is not trusted then
    second = Path(store.put(make_entry(key="cd" * 32, text="new")))
    assert second.parent == first.parent and second.is_file()
    assert store.get("cd" * 32, "gpt-4o").response_body.value == "new"


def test_put_never_writes_through_a_model_dir_made_a_symlink_after_a_write(tmp_path):
    store = FileStore(tmp_path / "c")
    first = Path(store.put(make_entry(text="old")))
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(first.parent)
    first.parent.symlink_to(outside, target_is_directory=True)
    with pytest.raises(CassetteError, match="symlink"):
        store.put(make_entry(key="cd" * 32, text="new"))
    assert list(outside.iterdir()) == []


def test_locations_in_the_current_directory_are_the_paths_put_gives(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for root in (".", "", "c/", "./c"):
        store = FileStore(Path(root))
        entry = make_entry()
        assert store.put(entry) == store.location(entry.key, "gpt-4o") == os.path.join(
            os.path.normpath(root), "gpt-4o", "ab" * 8 + ".yaml").removeprefix("." + os.sep)


def test_put_is_atomic(tmp_path, monkeypatch):
    store = FileStore(tmp_path)
    path = Path(store.put(make_entry(text="old")))
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.put(make_entry(text="new"))
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]


@pytest.mark.parametrize("label", ["gpt-4o", "gpt-4o@2024-08-06", "claude-3-5-sonnet-20241022", "_no_model", "a+b.c"])
def test_safe_dirname_keeps_safe_labels(label):
    assert safe_dirname(label) == label


UNSAFE = [
    "../x", "..", ".", ".hidden", "/etc", "/", "a/b", "a\\b", "a:b", "a b", "", "a\x00b", "\x00",
    "x" * 10_000, "x" * 10_001, "x" * 101, "modèle", "模型/../../x", "models/gemini-1.5-pro", "a\ud800b",
    # names Windows cannot make: devices with any extension, a trailing dot
    "nul", "COM1", "aux.json", "Lpt9", "gpt-4o.", "con.v2.",
]


@pytest.mark.parametrize("label", UNSAFE, ids=range(len(UNSAFE)))
def test_safe_dirname_is_one_safe_component(label):
    name = safe_dirname(label)
    assert name != label
    assert name and name not in (".", "..") and not name.startswith(".")
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert Path(name).name == name and len(name.encode()) <= 255
    assert safe_dirname(name) == name  # already safe
    stem = name.split(".", 1)[0].lower()
    assert stem not in {"con", "prn", "aux", "nul"} and not (stem[:3] in ("com", "lpt") and stem[3:].isdigit())
    assert not name.endswith((".", " "))


def test_unsafe_labels_never_share_a_directory():
    names = [safe_dirname(label) for label in UNSAFE]
    assert len(set(names)) == len(UNSAFE)


def test_unsafe_label_is_written_inside_root(tmp_path):
    root = tmp_path / "root"
    location = Path(FileStore(root).put(make_entry(model_version="../../escape")))
    assert location.parent.parent == root
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_symlinked_model_dir_is_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "gpt-4o").symlink_to(outside, target_is_directory=True)
    with pytest.raises(CassetteError, match="symlink") as info:
        FileStore(root).put(make_entry())
    assert info.value.path == str(root / "gpt-4o")
    assert list(outside.iterdir()) == []


def test_quarantine_moves_aside(tmp_path):
    store = FileStore(tmp_path)
    path = store.put(make_entry())
    moved = store.quarantine("ab" * 32, "gpt-4o")
    assert moved == path + ".corrupt"
    assert Path(moved).exists() and not Path(path).exists()
    assert store.get("ab" * 32, "gpt-4o") is None
    assert store.quarantine("ab" * 32, "gpt-4o") is None


def test_size_counts_entries_only(tmp_path):
    store = FileStore(tmp_path)
    a = Path(store.put(make_entry("aa" * 32)))
    b = Path(store.put(make_entry("bb" * 32, model_version="claude")))
    (a.parent / ".tmpxyz.tmp").write_text("partial")
    (a.parent / ".hidden.yaml").write_text("x")
    (b.parent / "cc.yaml.corrupt").write_text("junk")
    (tmp_path / "loose.yaml").write_text("not in a model dir")
    assert store.size() == (2, a.stat().st_size + b.stat().st_size)


def test_size_of_missing_root(tmp_path):
    assert FileStore(tmp_path / "nothing").size() == (0, 0)


def test_entries_skip_unusable_files(tmp_path):
    store = FileStore(tmp_path)
    good = make_entry("aa" * 32)
    store.put(good)
    store.put(make_entry("bb" * 32, model_version="claude"))
    (tmp_path / "gpt-4o" / "0000000000000000.yaml").write_text("key: [broken\n")
    (tmp_path / "gpt-4o" / "1111111111111111.yaml").write_text("- a list\n")
    assert list(store.entries("gpt-4o")) == [good]
    assert sorted(e.key for e in store.entries()) == ["aa" * 32, "bb" * 32]


def test_sweep_removes_old_temporary_files_only(tmp_path):
    import os
    import time

    from llm_cache.stores.files import FileStore

    store = FileStore(tmp_path)
    (tmp_path / "gpt-4o").mkdir()
    names = (".0123456789ab.tmp", ".ba9876543210.tmp", "0123456789abcdef.yaml")
    old, new, cassette = (tmp_path / "gpt-4o" / n for n in names)
    for path in (old, new, cassette):
        path.write_text("x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert store.sweep() == 1
    assert not old.exists() and new.exists() and cassette.exists()


def test_sweep_leaves_a_users_own_tmp_files(tmp_path):
    """Only the writer's own temporary names (.<12 hex>.tmp) are ever removed: a user's
    .review-notes.tmp beside the cassettes, or one in a folder under a --dir set too high,
    stays however old it is."""
    import os
    import time

    from llm_cache.stores.files import FileStore

    (tmp_path / "gpt-4o").mkdir()
    (tmp_path / "conf").mkdir()
    theirs = [tmp_path / "gpt-4o" / ".review-notes.tmp", tmp_path / "conf" / ".settings.tmp",
              tmp_path / "gpt-4o" / ".0123456789AB.tmp", tmp_path / "gpt-4o" / ".0123456789abc.tmp"]
    ours = tmp_path / "conf" / ".0123456789ab.tmp"
    for path in (*theirs, ours):
        path.write_text("keep")
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    FileStore(tmp_path).sweep()
    list(FileStore(tmp_path).scan())
    assert all(path.read_text() == "keep" for path in theirs)
    assert not ours.exists()


def test_scan_reuses_what_it_read_while_size_and_mtime_hold(tmp_path):
    import os

    from llm_cache.stores.files import FileStore

    store = FileStore(tmp_path / "c")
    entry = _scan_entry("one")
    store.put(entry)
    [first] = list(store.scan())
    assert first.key == entry.key
    path = store.path_for(entry.key, entry.model_version)
    stat = os.stat(path)
    text = path.read_text()
    # same size and mtime, different content: the scan index answers, the file is not opened
    path.write_text(text.replace(entry.key, "f" * 64))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert [m.key for m in store.scan()] == [entry.key]
    # a change of mtime is seen
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert [m.key for m in store.scan()] == ["f" * 64]


def _scan_entry(text):
    import json
    from datetime import datetime, timezone

    from llm_cache.cassette import Body, Entry
    from llm_cache.key import make_key

    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
    rk = make_key("POST", "https://x/v1/chat/completions", json.dumps(body).encode(), {})
    return Entry(key=rk.key, recorded_at=datetime.now(timezone.utc), model="gpt-4o", model_version="gpt-4o",
                 method="POST", path=rk.path, query=[], request_headers={}, request_body=Body("json", body),
                 status=200, response_headers={"content-type": "application/json"},
                 response_body=Body("json", {"choices": [{"message": {"content": "x" * 200}}]}))


def test_the_memory_tier_keeps_slim_entries_that_replay_the_same_bytes():
    from llm_cache.stores.tier import MemoryTier

    entry = _scan_entry("slim")
    tier = MemoryTier(4)
    tier.put(entry)
    kept = tier.get(entry.key)
    assert kept._slim and kept.response_body.value == "" and kept.request_body.value == ""
    assert kept.response_bytes() == entry.response_bytes()
    assert kept.header_items() == entry.header_items()
    assert kept.response_chunks() == entry.response_chunks()


def test_request_digests_name_each_cassette_and_its_fields(tmp_path):
    from llm_cache.diagnose import field_digests
    from llm_cache.key import canonical_body

    store = FileStore(tmp_path / "c")
    one, two = _scan_entry("one"), _scan_entry("two")
    locations = {store.put(one), store.put(two)}
    store.put(make_entry("cc" * 32, model_version="claude"))
    rows = list(store.request_digests("gpt-4o"))
    assert {row[0] for row in rows} == locations
    for location, method, path, digests in rows:
        entry = one if location == store.location(one.key, "gpt-4o") else two
        assert (method, path) == ("POST", "/v1/chat/completions")
        assert digests == field_digests(canonical_body(entry.request_body.to_bytes()))
    assert len(list(store.request_digests("gpt-4o", limit=1))) == 1
    assert list(store.request_digests("nothing-stored")) == []
    fresh = FileStore(tmp_path / "c")
    assert len(list(fresh.request_digests("gpt-4o"))) == 2
    assert fresh._pending == {}  # reading for digests keeps no entries for later


def _as_sets(digests):
    from llm_cache.diagnose import Digests, pair_set

    return Digests(digests.names, pair_set(digests.pairs))


def test_request_digests_are_reused_while_size_mtime_and_inode_hold(tmp_path):
    store = FileStore(tmp_path / "c")
    entry = _scan_entry("one")
    store.put(entry)
    [(_, _, _, before)] = store.request_digests("gpt-4o")
    index = tmp_path / "c" / ".llm-cache" / "digests" / "gpt-4o.json"
    assert index.exists()
    path = store.path_for(entry.key, "gpt-4o")
    stat = os.stat(path)
    # the same file, same size and mtime, another question: the index answers
    with open(path, "r+", encoding="utf-8") as handle:
        text = handle.read()
        handle.seek(0)
        handle.write(text.replace("content: one", "content: two"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    for fresh in (store, FileStore(tmp_path / "c")):  # an index read from disk holds the hashes joined
        assert [_as_sets(row[3]) for row in fresh.request_digests("gpt-4o")] == [before]
    # its mtime moves: read again, and the index on disk follows
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    [(_, _, _, after)] = store.request_digests("gpt-4o")
    assert after != before
    assert [_as_sets(row[3]) for row in FileStore(tmp_path / "c").request_digests("gpt-4o")] == [after]


def test_request_digests_keep_one_index_per_ignored_fields_and_few_in_memory(tmp_path):
    from llm_cache.stores import files

    store = FileStore(tmp_path / "c")
    store.put(_scan_entry("one"))
    rules = [(), ("temperature",), ("messages.*.content",), ("a",), ("b",)]
    digests = [next(store.request_digests("gpt-4o", ignore))[3] for ignore in rules]
    assert len(set(digests)) == 2  # only ignoring the content changes this body's fields
    assert len(list((tmp_path / "c" / ".llm-cache" / "digests").iterdir())) == len(rules)
    assert len(store._digests) == files.DIGESTS_KEPT < len(rules)
