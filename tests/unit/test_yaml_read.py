"""Reading a cassette's YAML (``cassette._read_yaml``): whatever the text, the result, or the
error, is exactly what PyYAML's safe loader gives (the loader of ``cassette._yaml``), so the
faster reader changes the time of a read and nothing else."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_yaml_emit import TRICKY, _same

from llm_cache import cassette
from llm_cache.cassette import _read_yaml, _yaml, load_doc
from llm_cache.errors import CassetteError

ROOT = Path(__file__).resolve().parents[2]
_, LOADER, _DUMPER = _yaml()


def pyyaml(text: str | bytes) -> Any:
    return yaml.load(text, Loader=LOADER)


def same_as_pyyaml(text: str | bytes) -> None:
    try:
        expected = pyyaml(text)
    except Exception as exc:  # noqa: BLE001 - any error: the same, of the same kind
        with pytest.raises(type(exc)) as got:
            _read_yaml(yaml, LOADER, text)
        assert str(got.value) == str(exc)
        return
    assert _same(_read_yaml(yaml, LOADER, text), expected), text


@pytest.fixture
def constructor_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often PyYAML's constructor builds a document: the fast reader's fall-back."""
    calls: list[int] = []
    original = LOADER.construct_document

    def counted(self: Any, node: Any) -> Any:
        calls.append(1)
        return original(self, node)

    monkeypatch.setattr(LOADER, "construct_document", counted)
    return calls


def test_every_committed_cassette_reads_as_pyyaml_reads_it(constructor_calls: list[int]) -> None:
    files = glob.glob(str(ROOT / "examples/cassettes/*/*.yaml")) + glob.glob(
        str(ROOT / "tests/**/*.yaml"), recursive=True
    )
    assert len(files) >= 10
    texts = [Path(path).read_bytes() for path in files]
    for text in texts:
        same_as_pyyaml(text)
    # The committed cassettes are the usual kind: none needs the fall-back (a reader that
    # always fell back would be PyYAML's time, not faster); hand-made fixtures may.
    expected = [pyyaml(text) for text in texts]
    constructor_calls.clear()
    got = [_read_yaml(yaml, LOADER, text) for text in texts]
    assert all(_same(a, b) for a, b in zip(got, expected))
    built = sum(1 for text in texts if b"&" not in text)
    assert len(constructor_calls) < built / 4, (len(constructor_calls), built)


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_scalars_read_as_pyyaml_reads_them(text: str) -> None:
    doc = {"k": text, "list": [text, {"a": text}], text or "e": [1, text]}
    for style in (None, "'", '"', "|", ">"):
        try:
            dumped = yaml.dump(doc, Dumper=_DUMPER, default_style=style, allow_unicode=True)
        except yaml.YAMLError:
            continue
        same_as_pyyaml(dumped)
    same_as_pyyaml(f"k: {text}\n")  # as a hand-written plain scalar, whatever it resolves to
    same_as_pyyaml(f"{text}: 1\n")


UNUSUAL = {
    "merge key": "base: &b {x: 1}\nk:\n  <<: *b\n  y: 2\n",
    "merge key without anchors in the text": "k:\n  <<: {x: 1}\n  y: 2\n",
    "alias shared": "a: &x [1, 2]\nb: *x\n",
    "mapping as key": "? {a: 1}\n: v\n",
    "sequence as key": "? [1, 2]\n: v\n",
    "int key": "1: one\n0x10: sixteen\n",
    "bool and null keys": "yes: 1\n~: 2\nfalse: 3\n",
    "float keys": "1.5: a\n.inf: b\n",
    "timestamp key": "2026-01-01: a\n",
    "timestamp value": "recorded_at: 2026-10-21T09:57:05Z\nday: 2026-10-21\n",
    "value key": "=: 1\n",
    "binary": "k: !!binary aGVsbG8=\n",
    "set": "k: !!set {a: null}\n",
    "omap": "k: !!omap [{a: 1}, {b: 2}]\n",
    "pairs": "k: !!pairs [{a: 1}, {a: 2}]\n",
    "python tag": "k: !!python/object:os.system echo\n",
    "local tag": "k: !thing x\n",
    "explicit str tag": "k: !!str 123\nn: !!int '7'\nf: !!float '1'\n",
    "duplicate keys": "a: 1\na: 2\n",
    "empty document": "",
    "only a comment": "# nothing\n",
    "a scalar document": "just text\n",
    "a list document": "- 1\n- a\n",
    "octal and sexagesimal": "a: 017\nb: 1:20\nc: 0o17\nd: 1_000\ne: -0b101\nf: 190:20:30.15\n",
    "two documents": "a: 1\n---\nb: 2\n",
    "bad indentation": "a:\n  b: 1\n c: 2\n",
    "unclosed flow": "a: [1, 2\n",
    "tab indent": "a:\n\tb: 1\n",
    "deep nesting": "a: " + "[" * 300 + "]" * 300 + "\n",
    "bytes with a BOM": "\ufeffa: 1\n",
}


@pytest.mark.parametrize("text", list(UNUSUAL.values()), ids=list(UNUSUAL))
def test_unusual_documents_read_or_fail_as_pyyaml(text: str) -> None:
    same_as_pyyaml(text)
    same_as_pyyaml(text.encode())


def test_a_refused_tag_is_still_a_cassette_error_naming_its_line() -> None:
    with pytest.raises(CassetteError, match=r"!!binary value.*line 2"):
        load_doc("a: 1\nk: !!binary aGVsbG8=\n", "c.yaml")


def test_remembered_tags_depend_on_the_style_not_only_the_text() -> None:
    # The same text, plain and quoted, is a number and a string: the memo keys on both.
    for _ in range(2):
        assert _read_yaml(yaml, LOADER, "a: 123\nb: '123'\nc: yes\nd: 'yes'\n") == {
            "a": 123,
            "b": "123",
            "c": True,
            "d": "yes",
        }


def test_the_tag_memo_stays_bounded() -> None:
    many = "".join(f"k{n}: v{n}\n" for n in range(2 * cassette._TAG_MEMO_LIMIT))
    assert _read_yaml(yaml, LOADER, many) == pyyaml(many)
    memo = next(
        cell.cell_contents
        for cell in (LOADER.resolve.__closure__ or ())
        if isinstance(cell.cell_contents, dict)
    )
    assert len(memo) <= cassette._TAG_MEMO_LIMIT


_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(TRICKY),
)
_DOC = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.sampled_from(TRICKY), st.integers()),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=25,
)


@settings(
    max_examples=int(os.environ.get("LLM_CACHE_HYPOTHESIS_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(_DOC, st.sampled_from([None, "'", '"']), st.booleans())
def test_any_document_reads_as_pyyaml_reads_it(doc: Any, style: str | None, flow: bool) -> None:
    text = yaml.dump(
        doc, Dumper=_DUMPER, default_style=style, default_flow_style=flow, allow_unicode=True
    )
    same_as_pyyaml(text)
