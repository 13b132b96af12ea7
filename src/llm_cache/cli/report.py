"""The report command: the inventory part of the report for a store, without a test run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..atomic import write_atomic
from ..report.json import report_json
from ..report.model import Report, store_report
from ..values import format_duration
from .common import OK, Problem, UsageError, _plural, _ttl
from .stores import StoreArg, where

__all__ = ["cmd_report"]

HTML_FORM = "a path where an HTML file can be written"


def _html(report: Report) -> str:
    try:
        from ..report.html import report_html
    except ImportError as exc:
        raise Problem(f"the HTML report cannot be made here ({exc}); --json prints the report as JSON") from None
    return str(report_html(report))


def _check_html_path(path: Path) -> None:
    """Bad usage when ``path`` cannot be an HTML file: a directory, or under a file."""
    if path.is_dir():
        raise UsageError(f"--html must be {HTML_FORM}, got {str(path)!r} (a directory)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"--html must be {HTML_FORM}, got {str(path)!r} ({parent} is a file)")
            return


def cmd_report(args: argparse.Namespace) -> int:
    if not args.html and not args.json:
        raise UsageError("report needs --html PATH (or --json, to print the report as JSON)")
    ttl = _ttl(args)
    html_path = Path(args.html) if args.html else None
    if html_path is not None:
        _check_html_path(html_path)
    with StoreArg(args) as stores:
        store = stores.store
        # the store as the report names it: a directory, or a URL with its password masked
        report = store_report(store, where(store), ttl)
    if html_path is not None:
        page = _html(report)
        html_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(html_path, page)
    if args.json:
        print(json.dumps(report_json(report), indent=2, default=str))
        return OK
    inventory = report.inventory
    expired = inventory.expired if inventory is not None else 0
    print(f"{_plural(report.entries, 'cassette')}, {report.bytes} bytes, {expired} expired "
          f"(ttl {format_duration(ttl)}) in {report.location}")
    if html_path is not None:
        print(f"HTML report written to {html_path}")
    return OK
