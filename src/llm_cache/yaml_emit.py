"""A cassette document's YAML text, written directly rather than through PyYAML.

PyYAML's representer and resolver are Python, and cost most of a recording's CPU (0.3 to
0.5 ms for a 2 KB cassette). A cassette document holds only mappings with string keys,
lists, strings, integers, floats, booleans and null, so it is written here in the style
PyYAML (libyaml's emitter, as ``dump_entry`` configures it) writes it, text for text in
all but the rarest cases:

- block mappings indented by two; a list under its key without indentation; ``{}``, ``[]``;
- a string plain when YAML 1.1 reads it back as that string and no indicator forbids it,
  else single-quoted, a multi-line one as a literal block (``|``, ``|-``, ``|+``, an
  indentation digit when it starts with a space or a break), else double-quoted;
- floats as PyYAML spells them (``1.0e-05``, ``.inf``, ``.nan``).

Where a string would wrap (lines over the 4,096 columns ``dump_entry`` allows) the text
differs, and reads back the same. Anything else (another type, a key of more than 128
bytes, a lone surrogate) gives ``None``: the caller then uses PyYAML. The tests hold this
to PyYAML's output, and every text to reading back as the document it was made from.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .entry import _FlowList

__all__ = ["emit"]

# The characters libyaml writes as they are: printable, and not a line break. (It takes
# none beyond U+FFFF for printable: an emoji makes a string double-quoted, as \U0001F600.)
_PRINTABLE = r"\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd"
# A one-line string is plain unless (libyaml's analysis, in block context) it starts with
# an indicator or a space, with '-', '?' or ':' and then a space or nothing, or with a
# document marker; holds ': ' or ' #'; ends with a space or ':'; or holds a character not
# printable (the tab included) or a line break.
_LEAD = frozenset("#,[]{}&*!|>'\"%@` ")
# ... spelt as the characters outside it: a negated class of these ranges takes 6 ms to compile.
_NOT_PRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff\U00010000-\U0010ffff]")
_NOT_LITERAL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff\U00010000-\U0010ffff]")
# What a double-quoted scalar escapes, and how (libyaml's spelling).
_ESCAPED = re.compile(r'[\x00-\x1f\x7f-\x9f"\\\u2028\u2029\ufeff\ufffe\uffff\U00010000-\U0010ffff]')
_ESCAPES = {
    "\0": "\\0", "\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f",
    "\r": "\\r", "\x1b": "\\e", '"': '\\"', "\\": "\\\\", "\x85": "\\N", "\u2028": "\\L", "\u2029": "\\P",
}
# A line break: a key holding one is written as a complex key ("? ..."), left to PyYAML.
_BREAK = re.compile("[\n\r\x85\u2028\u2029]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# The plain scalars YAML 1.1 reads as something other than a string (PyYAML's implicit
# resolvers: bool, float, int, merge, null, timestamp, value).
_NOT_STR = re.compile(
    r"(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF"
    r"|[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
    r"|[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
    r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+|<<|~|null|Null|NULL|="
    r"|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9]"
    r"(?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?|[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9])$"
)
_WORDS = frozenset({
    "yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE",
    "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL",
})
# libyaml writes a longer key as a complex key ("? key"); such a document goes to PyYAML.
_MAX_KEY_BYTES = 128


class _Lines(list[str]):
    """The text's lines, and whether the last literal block written kept its final breaks
    (``|+``): libyaml then ends the document with ``...``."""

    open_ended = False


class _Unfit(Exception):
    """The document holds something this writer leaves to PyYAML."""


def emit(doc: dict[str, Any]) -> str | None:
    """The YAML text of ``doc``, or ``None`` when PyYAML must write it."""
    out = _Lines()
    try:
        if type(doc) is not dict or not doc:
            raise _Unfit
        _mapping(doc, 0, "", out)
    except _Unfit:
        return None
    if out.open_ended:
        out.append("...")
    out.append("")
    return "\n".join(out)


def _printable(text: str) -> bool:
    """Whether every character is one libyaml writes as it is (no break, no tab)."""
    if text.isascii():
        return text.isprintable()
    return _NOT_PRINTABLE.search(text) is None


def _plain_ok(text: str) -> bool:
    if not text:
        return False
    first = text[0]
    if first in _LEAD or (first in "-?:" and (len(text) == 1 or text[1] == " ")):
        return False
    if "a" <= first <= "z" or "A" <= first <= "Z":  # no resolver but bool and null starts with a letter
        if text in _WORDS:
            return False
    elif _NOT_STR.match(text):
        return False
    if ": " in text or " #" in text or text[-1] in " :" or text.startswith(("---", "...")):
        return False
    return _printable(text)


def _quoted(text: str) -> str:
    """One line: single-quoted when it can be, else double-quoted."""
    if _printable(text):
        return "'" + text.replace("'", "''") + "'"
    if _SURROGATE.search(text):
        raise _Unfit  # not UTF-8: PyYAML says why
    return '"' + _ESCAPED.sub(_escape, text) + '"'


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    named = _ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02X}" if code < 0x100 else f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"


# Keys repeat from one cassette to the next ("role", "content"): each is checked once.
_KEYS: dict[str, str] = {}


def _key(key: Any) -> str:
    if type(key) is not str:
        raise _Unfit
    known = _KEYS.get(key)
    if known is not None:
        return known
    written = _written_key(key)
    if len(_KEYS) < 4096:
        _KEYS[key] = written
    return written


def _written_key(key: str) -> str:
    if len(key) > _MAX_KEY_BYTES // 4 and len(key.encode("utf-8", "surrogatepass")) > _MAX_KEY_BYTES:
        raise _Unfit
    if _plain_ok(key):
        return key
    if _BREAK.search(key):
        raise _Unfit  # libyaml writes a key with a line break as a complex key
    return _quoted(key)


def _scalar(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value if _plain_ok(value) else _quoted(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return _float(value)
    raise _Unfit


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if value == float("inf"):
        return ".inf"
    if value == float("-inf"):
        return "-.inf"
    text = repr(value).lower()
    if "." not in text and "e" in text:
        text = text.replace("e", ".0e", 1)
    return text


def _literal(text: str) -> str | None:
    """The header of a literal block for ``text`` (``|``, ``|-``, ``|2+``...), or None
    when it cannot be one."""
    if " \n" in text or text[-1] == " ":
        return None
    if text.isascii():
        if not text.replace("\n", " ").isprintable():
            return None
    elif _NOT_LITERAL.search(text):
        return None
    hints = "|"
    if text[0] in " \n":
        hints += "2"
    if text[-1] != "\n":
        hints += "-"
    elif len(text) == 1 or text[-2] == "\n":
        hints += "+"
    return hints


def _block(head: str, hints: str, text: str, indent: int, out: _Lines) -> None:
    out.append(head + hints)
    out.open_ended = hints.endswith("+")
    pad = " " * indent
    body = text.removesuffix("\n")
    out.extend(pad + line if line else "" for line in body.split("\n"))


def _value(value: Any, head: str, indent: int, out: _Lines) -> None:
    """``value`` after ``head`` (``key:`` or ``- ``), the head's mapping at ``indent``."""
    kind = type(value)
    if kind is dict:
        if value:
            out.append(head)
            _mapping(value, indent + 2, " " * (indent + 2), out)
        else:
            out.append(head + " {}")
    elif kind is list:
        if value:
            out.append(head)
            _sequence(value, indent, " " * indent, out)
        else:
            out.append(head + " []")
    elif isinstance(value, list):  # the flow list of event offsets
        out.append(head + " " + _flow(value))
    elif kind is str and "\n" in value and (hints := _literal(value)) is not None:
        _block(head + " ", hints, value, indent + 2, out)
    else:
        out.append(head + " " + _scalar(value))


def _flow(items: list[Any]) -> str:
    if type(items) is not _FlowList or any(type(v) not in (int, float) for v in items):
        raise _Unfit
    return "[" + ", ".join(_scalar(v) for v in items) + "]"


def _mapping(mapping: dict[Any, Any], indent: int, lead: str, out: _Lines) -> None:
    pad = " " * indent
    for key, value in mapping.items():
        _value(value, lead + _key(key) + ":", indent, out)
        lead = pad


def _sequence(items: list[Any], indent: int, lead: str, out: _Lines) -> None:
    pad = " " * indent
    for item in items:
        dash = lead + "- "
        lead = pad
        kind = type(item)
        if kind is dict and item:
            _mapping(item, indent + 2, dash, out)
        elif kind is list and item:
            _sequence(item, indent + 2, dash, out)
        elif kind is str and "\n" in item and (hints := _literal(item)) is not None:
            _block(dash, hints, item, indent + 2, out)
        elif kind is dict:
            out.append(dash + "{}")
        elif kind is list:
            out.append(dash + "[]")
        elif isinstance(item, list):
            out.append(dash + _flow(item))
        else:
            out.append(dash + _scalar(item))
