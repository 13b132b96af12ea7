"""Naming the closest stored request on a miss (llm_cache.diagnose.closest): the same answer
as the scan of parsed cassettes it replaces, from the file store's digests or from any store."""

from __future__ import annotations

import json
import os
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from llm_cache.cassette import Entry, encode_body
from llm_cache.diagnose import SAME_BODY, closest, field_digests
from llm_cache.errors import LLMCacheWarning
from llm_cache.key import KeyRules, RequestKey, canonical_body, flatten, make_key
from llm_cache.stores.files import DIGESTS_FORMAT, FileStore
from llm_cache.stores.memory import MemoryStore

URL = "https://api.example.test/v1/chat/completions"
PATH = "/v1/chat/completions"
_ABSENT = object()


def old_closest(store: Any, rk: RequestKey, rules: KeyRules) -> tuple[str | None, list[str]]:
    """The scan diagnose.closest replaces (CacheSession.closest before it), as it was."""
    best: tuple[str | None, list[str]] = (None, [])
    wanted = flatten(rk.body) if rk.body is not None else {}
    for entry in store.entries(rk.model_version, limit=2000):
        if entry.path != rk.path or entry.method != rk.method:
            continue
        stored_raw = entry.request_body.to_bytes() if entry.request_body.kind == "json" else b""
        stored = flatten(canonical_body(stored_raw, rules.ignore_fields)) if stored_raw else {}
        diffs = sorted(
            name
            for name in wanted.keys() | stored.keys()
            if wanted.get(name, _ABSENT) != stored.get(name, _ABSENT)
        )
        if not diffs:  # and now: the rules it was recorded under, when the store can say (a file store)
            then, now = sorted((entry.key_rules or {}).get("ignore_fields") or ()), sorted(rules.ignore_fields)
            changed = hasattr(store, "entry_at") and then != now
            diffs = [f"ignore_fields (recorded ignoring {', '.join(then) or 'nothing'}; this run ignores "
                     f"{', '.join(now) or 'nothing'}: re-record it)" if changed else "query or API-version headers"]
        if best[0] is None or len(diffs) < len(best[1]):
            best = (store.location(entry.key, entry.model_version), diffs)
    return best


def entry_for(body: Any, method: str = "POST", url: str = URL, raw: bytes | None = None) -> Entry:
    data = json.dumps(body).encode() if raw is None else raw
    rk = make_key(method, url, data, {}, KeyRules())
    return Entry(
        key=rk.key, recorded_at=datetime(2026, 1, 2, tzinfo=timezone.utc), model=rk.model,
        model_version=rk.model_version, method=method, path=rk.path, query=[],
        request_headers={"content-type": "application/json"},
        request_body=encode_body(data, "application/json"), status=200,
        response_headers={"content-type": "application/json"},
        response_body=encode_body(b'{"ok": true}', "application/json"),
    )


def request(body: Any, rules: KeyRules | None = None, method: str = "POST", url: str = URL) -> RequestKey:
    return make_key(method, url, json.dumps(body).encode(), {}, rules or KeyRules())


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "system", "content": "be brief"},
                                            {"role": "user", "content": text}], **extra}


def _random_body(rng: random.Random) -> Any:
    """Chat bodies that differ in a few places, with the awkward leaves: 1 / 1.0 / true,
    empty lists and objects, nulls, numbers as strings, nested tools."""
    body: dict[str, Any] = {"model": "gpt-4o", "messages": [
        {"role": "user", "content": rng.choice(["a", "b", "c", 1, "1", None, True, [], {}])}
        for _ in range(rng.randint(0, 3))
    ]}
    for name, values in (
        ("temperature", [0, 0.0, 0.5, 1, 1.0, True, "1", None]),
        ("max_tokens", [16, 32, 16.0]),
        ("seed", [1, 2, False, 0]),
        ("stop", [[], ["\n"], {}, "x"]),
        ("tools", [[{"type": "function", "function": {"name": "f", "parameters": {}}}],
                   [{"type": "function", "function": {"name": "g", "parameters": {"type": "object"}}}]]),
        ("user", ["u1", "u2"]),  # dropped from every key by default
    ):
        if rng.random() < 0.5:
            body[name] = rng.choice(values)
    return body


RULES = [
    KeyRules(),
    KeyRules(ignore_fields=("temperature",)),
    KeyRules(ignore_fields=("messages.*.content", "seed")),
    KeyRules(ignore_fields=("messages.0",)),  # drops an item: the later ones move up
]


@pytest.mark.parametrize("rules", RULES, ids=["default", "temperature", "contents", "first-message"])
@pytest.mark.parametrize("kind", ["file", "memory"])
def test_the_same_answer_as_the_old_scan(tmp_path: Path, rules: KeyRules, kind: str) -> None:
    rng = random.Random(20261201)
    store: Any = FileStore(tmp_path) if kind == "file" else MemoryStore()
    for _ in range(100):
        store.put(entry_for(_random_body(rng)))
    store.put(entry_for(chat("x"), method="PUT"))
    store.put(entry_for(chat("x"), url="https://api.example.test/v1/embeddings"))
    # a JSON body that is not an object or list, as a hand edit may leave it
    store.put(entry_for(None, raw=b'"just a string"'))
    store.close()  # parsed copies: the old scan reads faster
    for _ in range(2):  # a second time: the file store answers from its index
        for _ in range(40):
            rk = request(_random_body(rng), rules)
            _as_close(closest(store, rk, rules), old_closest(store, rk, rules), kind)
    if kind == "file":  # and from its index on disk, as a new session reads it
        for _ in range(20):
            rk = request(_random_body(rng), rules)
            _as_close(closest(FileStore(tmp_path), rk, rules), old_closest(store, rk, rules), kind)


def _as_close(new: tuple[str | None, list[str]], old: tuple[str | None, list[str]], kind: str) -> None:
    """The old scan's answer; of equally close cassettes the old scan named the first, the
    file store the one whose differing values are most alike: as many fields, then."""
    if kind == "memory" or new[0] == old[0]:
        assert new == old
    else:
        assert old[0] is not None and new[0] is not None and len(new[1]) == len(old[1]), (new, old)


def test_names_the_closest_and_its_fields(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    far = store.put(entry_for(chat("something else", temperature=1, seed=3)))
    near = store.put(entry_for(chat("first question", temperature=0)))
    found = closest(store, request(chat("second question", temperature=0.5)), KeyRules())
    assert found == (near, ["messages[1].content", "temperature"])
    assert far != near


def test_equal_bodies_differ_in_query_or_headers(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    location = store.put(entry_for(chat("q")))
    rk = request(chat("q"), url=URL + "?api-version=2")
    assert closest(store, rk, KeyRules()) == (location, [SAME_BODY])


def test_ignored_fields_are_not_differences(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    warmer = store.put(entry_for(chat("q", temperature=1)))
    store.put(entry_for(chat("q", temperature=0, seed=1, top_p=0.5)))
    body = chat("q", temperature=0)
    assert closest(store, request(body), KeyRules()) == (warmer, ["temperature"])
    rules = KeyRules(ignore_fields=("temperature",))
    # equal under this run's rules: what differs is the rules it was recorded under
    assert closest(store, request(body, rules), rules) == (
        warmer, ["ignore_fields (recorded ignoring nothing; this run ignores temperature: re-record it)"])


def test_another_endpoint_or_method_is_never_named(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put(entry_for(chat("q"), method="PUT"))
    store.put(entry_for(chat("q"), url="https://api.example.test/v1/responses"))
    far = store.put(entry_for(chat("another question entirely", n=2, seed=1)))
    assert closest(store, request(chat("q")), KeyRules()) == (far, ["messages[1].content", "n", "seed"])
    assert closest(store, request(chat("q"), method="PATCH"), KeyRules()) == (None, [])


def test_nothing_stored_names_nothing(tmp_path: Path) -> None:
    rk = request(chat("q"))
    assert closest(FileStore(tmp_path / "absent"), rk, KeyRules()) == (None, [])
    assert closest(MemoryStore(), rk, KeyRules()) == (None, [])
    store = FileStore(tmp_path / "other")
    store.put(entry_for({**chat("q"), "model": "claude"}))  # another model version only
    assert closest(store, rk, KeyRules()) == (None, [])


def _digest_index(root: Path) -> Path:
    [index] = (root / ".llm-cache" / "digests").iterdir()
    return index


def test_a_cassette_replaced_since_the_index_is_read_again(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    entry = entry_for(chat("q", temperature=0))
    location = store.put(entry)
    rk = request(chat("q", temperature=0.5))
    assert closest(store, rk, KeyRules()) == (location, ["temperature"])
    stat = os.stat(location)
    # the same key's cassette written again (a new file) with the same size and mtime
    edited = entry_for(chat("r", temperature=0))
    edited.key = entry.key
    store.put(edited)
    os.utime(location, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(location).st_size == stat.st_size
    for fresh in (store, FileStore(tmp_path)):  # from memory, and from the index on disk
        assert closest(fresh, rk, KeyRules()) == (location, ["messages[1].content", "temperature"])


def test_a_cassette_edited_in_place_is_read_again(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    location = store.put(entry_for(chat("q", temperature=0)))
    rk = request(chat("q", temperature=0.5))
    assert closest(store, rk, KeyRules()) == (location, ["temperature"])
    path = Path(location)
    inode, mtime = path.stat().st_ino, path.stat().st_mtime_ns
    with open(path, "r+", encoding="utf-8") as handle:  # same file, same size
        text = handle.read()
        handle.seek(0)
        handle.write(text.replace("content: q", "content: z"))
    os.utime(path, ns=(mtime + 10**6, mtime + 10**6))  # whatever the clock's granularity
    assert path.stat().st_ino == inode
    assert closest(store, rk, KeyRules()) == (location, ["messages[1].content", "temperature"])


def test_a_cassette_added_or_removed_since_the_index_is_seen(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    far = store.put(entry_for(chat("far", n=2)))
    rk = request(chat("q"))
    assert closest(store, rk, KeyRules())[0] == far
    near = store.put(entry_for(chat("q", n=3)))
    assert closest(FileStore(tmp_path), rk, KeyRules()) == (near, ["n"])
    os.unlink(near)
    assert closest(store, rk, KeyRules()) == (far, ["messages[1].content", "n"])


@pytest.mark.parametrize("damage", [
    b"", b"{not json", b"[]", b'{"format": 2}', b'{"format": 99, "ignore": [], "shapes": [], "files": {}}',
    b'{"format": 2, "ignore": [], "shapes": [], "files": []}',
    b'{"format": 2, "ignore": [], "shapes": {}, "files": {}}',
    b'{"format": 2, "ignore": [], "shapes": [[1]], "files": {}}',
    b'{"format": 2, "ignore": [], "shapes": [], "files": {"*": "x"}}',
])
def test_a_damaged_index_is_rebuilt(tmp_path: Path, damage: bytes) -> None:
    store = FileStore(tmp_path)
    location = store.put(entry_for(chat("q", temperature=0)))
    rk = request(chat("q", temperature=0.5))
    closest(store, rk, KeyRules())
    index = _digest_index(tmp_path)
    index.write_bytes(damage)
    assert closest(FileStore(tmp_path), rk, KeyRules()) == (location, ["temperature"])
    assert json.loads(index.read_bytes())["format"] == DIGESTS_FORMAT


def test_a_damaged_row_is_rebuilt(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    location = store.put(entry_for(chat("q", temperature=0)))
    rk = request(chat("q", temperature=0.5))
    closest(store, rk, KeyRules())
    index = _digest_index(tmp_path)
    data = json.loads(index.read_bytes())
    [(name, row)] = data["files"].items()
    for broken in ("not a list", [1, 2], [*row[:3], 4], [*row[:6], 0, ["pairs"]], [*row[:6], 1, row[7]],
                   [*row[:6], -1, row[7]], [*row[:6], "0", row[7]], [*row[:3], 1, *row[4:]]):
        data["files"][name] = broken
        index.write_text(json.dumps(data))
        assert closest(FileStore(tmp_path), rk, KeyRules()) == (location, ["temperature"])
    # pair hashes not as written (11 characters each, one space between): each such row is
    # read again from its cassette, and the index written again with it as it should be
    pairs = row[7]
    assert len(pairs.split()) >= 2
    for forged in (pairs.replace(" ", "  ", 1), " " + pairs, pairs + " ", pairs.replace(" ", "", 1),
                   pairs[:5] + " " + pairs[5:11] + pairs[12:], "x" * 23):
        data["files"][name] = [*row[:7], forged]
        index.write_text(json.dumps(data))
        assert closest(FileStore(tmp_path), rk, KeyRules()) == (location, ["temperature"])
        assert json.loads(index.read_bytes())["files"][name] == row
    data["files"][name] = row
    for shapes in (["temperature"], [[1]], {}):  # a name where a list of names goes, a number, a map
        index.write_text(json.dumps({**data, "shapes": shapes}))
        assert closest(FileStore(tmp_path), rk, KeyRules()) == (location, ["temperature"])


def test_an_index_that_cannot_be_written_only_costs_time(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    location = store.put(entry_for(chat("q", temperature=0)))
    (tmp_path / ".llm-cache").mkdir(exist_ok=True)
    (tmp_path / ".llm-cache" / "digests").write_text("a file where the directory goes")
    rk = request(chat("q", temperature=0.5))
    said = r"digest index not written: .*is a file, not a directory.*only slower"
    for reader in (store, FileStore(tmp_path)):
        with pytest.warns(LLMCacheWarning, match=said):
            found = closest(reader, rk, KeyRules())
        assert found == (location, ["temperature"])


def test_an_unreadable_cassette_is_skipped(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    location = store.put(entry_for(chat("q", temperature=0)))
    (tmp_path / "gpt-4o" / "0000000000000000.yaml").write_text("key: [broken\n")
    rk = request(chat("q", temperature=0.5))
    for _ in range(2):
        assert closest(store, rk, KeyRules()) == (location, ["temperature"])


def test_a_store_without_digests_is_read_within_its_bound() -> None:
    store = MemoryStore()
    first = store.put(entry_for(chat("far", n=1, seed=2)))
    store.put(entry_for(chat("q", n=2)))
    rk = request(chat("q"))
    assert closest(store, rk, KeyRules())[1] == ["n"]
    assert closest(store, rk, KeyRules(), limit=1) == (first, ["messages[1].content", "n", "seed"])
    assert closest(store, rk, KeyRules(), budget=0) == (first, ["messages[1].content", "n", "seed"])


def test_values_python_finds_equal_have_one_digest() -> None:
    assert field_digests({"a": 1}) == field_digests({"a": 1.0}) == field_digests({"a": True})
    assert field_digests({"a": 0}) == field_digests({"a": -0.0}) == field_digests({"a": False})
    assert field_digests({"a": 1}) != field_digests({"a": "1"})
    assert field_digests({"a": []}) != field_digests({"a": {}})
    assert field_digests({"a": None}) != field_digests({"a": "n"})
    assert field_digests({"a": float("nan")}) != field_digests({"a": float("nan")})
    assert field_digests(None) == (frozenset(), frozenset())


def test_equal_bodies_count_as_one_difference_and_the_first_of_equals_wins(tmp_path: Path) -> None:
    memory = MemoryStore()
    one_off = memory.put(entry_for(chat("q", temperature=1)))
    memory.put(entry_for(chat("q")))  # the same body: differs in query or headers, one thing
    rk = request(chat("q"), url=URL + "?api-version=2")
    assert closest(memory, rk, KeyRules()) == (one_off, ["temperature"])
    files = FileStore(tmp_path)
    for entry in [entry_for(chat("q", temperature=t)) for t in range(1, 10)] + [entry_for(chat("q"))]:
        files.put(entry)
    assert closest(files, rk, KeyRules()) == old_closest(files, rk, KeyRules())


def test_the_index_read_from_disk_is_searched_as_text_once_then_kept_as_sets(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    for n in range(5):
        store.put(entry_for(chat(f"q{n}", temperature=0)))
    rk = request(chat("q1", temperature=0.5))
    expected = closest(store, rk, KeyRules())  # writes the index
    again = FileStore(tmp_path)

    def kinds() -> set[type]:
        [rows] = again._digests._indexes.values()
        return {type(row[3][3].pairs) for row in rows.values() if row[3] is not None}

    assert closest(again, rk, KeyRules()) == expected
    assert kinds() == {str}  # the first miss: the hashes as the index holds them
    assert closest(again, rk, KeyRules()) == expected
    assert kinds() == {frozenset}  # later ones: sets, made once
