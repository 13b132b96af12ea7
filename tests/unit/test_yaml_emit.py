"""The cassette YAML written directly (``yaml_emit``): it reads back as the document it came
from, and is PyYAML's own text for it (the text ``dump_entry`` wrote before)."""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_cache.cassette import _WIDTH, _yaml, dump_entry, load_entry
from llm_cache.entry import _FlowList
from llm_cache.errors import CassetteError
from llm_cache.yaml_emit import emit

ROOT = Path(__file__).resolve().parents[2]
_, CLOADER, DUMPER = _yaml()


def pyyaml(doc: Any) -> str:
    return yaml.dump(doc, Dumper=DUMPER, sort_keys=False, allow_unicode=True, width=_WIDTH)


def reads_back(text: str, doc: Any) -> None:
    for loader in (CLOADER, yaml.SafeLoader):
        assert _same(yaml.load(text, Loader=loader), doc), (loader, text)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b) and not (isinstance(b, list) and type(a) is list):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


TRICKY = [
    "", "yes", "No", "OFF", "null", "~", "123", "-7", "0x1f", "0o17", "017", "1_000", "1.5", "-1.5e3", "1e5",
    ".inf", "-.Inf", ".NaN", "2026-10-21", "2026-10-21T09:57:05.284139Z", "2026-10-21 09:57", "1:20", "12:30:00",
    "<<", "=", "a: b", "a:", "a:b", "a #b", "a#b", "#x", "-a", "- a", "-", "?", "?x", ":a", "@x", "`x", "'x", '"x',
    "!x", "%x", "&x", "*x", "|x", ">x", "[a]", "{a}", "a,b", "a[b]", " x", "x ", " ", "---x", "...", "x\ny", "x\n",
    "x\n\n", "\nx", " x\ny", "x \ny", "x\n ", "a\n\n\nb\n", "\n", "\n\n", "a'b\nc", "tab\tx", "a\tb\nc", "x\ry",
    "\x00", "\x07\x1b", "\x7f", "\x85", "\xa0", "\u2028", "\u2029", "\ufeff", "\ufffe", "é", "日本語", "emoji 😀",
    "Yes please", "it's", "echo: How long is the warranty?", "data: {\"a\": 1}\n\n", "y", "n", "True story",
]


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_strings_read_back_and_match_pyyaml(text: str) -> None:
    for doc in ({"k": text}, {"k": [text, {"a": text}, [text]]}, {"k": {"deep": [{"x": text, "y": 1}]}}, {text or "e": 1}):
        out = emit(doc)
        if out is None:  # a key PyYAML writes as a complex key ("? ..."): only those go back to it
            assert "?" in pyyaml(doc).splitlines()[0]
            continue
        reads_back(out, doc)
        if text not in ("\u2028", "\u2029"):  # libyaml single-quotes a lone LS across two lines; ours is "\L"
            assert out == pyyaml(doc)


def test_every_committed_cassette_is_written_as_pyyaml_wrote_it() -> None:
    files = glob.glob(str(ROOT / "examples/cassettes/*/*.yaml")) + glob.glob(str(ROOT / "tests/**/*.yaml"), recursive=True)
    checked = 0
    for name in files:
        try:
            entry = load_entry(Path(name).read_bytes(), name)
        except CassetteError:  # fixtures of broken cassettes
            continue
        doc = entry.to_doc()
        assert emit(doc) == pyyaml(doc), name
        assert dump_entry(entry) == pyyaml(doc)
        checked += 1
    assert checked >= 10


def test_numbers_and_the_flow_list() -> None:
    doc = {"i": 3, "big": 10**30, "f": 0.1, "e": 1e-05, "g": 1e17, "inf": float("inf"), "ninf": float("-inf"),
           "neg": -0.0, "off": "off", "t": True, "f2": False, "n": None, "offsets_ms": _FlowList([0.0, 12.5, 1e-05])}
    out = emit(doc)
    assert out is not None
    assert out == pyyaml(doc)
    assert "offsets_ms: [0.0, 12.5, 1.0e-05]" in out and "'off': 'off'" in out
    reads_back(out, doc)
    nan = emit({"x": float("nan")})
    assert nan == "x: .nan\n"


@pytest.mark.parametrize("doc", [
    {"k": (1, 2)}, {"k": b"bytes"}, {1: "int key"}, {"k": {1.5: "x"}}, {"k" * 200: 1}, {"k": "\ud800"},
    {"k": [object()]}, {"k": [1, 2]} if False else {"k": _FlowList(["a"])}, {"k\nv": 1}, [], {},
])
def test_what_it_leaves_to_pyyaml(doc: Any) -> None:
    assert emit(doc) is None


def _docs(alphabet: st.SearchStrategy[str], tricky: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    text = st.text(alphabet, max_size=40) | st.sampled_from(tricky)
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
    values = st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=20
    )
    return st.dictionaries(text, values, min_size=1, max_size=6)


_ANY = st.characters(codec="utf-8")
_NO_LS_PS = st.characters(codec="utf-8", exclude_characters="\u2028\u2029")
_COMMON = [t for t in TRICKY if t not in ("\u2028", "\u2029")]


@settings(max_examples=int(os.environ.get("LLM_CACHE_HYPOTHESIS_EXAMPLES", "400")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_docs(_ANY, TRICKY))
def test_any_document_reads_back(doc: dict[str, Any]) -> None:
    out = emit(doc)
    if out is not None:
        reads_back(out, doc)


@settings(max_examples=int(os.environ.get("LLM_CACHE_HYPOTHESIS_EXAMPLES", "400")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_docs(_NO_LS_PS, _COMMON))
def test_any_document_is_pyyamls_text(doc: dict[str, Any]) -> None:
    out = emit(doc)
    if out is None:
        return
    assert out == pyyaml(doc)
