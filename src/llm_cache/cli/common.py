"""What the commands share: exit codes, errors that carry them, parsing flags, tables."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import ConfigError
from ..settings import DEFAULT_TTL
from ..values import parse_duration

OK, PROBLEM, USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments: exit status 2."""


class Problem(Exception):
    """The command found a problem: exit status 1."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _age(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "?"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _parse(parser: Callable[[object, str], Any], value: object, flag: str) -> Any:
    try:
        return parser(value, flag)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _ttl(args: argparse.Namespace) -> timedelta | None:
    """``--ttl``, else the project's ``llm_cache_ttl`` (a bad one named with its file), else 30d."""
    from .project import project_of

    given: tuple[object, str] | None = (args.ttl, "--ttl") if args.ttl is not None else None
    if given is None:
        project = project_of(args)
        setting = project.get("ttl") if project is not None else None
        given = (setting.value, setting.origin) if setting is not None else None
    ttl: timedelta | None = _parse(parse_duration, *given) if given is not None else DEFAULT_TTL
    return ttl


def _words(text: str, count: int = 8) -> str:
    words = text.split()
    return " ".join(words[:count]) + (" ..." if len(words) > count else "")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print a command's output, any secret in it redacted: a stored cassette may hold one
    that no recording put there (a hand edit, another tool's file); ``verify`` names it."""
    from ..redact import masked

    if getattr(args, "json", False):  # each string masked as it is, before JSON escapes it
        print(json.dumps(_masked_data(json.loads(json.dumps(data, default=str)), masked), indent=2))
    else:
        print(masked(text))


def _masked_data(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [_masked_data(v, mask) for v in value]
    if isinstance(value, dict):
        return {mask(k): _masked_data(v, mask) for k, v in value.items()}
    return value


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _not_cassettes(foreign: int) -> str:
    return f"\n({_plural(foreign, 'file')} under it not cassettes, left alone: llm-cache verify lists them)" if foreign else ""
