"""Pieces of the HTML report: escaping, tables, the word diff of a drift and the age
histogram as inline SVG. Every function returns markup whose report values are escaped."""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Iterable, Sequence

__all__ = ["esc", "histogram_svg", "table", "word_diff"]

# the words a drift is compared by; the whitespace between them is kept but not compared
_WORDS = re.compile(r"\S+")

# the histogram's geometry, in SVG user units
_SLOT = 100
_BAR = 70
_TALLEST = 120
_TOP = 22
_LEFT = 10


def esc(value: object) -> str:
    """A report value as HTML text or attribute value."""
    return html.escape(str(value), quote=True)


def table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table of cells already made markup; ``head`` are plain labels."""
    attr = f' class="{esc(cls)}"' if cls else ""
    cells = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table{attr}><thead><tr>{cells}</tr></thead>\n<tbody>\n{body}</tbody></table>"


def _side(text: str, words: Sequence[re.Match[str]], runs: Iterable[tuple[bool, int, int]], tag: str) -> str:
    """``text`` as markup, each changed run of ``words`` (from index to index) in one ``tag``;
    the whitespace between runs is the text's own."""
    out, cursor = [], 0
    for changed, first, last in runs:
        if first == last:
            continue
        start, end = words[first].start(), words[last - 1].end()
        inner = esc(text[start:end])
        out.append(esc(text[cursor:start]) + (f"<{tag}>{inner}</{tag}>" if changed else inner))
        cursor = end
    out.append(esc(text[cursor:]))
    return "".join(out)


def word_diff(old: str, new: str) -> tuple[str, str]:
    """The old and the new text as markup: words only in the old one inside ``<del>``,
    words only in the new one inside ``<ins>``, the rest (and all whitespace) as it was."""
    a, b = list(_WORDS.finditer(old)), list(_WORDS.finditer(new))
    matcher = difflib.SequenceMatcher(None, [m.group() for m in a], [m.group() for m in b], autojunk=False)
    opcodes = matcher.get_opcodes()
    left = _side(old, a, ((op != "equal", i1, i2) for op, i1, i2, _, _ in opcodes), "del")
    right = _side(new, b, ((op != "equal", j1, j2) for op, _, _, j1, j2 in opcodes), "ins")
    return left, right


def histogram_svg(title: str, labels: Sequence[str], counts: Sequence[int]) -> str:
    """Bars of ``counts`` (one ``rect.bar`` per label, its height proportional to its count,
    the tallest ``_TALLEST`` high) with the labels below and the counts above."""
    most = max(counts, default=0)
    width = _LEFT * 2 + _SLOT * len(labels)
    base = _TOP + _TALLEST
    height = base + 24
    parts = [
        (f'<svg class="histogram" role="img" aria-label="{esc(title)}" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}"><title>{esc(title)}</title>'),
        f'<line class="axis" x1="{_LEFT}" y1="{base}" x2="{width - _LEFT}" y2="{base}"/>',
    ]
    for index, (label, count) in enumerate(zip(labels, counts)):
        bar = round(_TALLEST * count / most, 2) if most else 0.0
        x = _LEFT + index * _SLOT + (_SLOT - _BAR) // 2
        middle = _LEFT + index * _SLOT + _SLOT // 2
        parts.append(
            f'<rect class="bar" data-bucket="{esc(label)}" data-count="{count}" x="{x}" y="{base - bar:g}" '
            f'width="{_BAR}" height="{bar:g}"><title>{esc(label)}: {count}</title></rect>'
            f'<text class="count" x="{middle}" y="{base - bar - 6:g}" text-anchor="middle">{count}</text>'
            f'<text class="label" x="{middle}" y="{base + 16}" text-anchor="middle">{esc(label)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)
