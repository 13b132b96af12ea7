"""The Prometheus text exposition format (version 0.0.4), written without prometheus_client.

The plugin's ``--llm-cache-metrics`` file must work without the ``prometheus`` extra,
so the few lines of the format the metrics need are written here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from .model import Family

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _bound(value: float) -> str:
    """A bucket's ``le``, as prometheus_client writes it: 0.001, 1.0, +Inf."""
    return "+Inf" if math.isinf(value) else repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape_label(value)}"' for name, value in labels.items()) + "}"


def render(families: Iterable[Family]) -> str:
    """The families as Prometheus text: ``# HELP``, ``# TYPE`` and one line per sample."""
    lines: list[str] = []
    for family in families:
        name = family.name + "_total" if family.kind == "counter" else family.name
        lines.append(f"# HELP {name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.kind}")
        for labels, value in family.samples:
            lines.append(f"{name}{_labels(labels)} {_number(value)}")
        for labels, histogram in family.histograms:
            for bound, count in histogram.cumulative():
                lines.append(f"{name}_bucket{_labels({**labels, 'le': _bound(bound)})} {count}")
            lines.append(f"{name}_count{_labels(labels)} {histogram.count}")
            lines.append(f"{name}_sum{_labels(labels)} {_number(histogram.total)}")
    return "\n".join(lines) + "\n"
