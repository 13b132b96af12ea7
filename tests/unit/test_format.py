"""Cassette format 2: per-event timing, format 1 still read, bodies as the chunks replay sends."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from test_cassette import CRLF_STREAM, LF_STREAM, make_entry

from llm_cache import cassette
from llm_cache.cassette import (
    FORMAT_VERSION,
    READABLE_FORMATS,
    Body,
    dump_entry,
    encode_body,
    load_entry,
)
from llm_cache.errors import CassetteError
from llm_cache.stores.files import FileStore
from llm_cache.verify import recompute_key

FORMAT1 = Path(__file__).parent.parent / "data" / "format1"
FILES = sorted(FORMAT1.rglob("*.yaml"))
STREAM = encode_body(LF_STREAM, "text/event-stream")  # three events


def test_this_release_writes_2_and_reads_1_and_2() -> None:
    assert FORMAT_VERSION == 2
    assert READABLE_FORMATS == (1, 2)


# -- format 1 ------------------------------------------------------------------------------


def test_the_committed_format_1_cassettes_are_format_1() -> None:
    assert len(FILES) == 3
    kinds = set()
    for path in FILES:
        assert path.read_text().startswith("llm_cache: 1\n"), path
        kinds.add(load_entry(path.read_bytes(), str(path)).response_body.kind)
    assert kinds == {"json", "events"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_format_1_loads_with_the_true_key_of_its_request(path: Path) -> None:
    entry = load_entry(path.read_bytes(), str(path), expected_key=yaml.safe_load(path.read_text())["key"])
    assert recompute_key(entry) == entry.key
    assert path.name == entry.key[:16] + ".yaml"
    assert entry.offsets_ms is None


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_format_1_dumps_as_format_2_and_reads_back_equal(path: Path) -> None:
    entry = load_entry(path.read_bytes(), str(path))
    text = dump_entry(entry)
    assert text.startswith("llm_cache: 2\nkey: " + entry.key + "\n")
    assert "offsets_ms" not in text
    assert load_entry(text, "c.yaml", expected_key=entry.key) == entry


def test_the_file_store_reads_format_1_and_its_parsed_copy(tmp_path: Path) -> None:
    shutil.copytree(FORMAT1, tmp_path / "c")
    store = FileStore(tmp_path / "c", copies_from=0)  # copies of these small cassettes too
    metas = sorted(store.scan(), key=lambda m: m.location)
    assert sorted(Path(m.location).name for m in metas) == sorted(p.name for p in FILES)
    first = {m.key: store.get(m.key, m.model_version) for m in metas}
    store.close()  # writes the parsed copies (in the current format)
    assert len(list((tmp_path / "c" / ".llm-cache" / "parsed").rglob("*.json"))) == 3
    again = FileStore(tmp_path / "c", copies_from=0)
    assert {m.key: again.get(m.key, m.model_version) for m in metas} == first


def test_scan_reads_key_and_time_from_a_format_2_head(tmp_path: Path) -> None:
    entry = make_entry(STREAM, offsets_ms=[0.0, 1.0, 2.0])
    store = FileStore(tmp_path)
    path = Path(store.put(entry))
    # only the head is read: a body broken after it still lists with its key and time
    path.write_text(dump_entry(entry).split("model:")[0] + "model: [broken\n")
    (meta,) = store.scan()
    assert meta.key == entry.key
    assert meta.recorded_at == entry.recorded_at


# -- versions -------------------------------------------------------------------------------


def _with_version(value: object) -> str:
    doc = make_entry(Body("json", {"ok": True})).to_doc()
    if value is None:
        del doc["llm_cache"]
    else:
        doc["llm_cache"] = value
    return yaml.safe_dump(doc, sort_keys=False)


def test_a_newer_version_names_the_file_the_versions_read_and_the_fix() -> None:
    with pytest.raises(CassetteError) as info:
        load_entry(_with_version(3), "cassettes/gpt-4o/abc.yaml")
    reason = info.value.reason
    assert "unknown format version 3" in reason
    assert "this release reads formats 1 and 2" in reason
    assert "upgrade pytest-llm-cache" in reason
    assert info.value.path == "cassettes/gpt-4o/abc.yaml" and "cassettes/gpt-4o/abc.yaml" in str(info.value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, "unknown format version 0 (this release reads formats 1 and 2)"),
        ("2", "unknown format version '2' (this release reads formats 1 and 2)"),
        (True, "unknown format version True"),
        (1.0, "unknown format version 1.0"),
        (None, "it has no llm_cache format version, so it is not a cassette"),
    ],
)
def test_other_versions_are_refused(value: object, reason: str) -> None:
    with pytest.raises(CassetteError) as info:
        load_entry(_with_version(value), "c.yaml")
    assert reason in info.value.reason
    assert "upgrade pytest-llm-cache" not in info.value.reason


@pytest.mark.parametrize("version", [1, 2])
def test_both_versions_load(version: int) -> None:
    assert load_entry(_with_version(version), "c.yaml").response_body.value == {"ok": True}


# -- offsets_ms -------------------------------------------------------------------------------


def test_offsets_are_one_flow_line_after_the_body() -> None:
    entry = make_entry(STREAM, offsets_ms=[0.0, 12.5, 30.1])
    text = dump_entry(entry)
    assert text.startswith("llm_cache: 2\n")
    assert text.endswith("  - 'data: [DONE]'\n  offsets_ms: [0.0, 12.5, 30.1]\n")
    assert list(yaml.safe_load(text)["response"]) == ["status", "headers", "events", "offsets_ms"]


def test_offsets_follow_the_newline_of_a_crlf_stream() -> None:
    entry = make_entry(encode_body(CRLF_STREAM, "text/event-stream"), offsets_ms=[1.0, 2.0, 3.0])
    assert list(yaml.safe_load(dump_entry(entry))["response"])[-2:] == ["newline", "offsets_ms"]


def test_offsets_round_trip_rounded_to_a_tenth() -> None:
    entry = make_entry(STREAM, offsets_ms=[0.04, 12.345, 30])
    text = dump_entry(entry)
    assert "  offsets_ms: [0.0, 12.3, 30.0]\n" in text
    back = load_entry(text, "c.yaml")
    assert back.offsets_ms == [0.0, 12.3, 30.0]
    exact = make_entry(STREAM, offsets_ms=[0.0, 12.3, 30.0])
    assert load_entry(dump_entry(exact), "c.yaml") == exact


def test_no_offsets_no_line() -> None:
    assert "offsets_ms" not in dump_entry(make_entry(STREAM))
    assert load_entry(dump_entry(make_entry(STREAM)), "c.yaml").offsets_ms is None


def _python_dumper() -> type:
    class PythonDumper(yaml.SafeDumper):
        pass

    PythonDumper.yaml_representers = dict(cassette._yaml()[2].yaml_representers)
    return PythonDumper


@pytest.mark.parametrize("dumper", ["C", "Python"])
def test_a_long_offsets_line_never_wraps(dumper: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if dumper == "C":
        if not getattr(yaml, "__with_libyaml__", False):
            pytest.skip("PyYAML built without libyaml")
        assert issubclass(cassette._yaml()[2], yaml.CSafeDumper)
    else:
        loaded, python_dumper = cassette._yaml(), _python_dumper()
        monkeypatch.setattr(cassette, "_yaml", lambda: (loaded[0], loaded[1], python_dumper))
    events = [f"data: {i}" for i in range(2000)]
    entry = make_entry(Body("events", events), offsets_ms=[i * 1234.56 for i in range(2000)])
    text = dump_entry(entry)
    (line,) = [line for line in text.splitlines() if "offsets_ms" in line]
    assert len(line) > 4096 and line.endswith("]")
    assert re.fullmatch(r"  offsets_ms: \[[0-9., ]+\]", line)
    assert load_entry(text, "c.yaml").offsets_ms == [round(i * 1234.56, 1) for i in range(2000)]


def _with_offsets(value: object, body: Body = STREAM) -> str:
    doc = make_entry(body).to_doc()
    doc["response"]["offsets_ms"] = value
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("fast", "response.offsets_ms must be a list of numbers, got str"),
        ([0.0, 1.0], "response.offsets_ms has 2 numbers for 3 events: it needs one per event (after a hand edit "
                     "of the events, delete the offsets_ms line: the events then replay at once)"),
        ([0.0, 1.0, 2.0, 3.0], "response.offsets_ms has 4 numbers for 3 events"),
        ([0.0, "1", 2.0], "response.offsets_ms[1] must be a number, got '1'"),
        ([0.0, True, 2.0], "response.offsets_ms[1] must be a number, got True"),
        ([-1.0, 1.0, 2.0], "response.offsets_ms[0] must be a non-negative number of milliseconds, got -1.0"),
        ([0.0, float("nan"), 2.0], "response.offsets_ms[1] must be a non-negative number of milliseconds, got nan"),
        ([0.0, float("inf"), 2.0], "response.offsets_ms[1] must be a non-negative number of milliseconds, got inf"),
        ([0.0, 5.0, 4.9], "response.offsets_ms must not decrease: [2] is 4.9, after 5.0"),
    ],
)
def test_bad_offsets_are_refused_with_the_reason(value: object, reason: str) -> None:
    with pytest.raises(CassetteError) as info:
        load_entry(_with_offsets(value), "cassettes/gpt-4o/abc.yaml")
    assert info.value.path == "cassettes/gpt-4o/abc.yaml"
    assert reason in info.value.reason


def test_offsets_on_a_body_that_is_not_a_stream_are_refused() -> None:
    with pytest.raises(CassetteError, match=r"offsets_ms is only for a streamed \(events\) body, not a json one"):
        load_entry(_with_offsets([0.0], Body("json", {"a": 1})), "c.yaml")


def test_equal_and_integer_offsets_are_fine() -> None:
    assert load_entry(_with_offsets([0, 0, 7]), "c.yaml").offsets_ms == [0.0, 0.0, 7.0]


# -- chunks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [LF_STREAM, CRLF_STREAM], ids=["LF", "CRLF"])
def test_stream_chunks_are_whole_events_that_join_to_the_bytes(raw: bytes) -> None:
    body = encode_body(raw, "text/event-stream")
    chunks = body.chunks()
    nl = b"\r\n" if b"\r\n" in raw else b"\n"
    assert b"".join(chunks) == body.to_bytes() == raw
    assert len(chunks) == len(body.value) == 3
    assert chunks[1] == b"event: done" + nl + b'data: {"b":2}' + nl + nl
    assert all(chunk.endswith(nl + nl) for chunk in chunks)


@pytest.mark.parametrize(
    "body",
    [
        Body("json", {"a": [1, "é"]}),
        Body("text", "hello\nworld"),
        Body("base64", "iVBORw0KGgoAAP8="),
        Body("events", ["data: x"], "\r\n"),
        Body("events", []),
        Body("text", ""),
    ],
    ids=["json", "text", "base64", "one event", "no events", "empty"],
)
def test_every_kind_joins_back_to_its_bytes(body: Body) -> None:
    chunks = body.chunks()
    assert b"".join(chunks) == body.to_bytes()
    if body.kind != "events":
        assert chunks == ([body.to_bytes()] if body.to_bytes() else [])


def test_entry_response_chunks_are_cached_and_match_the_bytes() -> None:
    entry = make_entry(STREAM)
    chunks = entry.response_chunks()
    assert entry.response_chunks() is chunks
    assert b"".join(chunks) == entry.response_bytes() == LF_STREAM
    plain = make_entry(Body("json", {"a": 1}))
    assert plain.response_chunks() == [b'{"a":1}']
    assert plain.response_chunks()[0] is plain.response_bytes()


def test_slim_keeps_chunks_and_offsets() -> None:
    entry = make_entry(STREAM, offsets_ms=[0.0, 3.5, 9.0])
    slim = entry.slim()
    assert slim.response_body.kind == "text" and slim.response_body.value == ""  # the parsed body is gone
    assert slim.response_chunks() == entry.response_chunks() == STREAM.chunks()
    assert slim.offsets_ms == [0.0, 3.5, 9.0]
    assert slim.response_bytes() == LF_STREAM


def test_slim_of_a_fresh_entry_computes_its_chunks_first() -> None:
    # no chunk asked for before slimming: slim() must still keep them
    loaded = load_entry(dump_entry(make_entry(STREAM, offsets_ms=[0.0, 1.0, 2.0])), "c.yaml")
    slim = loaded.slim()
    assert [len(c) for c in slim.response_chunks()] == [len(c) for c in STREAM.chunks()]
    assert slim.offsets_ms == [0.0, 1.0, 2.0]
