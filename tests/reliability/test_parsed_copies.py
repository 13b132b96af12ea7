"""Parsed copies cannot lie: a copy (``.llm-cache/parsed/``) is used only for the very bytes
of the YAML it was made from, checked by their SHA-256 in one read of the YAML; a copy that
is stale, forged the old way (size and mtime), or malformed (not JSON, nested 100,000 deep,
wrong fields) is ignored and written again; ``llm-cache verify`` checks the copies too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import Project

from llm_cache.cassette import Body, Entry
from llm_cache.key import make_key
from llm_cache.stores import files
from llm_cache.stores.files import FileStore

SCRIPT = shutil.which("llm-cache", path=os.path.dirname(sys.executable)) or "llm-cache"
DEEP = 100_000


def _entry(answer: str = "hello") -> Entry:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    rk = make_key("POST", "https://api.openai.com/v1/chat/completions", json.dumps(body).encode(), {})
    return Entry(key=rk.key, recorded_at=datetime.now(timezone.utc), model="gpt-4o", model_version="gpt-4o",
                 method="POST", path=rk.path, query=[], request_headers={}, request_body=Body("json", body),
                 status=200, response_headers={"content-type": "application/json"},
                 response_body=Body("json", {"choices": [{"message": {"content": answer}}]}))


def _stored(root: Path, answer: str = "hello") -> tuple[Entry, Path, Path]:
    """An entry put and closed: its cassette, and the parsed copy the store wrote."""
    store = FileStore(root, copies_from=0)
    entry = _entry(answer)
    path = Path(store.put(entry))
    store.close()
    copy = root / ".llm-cache" / "parsed" / "gpt-4o" / (path.stem + ".json")
    assert copy.is_file()
    return entry, path, copy


def _answer(entry: Entry | None) -> str:
    assert entry is not None
    return str(entry.response_body.value["choices"][0]["message"]["content"])


def _current(root: Path, path: Path) -> bool:
    """Whether the copy of ``path`` is one a read would use (made from its bytes, well formed)."""
    store = FileStore(root, copies_from=0)
    data = path.read_bytes()
    status, _ = store._copy_doc(store._parsed_copy(path), files._sha256(data), len(data))
    return status == "current"


def test_a_copy_made_from_these_bytes_is_used_without_parsing_the_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry, _, _ = _stored(tmp_path)

    def no_yaml(*args: object, **kwargs: object) -> Entry:
        raise AssertionError("the YAML was parsed although its copy is current")

    monkeypatch.setattr(files, "load_entry", no_yaml)
    assert FileStore(tmp_path, copies_from=0).get(entry.key, "gpt-4o") == entry


def test_an_edit_that_keeps_size_and_mtime_is_read_from_the_yaml(tmp_path: Path) -> None:
    entry, path, _ = _stored(tmp_path, answer="the old answer")
    stat = path.stat()
    path.write_text(path.read_text().replace("the old answer", "the new answer"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as tar, rsync -t or touch -r leave it
    assert path.stat().st_size == stat.st_size
    store = FileStore(tmp_path, copies_from=0)
    assert _answer(store.get(entry.key, "gpt-4o")) == "the new answer"
    store.close()  # and the copy follows the YAML again
    assert _current(tmp_path, path)


def test_a_copy_forged_the_old_way_or_for_other_bytes_is_ignored_and_rebuilt(tmp_path: Path) -> None:
    entry, path, copy = _stored(tmp_path, answer="what the YAML says")
    forged_doc = _entry("a forged answer").to_doc()
    stat = path.stat()
    for forged in (
        {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "doc": forged_doc},  # the old copy's stamp
        {"format": files.COPY_FORMAT, "sha256": "0" * 64, "doc": forged_doc},  # made from other bytes
    ):
        copy.write_text(json.dumps(forged))
        store = FileStore(tmp_path, copies_from=0)
        assert _answer(store.get(entry.key, "gpt-4o")) == "what the YAML says"
        store.close()
        assert _current(tmp_path, path)


NESTED = "[" * DEEP + "]" * DEEP


def _for(path: Path, doc: str) -> bytes:
    """A copy of ``doc`` that claims the bytes of the YAML at ``path``, its own check right."""
    return files.copy_body(files._sha256(path.read_bytes()), doc)


MALFORMED = {
    "nested 100,000 deep": lambda path, good: _for(path, NESTED),
    "nested 100,000 deep, no header": lambda path, good: NESTED.encode(),
    "not JSON": lambda path, good: _for(path, "{{{"),
    "cut short": lambda path, good: good[: len(good) // 2],
    "its check wrong": lambda path, good: good.replace(b'"check":"', b'"check":"0')[:-2] + b'"}',
    "mixed from two writers": lambda path, good: good.replace(b"hello", b"HELLO"),
    "empty": lambda path, good: b"",
    "a list": lambda path, good: b"[1, 2, 3]",
    "fields of the wrong type": lambda path, good: _for(path, '{"key": 5, "request": [], "response": "x"}'),
    "far larger than its YAML": lambda path, good: _for(path, '{"pad": "' + "x" * (4 << 20) + '"}'),
}


@pytest.mark.parametrize("damage", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_copy_is_ignored_and_rebuilt(tmp_path: Path, damage: str) -> None:
    entry, path, copy = _stored(tmp_path)
    copy.write_bytes(MALFORMED[damage](path, copy.read_bytes()))
    store = FileStore(tmp_path, copies_from=0)
    assert store.get(entry.key, "gpt-4o") == entry
    store.close()
    assert _current(tmp_path, path)


DEEP_COPY = """
from conftest import chat

def test_a(client, llm_cache):
    assert chat(client, "prompt a").choices[0].message.content == "echo: prompt a"
"""


@pytest.mark.parametrize("header", [True, False], ids=["after the copy's header", "whole file"])
def test_replay_passes_over_a_copy_nested_100000_deep(project: Project, header: bool) -> None:
    project.pytester.makeini("[pytest]\nllm_cache_parsed_copies = on\n")  # copies of small cassettes too
    project.pytester.makepyfile(test_a=DEEP_COPY)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    [path] = project.files()
    [copy] = (project.cassettes / ".llm-cache" / "parsed").rglob("*.json")
    copy.write_bytes(_for(path, NESTED) if header else NESTED.encode())
    result = project.run()
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*RecursionError*")
    assert _current(project.cassettes, path)


def test_replay_serves_what_the_yaml_says_after_an_edit_that_keeps_size_and_mtime(project: Project) -> None:
    project.pytester.makeini("[pytest]\nllm_cache_parsed_copies = on\n")  # copies of small cassettes too
    project.pytester.makepyfile(test_a=DEEP_COPY)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    project.run().assert_outcomes(passed=1)  # the parsed copy is there, and used
    [path] = project.files()
    stat = path.stat()
    path.write_text(path.read_text().replace("echo: prompt a", "ECHO: prompt a"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    project.pytester.makepyfile(test_a=DEEP_COPY.replace('"echo: prompt a"', '"ECHO: prompt a"'))
    project.run().assert_outcomes(passed=1)


def _verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, "verify", "--dir", str(root)], capture_output=True, text=True, timeout=60,
                          check=False)


def test_verify_checks_the_parsed_copies(tmp_path: Path) -> None:
    _, path, copy = _stored(tmp_path, answer="what the YAML says")
    ok = _verify(tmp_path)
    assert ok.returncode == 0 and ok.stdout.splitlines()[-1] == "1 cassette checked, all sound"

    # a copy that claims the YAML's bytes but holds another answer: replay would serve it
    doc = json.loads(copy.read_bytes())["doc"]
    doc["response"]["json"]["choices"][0]["message"]["content"] = "a forged answer"
    copy.write_bytes(_for(path, json.dumps(doc)))
    out = _verify(tmp_path)
    assert out.returncode == 1
    assert f"{path}: its parsed copy {copy} claims to be made from this file but holds another entry" in out.stdout
    assert out.stdout.splitlines()[-1] == "1 cassette checked, 1 with problems"

    # a damaged copy is only a note: replay ignores it and writes it again
    copy.write_bytes(NESTED.encode())
    out = _verify(tmp_path)
    assert out.returncode == 0, out.stdout
    assert f"{path}: note: its parsed copy {copy} is damaged; replay ignores it and writes it again" in out.stdout


def test_by_default_every_cassette_gets_a_copy_that_the_next_read_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small cassette's copy saves its YAML's parse (about 0.4 ms a read in a replayed
    suite), so by default every cassette gets one, and a store that writes none (CI) still
    reads one that is there (a CI that keeps .llm-cache/ in its cache)."""
    store = FileStore(tmp_path)
    small = _entry("small")
    path = Path(store.put(small))
    store.close()
    assert path.stat().st_size < 1024
    assert store._parsed_copy(path).is_file()

    def no_yaml(*args: object, **kwargs: object) -> Entry:
        raise AssertionError("the cassette's YAML was parsed although its copy is current")

    monkeypatch.setattr(files, "load_entry", no_yaml)
    assert _answer(FileStore(tmp_path).get(small.key, "gpt-4o")) == "small"
    assert _answer(FileStore(tmp_path, copies_from=None).get(small.key, "gpt-4o")) == "small"
    monkeypatch.undo()
    # a store that writes no copies (CI) writes none of a new cassette
    ci = FileStore(tmp_path / "ci", copies_from=None)
    path = Path(ci.put(_entry("y")))
    ci.close()
    assert not ci._parsed_copy(path).exists()


def test_a_threshold_leaves_smaller_cassettes_without_a_copy_and_their_copies_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``copies_from``: a cassette smaller gets no copy, and one an earlier run left is not
    even opened; a larger one's is written and used."""
    small, small_path, small_copy = _stored(tmp_path / "small", answer="small")  # copies_from=0
    small_copy.write_bytes(small_copy.read_bytes().replace(b'"small"', b'"SMALL"'))  # fails its check
    large = _entry("x" * (20 * 1024))
    store = FileStore(tmp_path / "large", copies_from=16 * 1024)
    large_path = Path(store.put(large))
    store.close()
    assert large_path.stat().st_size >= 16 * 1024 > small_path.stat().st_size
    assert store._parsed_copy(large_path).is_file()

    opened: list[str] = []
    real = files.ParsedCopies.entry

    def spy(self: files.ParsedCopies, copy: str, *args: object) -> Entry | None:
        opened.append(copy)
        return real(self, copy, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(files.ParsedCopies, "entry", spy)
    fresh = FileStore(tmp_path / "small", copies_from=16 * 1024)
    assert _answer(fresh.get(small.key, "gpt-4o")) == "small"
    fresh.close()
    assert opened == []  # the small cassette's copy was never looked at

    def no_yaml(*args: object, **kwargs: object) -> Entry:
        raise AssertionError("the large cassette's YAML was parsed although its copy is current")

    monkeypatch.setattr(files, "load_entry", no_yaml)
    assert FileStore(tmp_path / "large", copies_from=16 * 1024).get(large.key, "gpt-4o") == large
    assert len(opened) == 1


def test_a_cassette_rewritten_below_the_threshold_gets_no_copy_of_what_it_was(tmp_path: Path) -> None:
    """A refresh that shrinks a large cassette: the copy queued when its large version was read
    is not written at close (it would be stale at once)."""
    large = _entry("x" * (20 * 1024))
    store = FileStore(tmp_path, copies_from=16 * 1024)
    path = Path(store.put(large))
    store.close()
    copy = store._parsed_copy(path)
    copy.unlink()
    store = FileStore(tmp_path, copies_from=16 * 1024)
    assert store.get(large.key, "gpt-4o") == large  # read from the YAML: its copy is queued
    small = _entry("small now")
    assert small.key == large.key
    store.put(small)
    store.close()
    assert not copy.exists()
    assert _answer(FileStore(tmp_path).get(small.key, "gpt-4o")) == "small now"
