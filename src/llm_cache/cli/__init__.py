"""The ``llm-cache`` command: list, inspect, prune, verify, compare, report and upgrade cassettes,
of a cassette directory (``--dir``) or of any shared store (``--store URL``: file://, redis://);
given neither, of the store the project's pytest configuration names (``cli/project.py``).

Exit status: 0 on success, 1 when a command found a problem (a missing
directory, a bad cassette, an unknown key, a store that does not answer), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__
from ..cassette import FORMAT_VERSION
from ..errors import ConfigError, StoreUnavailable
from .common import PROBLEM, USAGE, Problem, UsageError
from .listing import cmd_diff, cmd_ls, cmd_show, cmd_stats
from .maintain import cmd_upgrade, cmd_verify
from .prune import cmd_prune
from .report import cmd_report
from .stores import CLI_STORE_FORM
from .warm import cmd_warm

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> Any:  # argparse exits 2 on bad usage, as we want
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        # argparse says a command's unknown flag with the top-level usage; the command's own
        # usage (its flags) is what helps
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            command = self.commands.get(getattr(parsed, "command", None) or "", self)
            command.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llm-cache", description="Inspect and manage pytest-llm-cache cassettes.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, func: Callable[[argparse.Namespace], int], text: str, *, json_flag: bool = True,
            ttl: bool = False, store: str | None = f"the store instead of a directory: {CLI_STORE_FORM}",
            ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--dir", help="the cassette directory (default: the store of the pytest configuration found "
                       "from here upward: llm_cache_store, llm_cache_dir or cassettes/ beside it; else ./cassettes)")
        if store is not None:
            p.add_argument("--store", metavar="URL", help=store)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON instead of text")
        if ttl:
            p.add_argument("--ttl", help="age after which a cassette is expired (default: llm_cache_ttl of the "
                           "pytest configuration, else 30d)")
        p.set_defaults(func=func)
        return p

    add("ls", cmd_ls, "list cassettes: key, model version, age, expiry, size, endpoint, prompt", ttl=True)
    add("stats", cmd_stats, "entries, bytes, expired and hits per model version", ttl=True)
    show = add("show", cmd_show, "one cassette made readable: prompt, completion, tool calls")
    show.add_argument("key", help="a unique key prefix, or a cassette file")
    prune = add("prune", cmd_prune, "remove cassettes: expired, unused, over a cap, or of one model", ttl=True)
    prune.add_argument("--expired", action="store_true", help="remove cassettes older than the TTL")
    prune.add_argument("--unused-since", metavar="DURATION", help="remove cassettes not used for this long")
    prune.add_argument("--unused-in", metavar="REPORT.json",
                       help="remove the cassettes a run's JSON report (--llm-cache-report) listed as unused")
    prune.add_argument("--max-size", metavar="SIZE", help="evict down to this size (500KB, 50MB, 1GB)")
    prune.add_argument("--max-entries", metavar="N", help="evict down to this many cassettes")
    prune.add_argument("--eviction", default="lru", help="order for --max-size/--max-entries: lru, lfu or fifo")
    prune.add_argument("--model", metavar="VERSION", help="only cassettes of this model (version); a glob such as '*+gpt-4o' takes it in every namespace")
    prune.add_argument("--corrupt", action="store_true",
                       help="remove the cassettes a recording moved aside as corrupt (*.yaml.corrupt; a file store)")
    prune.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    verify = add("verify", cmd_verify, "check every cassette: parses, key matches, nothing secret-looking")
    verify.add_argument("--allow", action="append", default=[], metavar="REGEX",
                        help="a secret-looking value that is not a secret (repeatable)")
    warm = add("warm", cmd_warm, "make sure each request of a YAML/JSONL file is cached and fresh", ttl=True,
               store="store URL (default: file://DIR)")
    warm.add_argument("file", help="requests: a YAML list or JSONL of {url or path, json, method, headers}")
    warm.add_argument("--base-url", help="prefix for requests given by path, like https://api.openai.com/v1")
    warm.add_argument("--mode", default="record", help="record (default), refresh, or replay to only check")
    warm.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                      help="a header for every request; ${VAR} is read from the environment")
    upgrade = add("upgrade", cmd_upgrade, f"rewrite older cassette files in format {FORMAT_VERSION}, in place, keys "
                  "unchanged (a cassette directory only)", store="file://PATH only: upgrade rewrites files")
    upgrade.add_argument("--dry-run", action="store_true", help="say what would be upgraded, write nothing")
    diff = add("diff", cmd_diff, "field-level differences of two cassettes (two files need no store)")
    diff.add_argument("a", help="key prefix or file")
    diff.add_argument("b", help="key prefix or file")
    diff.add_argument("--exit-code", action="store_true",
                      help="exit 1 when the two differ, 0 when they do not (as git diff --exit-code)")
    report = add("report", cmd_report, "the inventory of a store as an HTML report (or JSON), without a test run",
                 ttl=True)
    report.add_argument("--html", metavar="PATH", help="write the HTML report here (required unless --json)")
    parser.commands = dict(sub.choices)
    return parser


def _say(line: str) -> None:
    """A line on stderr, any secret in it redacted (an error may quote a stored cassette)."""
    from ..redact import masked

    print(masked(line), file=sys.stderr)


def _warning_line(command: str) -> Callable[..., None]:
    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        _say(f"llm-cache {command}: warning: {message}")

    return show


def _quiet_stdout() -> None:
    """Point stdout at the null device, so that its flush at exit does not fail again (the
    way the Python documentation gives for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (an embedding, a test's capture)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 problem found, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):  # bad usage: said with the form, exit 2
        parser.error("a command is needed; llm-cache --help lists them")
    try:
        with warnings.catch_warnings():
            # what the store could not keep (a scan index on a read-only checkout): one line each
            warnings.showwarning = _warning_line(args.command)
            return int(args.func(args))
    except UsageError as exc:
        _say(f"llm-cache {args.command}: error: {exc}")
        return USAGE
    except Problem as exc:
        _say(f"llm-cache {args.command}: {exc}")
        return PROBLEM
    except ConfigError as exc:
        _say(f"llm-cache {args.command}: error: {exc}")
        return USAGE
    except StoreUnavailable as exc:
        _say(f"llm-cache {args.command}: {str(exc).splitlines()[0]}")
        return PROBLEM
    except BrokenPipeError:  # `llm-cache ls | head`: the reader has what it wanted; nothing to say
        _quiet_stdout()
        # and no failure: whether the pipe closed before the output ended is a race, which
        # would fail a script run with `set -o pipefail` now and then
        return 0
    except OSError as exc:  # a file system that refuses (read-only, permissions, full): said, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        _say(f"llm-cache {args.command}: {where}{exc.strerror or exc}")
        return PROBLEM


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
