"""One report model of a session or a store (``model``), and its renderers: the terminal
summary (``text``), the JSON report (``json``) and the HTML page (``html``)."""

from __future__ import annotations

from .json import report_json
from .model import Report, build_report, cost_saved
from .text import MAX_MISSES_SHOWN, summary_lines

__all__ = ["MAX_MISSES_SHOWN", "Report", "build_report", "cost_saved", "report_json", "summary_lines"]
