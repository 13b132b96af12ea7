"""The warm command: make sure a list of requests is cached and fresh."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from ..settings import (
    parse_mode,
)
from .common import (
    OK,
    PROBLEM,
    Problem,
    UsageError,
    _emit,
    _parse,
    _ttl,
)
from .stores import StoreArg


def _progress(done: int, total: int) -> None:
    """A bar redrawn in place on a terminal; in a log (CI), only its last state, one line."""
    if done != total and not sys.stderr.isatty():
        return
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done == total else ""
    back = "\r" if sys.stderr.isatty() else ""
    print(f"{back}warming [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True)


def cmd_warm(args: argparse.Namespace) -> int:
    from ..library import LLMCache
    from ..warming import check_base_url, check_variables, read_requests

    source = Path(args.file)
    if not source.is_file():
        raise Problem(f"no requests file at {source}")
    headers = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header must look like 'Name: value', got {item!r}")
        headers[name.strip()] = value.strip()
    ttl = _ttl(args)
    mode = _parse(parse_mode, args.mode, "--mode")
    try:  # a bad file stops here, before any store is opened or request sent
        requests = read_requests(source)
        if not args.base_url:
            check_base_url(requests, str(source), "a full url, or given with --base-url https://api.example.com/v1")
        check_variables(requests, headers, str(source))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    stores = StoreArg(args, creates=True, ttl=ttl)  # bad --dir/--store usage: said before anything is sent
    store = stores.store
    try:
        cache = LLMCache(store, mode=mode, ttl=ttl, log_every=None)
    except ConfigError as exc:
        store.close()
        raise UsageError(str(exc)) from None
    try:
        report = cache.warm(source, base_url=args.base_url, headers=headers,
                            progress=None if args.json else _progress)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    finally:
        cache.close()
    text = (f"{report.total} requests: {report.fresh} fresh, {report.recorded} recorded, "
            f"{report.refreshed} refreshed, {report.missing} missing, {report.failed} failed "
            f"in {report.seconds:.2f} s")
    _emit(args, {**report.__dict__}, "\n".join([*report.errors, text]))
    return PROBLEM if report.failed or report.missing else OK

