"""Entries and their YAML documents: the cassette format.

One YAML file per key, keys in a fixed order, made to be read in review::

    llm_cache: 2                  # format version (1 is still read)
    key: 9f2c...                  # the full sha256 key, checked on load
    recorded_at: '2026-11-27T09:00:00Z'
    model: gpt-4o                 # the model the request asked for
    model_version: gpt-4o@2024-08-06
    response_model: gpt-4o-2024-08-06
    system_fingerprint: fp_...
    duration_ms: 812.4            # the original call's duration
    usage: {input_tokens: 12, output_tokens: 40}
    request:  {method, path, query, headers, json | text | base64}
    response: {status, headers, json | events | text | base64, offsets_ms}

For a streamed response, ``offsets_ms`` gives each event's arrival: milliseconds
from the start of the response until that event had fully arrived, one number
per event, on one line after the body so a reviewer can skip it::

    response:
      status: 200
      headers: {content-type: text/event-stream}
      events:
      - 'data: {"choices": [...]}'
      - 'data: [DONE]'
      offsets_ms: [0.0, 12.5]

Format 2 added ``offsets_ms``; format 1 files (which never have it) are read as
they are, and ``llm-cache upgrade`` rewrites them as format 2.

A body is stored as ``json`` (a YAML mapping) when it parses as JSON, as
``events`` (one string per server-sent event, every line kept) for
``text/event-stream``, as ``lines`` (one string per line) for NDJSON, as
``eventstream`` (one mapping per message: its headers and its payload) for AWS
event-stream frames, as ``text`` when it is other UTF-8 text, and as ``base64``
otherwise. Each of these gives back the bytes it was made from (``json``: the
same value). Bodies are stored decoded; replay sends them with ``Content-Length``
recomputed and no ``Content-Encoding``; a stream (``events``, ``lines``,
``eventstream``) is replayed one event, line or frame per chunk.

A ``multipart/form-data`` request is stored as ``multipart``: its parts in order,
text fields as text, file parts as file name, content type, size and sha256. That
is a description for review, not the bytes sent (a request body is never replayed).

This module is the YAML text of a cassette: ``dump_entry`` writes it, ``load_doc`` and
``load_entry`` read it in bounded time and memory (``MAX_CASSETTE_BYTES``, read at each
call, and the alias and depth budgets), PyYAML imported on first use. ``Entry`` is in
``llm_cache.entry``, the checks of a document (``parse_entry``) in ``llm_cache.schema``;
both are importable from here too.
"""

from __future__ import annotations

import functools
from typing import Any

from .body import Body, encode_body, encode_request_body
from .entry import FORMAT_VERSION, READABLE_FORMATS, Entry, _FlowList
from .errors import OversizeCassette
from .schema import _fail, parse_entry
from .values import DEFAULT_MAX_CASSETTE_BYTES

__all__ = [
    "FORMAT_VERSION",
    "READABLE_FORMATS",
    "Body",
    "Entry",
    "dump_entry",
    "encode_body",
    "encode_request_body",
    "load_doc",
    "load_entry",
    "parse_entry",
]


@functools.cache
def _yaml() -> tuple[Any, type[Any], type[Any]]:
    """PyYAML, its safe loader and our dumper (C versions when present), imported on first
    use: a replay served from parsed copies never needs them."""
    import yaml

    safe: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    base: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

    class Loader(safe):  # type: ignore[misc]
        """The safe loader, holding only what JSON holds: a timestamp stays the text it is
        (``recorded_at`` parses it; in a body, where JSON has no dates, it is a string);
        ``!!binary`` and ``!!set``, which no body can replay, are refused."""

    def as_text(loader: Any, node: Any) -> Any:
        return loader.construct_scalar(node)

    def refuse(loader: Any, node: Any) -> Any:
        kind = node.tag.rpartition(":")[2]
        raise yaml.constructor.ConstructorError(
            None, None, f"a !!{kind} value, which a cassette cannot hold (only what JSON holds)", node.start_mark
        )

    Loader.add_constructor("tag:yaml.org,2002:timestamp", as_text)
    for tag in ("binary", "set"):
        Loader.add_constructor(f"tag:yaml.org,2002:{tag}", refuse)
    _remember_tags(Loader, yaml.nodes.ScalarNode)
    loader: type[Any] = Loader

    class Dumper(base):  # type: ignore[misc]
        """Safe dumper writing multi-line strings (SSE events) as literal blocks."""

    def represent_str(dumper: Any, value: str) -> Any:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    def represent_flow_list(dumper: Any, value: _FlowList) -> Any:
        return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)

    Dumper.add_representer(str, represent_str)
    Dumper.add_representer(_FlowList, represent_flow_list)
    return yaml, loader, Dumper


# Reading a cassette: the C parser composes the nodes; the usual ones (strings, numbers,
# booleans, nulls, mappings with such keys, sequences) are built here, in one pass, and
# anything else by PyYAML's constructor from the same nodes, so the result is PyYAML's in
# every case. A 1 to 2 KB cassette reads in half to 0.6 of PyYAML's time: its
# constructor's generality (deep and recursive objects, merge keys) costs more than the
# parse. A document with anchors is left to PyYAML whole (its aliases share objects).
_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_SCALARS = {
    "tag:yaml.org,2002:int": "construct_yaml_int",
    "tag:yaml.org,2002:float": "construct_yaml_float",
    "tag:yaml.org,2002:bool": "construct_yaml_bool",
    "tag:yaml.org,2002:null": "construct_yaml_null",
}
_TAG_MEMO_LIMIT = 4096  # plain scalars whose tags are remembered (keys, small values)
_TAG_MEMO_LENGTH = 40  # characters: longer scalars are resolved each time


class _Unusual(Exception):
    """A node the fast reader leaves to PyYAML's constructor."""


def _remember_tags(loader: type[Any], scalar: type[Any]) -> None:
    """The loader resolves a plain scalar's tag (str, int, bool, ...) by regular expressions,
    once per scalar; most scalars of cassettes are the same few keys and values, so their
    tags are remembered (resolution depends on the scalar's text and style alone)."""
    resolve = loader.resolve
    memo: dict[tuple[str, Any], str] = {}

    def remembered(self: Any, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is not scalar or len(value) > _TAG_MEMO_LENGTH:
            return resolve(self, kind, value, implicit)
        found = memo.get((value, implicit))
        if found is None:
            found = resolve(self, kind, value, implicit)
            if len(memo) < _TAG_MEMO_LIMIT:
                memo[(value, implicit)] = found
        return found

    loader.resolve = remembered


def _build(loader: Any, node: Any) -> Any:
    tag = node.tag
    if tag == _STR:
        return node.value
    if tag == _MAP:
        mapping = {}
        for key_node, value_node in node.value:
            if key_node.tag == _STR:
                key = key_node.value
            elif key_node.tag in _SCALARS:
                key = getattr(loader, _SCALARS[key_node.tag])(key_node)
            else:  # a merge key, a mapping or sequence as key, a tagged key
                raise _Unusual
            mapping[key] = _build(loader, value_node)
        return mapping
    if tag == _SEQ:
        return [_build(loader, item) for item in node.value]
    name = _SCALARS.get(tag)
    if name is None:  # a timestamp, a refused or unknown tag: PyYAML's constructors say
        raise _Unusual
    return getattr(loader, name)(node)


def _anchors(text: str | bytes) -> bool:
    """Whether ``text`` may define anchors (whose aliases share, and may expand, nodes)."""
    return (b"&" in text) if isinstance(text, bytes) else ("&" in text)


def _read_yaml(yaml: Any, loader_class: type[Any], text: str | bytes, anchors: bool | None = None) -> Any:
    """``yaml.load(text, Loader=loader_class)``, faster for what cassettes hold."""
    if _anchors(text) if anchors is None else anchors:
        return yaml.load(text, Loader=loader_class)
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            return _build(loader, node)
        except (_Unusual, RecursionError):
            return loader.construct_document(node)
    finally:
        loader.dispose()


# The line width of the YAML; a longer offsets line widens it, so that it never wraps.
_WIDTH = 4096


def dump_entry(entry: Entry) -> str:
    """The YAML text of an entry, in format ``FORMAT_VERSION``."""
    from .yaml_emit import emit  # on the first write: a replay never needs it

    doc = entry.to_doc()
    direct = emit(doc)  # PyYAML's text, written without its representer: a fraction of the time
    if direct is not None:
        return direct
    width = _WIDTH
    offsets = doc["response"].get("offsets_ms")
    if offsets:
        # more than the line takes ("  offsets_ms: [", then "1234.5, " per event)
        width = max(width, 32 + sum(len(repr(ms)) + 4 for ms in offsets))
    yaml, _, dumper = _yaml()
    text: str = yaml.dump(doc, Dumper=dumper, sort_keys=False, allow_unicode=True, width=width)
    return text


# A cassette is read in bounded time and memory whatever it holds: a size limit before
# parsing, and, when it defines anchors, a budget on the nodes its aliases expand to
# ("billion laughs"), and on nesting depth.
MAX_CASSETTE_BYTES = DEFAULT_MAX_CASSETTE_BYTES
MAX_EXPANDED_NODES = 200_000
MAX_DEPTH = 200


def _check_expansion(doc: Any, path: str) -> None:
    budget = MAX_EXPANDED_NODES
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise _fail(path, f"its aliases expand to more than {MAX_EXPANDED_NODES} nodes")
        if depth > MAX_DEPTH:
            raise _fail(path, f"it nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _marked(exc: Any) -> str:
    """A PyYAML parse error as one line: its problem at its line and column, after what it
    was reading (``while parsing a flow sequence, line 3: expected ',' or ']', but got
    '<scalar>', line 4, column 3``). The snippet of the file PyYAML prints is left out."""
    def at(mark: Any) -> str:
        return f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""

    problem = f"{exc.problem or 'unreadable'}{at(exc.problem_mark)}"
    if exc.context:
        context_mark = exc.context_mark
        where = f", line {context_mark.line + 1}" if context_mark is not None else ""
        return f"{exc.context}{where}: {problem}"
    return problem


def load_doc(text: str | bytes, path: str) -> Any:
    """A cassette's YAML document, parsed with the safe loader in bounded time and memory
    but not yet validated (``parse_entry`` does that); a failure is a CassetteError naming ``path``."""
    if len(text) > MAX_CASSETTE_BYTES:
        raise OversizeCassette(path=path, size=len(text), limit=MAX_CASSETTE_BYTES)
    yaml, loader, _ = _yaml()
    anchors = _anchors(text)
    try:
        doc = _read_yaml(yaml, loader, text, anchors)  # a safe loader, C or Python
    except yaml.constructor.ConstructorError as exc:  # a tag it cannot hold: say which and where
        mark = exc.problem_mark
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise _fail(path, f"not valid YAML: {exc.problem}{where}") from None
    except yaml.MarkedYAMLError as exc:  # what is wrong and where, without the file's lines
        raise _fail(path, f"not valid YAML: {_marked(exc)}") from None
    except yaml.YAMLError as exc:
        raise _fail(path, f"not valid YAML: {str(exc).splitlines()[0]}") from None
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:
        raise _fail(path, f"not valid YAML: {type(exc).__name__}: {str(exc)[:200]}") from None
    if anchors:  # aliases may expand
        _check_expansion(doc, path)
    return doc


def load_entry(text: str | bytes, path: str, expected_key: str | None = None) -> Entry:
    """Parse and validate a cassette's text (any readable format); any failure is a CassetteError naming ``path``."""
    return parse_entry(load_doc(text, path), path, expected_key)
