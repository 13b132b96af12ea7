"""Warming a cache from a file of common requests: read and checked whole before any is sent."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .library import LLMCache

__all__ = ["WarmReport", "read_requests", "warm"]

log = logging.getLogger("llm_cache")


@dataclass
class WarmReport:
    """What ``LLMCache.warm`` did with each request of its source."""

    total: int = 0
    fresh: int = 0  # already cached and fresh
    recorded: int = 0
    refreshed: int = 0
    missing: int = 0  # not cached, and the mode does not allow recording
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def warm(
    cache: LLMCache,
    source: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    headers: Mapping[str, str] | None = None,
    transport: Any = None,
    progress: Callable[[int, int], None] | None = None,
    timeout: float | str = 60.0,
) -> WarmReport:
    """``LLMCache.warm``: each request of ``source`` sent through ``cache``."""
    from .library import _default_httpx, _module_of
    from .values import parse_seconds

    timeout = parse_seconds(timeout, "warm(timeout=...)")
    if not timeout > 0:  # 0 would be httpx's "no timeout": a hung API would hold start-up for good
        from .errors import ConfigError

        raise ConfigError(setting="warm(timeout=...)", value=timeout, expected="a number of seconds above 0, like 30")

    requests = read_requests(Path(source))
    if not base_url:
        check_base_url(requests, str(source), "a full url, or base_url= to put before the path")
    check_variables(requests, headers, str(source))
    report = WarmReport(total=len(requests))
    started = time.perf_counter()
    module = _module_of(transport) if transport is not None else _default_httpx()
    client = module.Client(transport=cache.transport(transport, httpx=module), timeout=timeout)
    counts = cache._scope.stats
    try:
        for index, item in enumerate(requests, 1):
            before = (counts.hits, counts.recorded, counts.refreshed)
            try:
                url = item.get("url") or (base_url or "").rstrip("/") + str(item.get("path", ""))
                sent = {**(headers or {}), **(item.get("headers") or {})}
                sent = {k: os.path.expandvars(str(v)) for k, v in sent.items()}
                response = client.request(item.get("method", "POST"), url, json=item.get("json"), headers=sent)
                response.read()
                if response.status_code >= 400:
                    report.failed += 1
                    report.errors.append(f"request {index}: HTTP {response.status_code}")
            except Exception as exc:  # noqa: BLE001 - reported, the next request still runs
                if type(exc).__name__ == "CacheMiss":
                    report.missing += 1
                else:
                    report.failed += 1
                    report.errors.append(f"request {index}: {str(exc).splitlines()[0]}")
            after = (counts.hits, counts.recorded, counts.refreshed)
            report.fresh += after[0] - before[0]
            report.recorded += after[1] - before[1]
            report.refreshed += after[2] - before[2]
            if progress:
                progress(index, len(requests))
    finally:
        client.close()
    report.seconds = time.perf_counter() - started
    log.info("llm_cache: warmed %s: %s", source, report)
    return report


_REQUESTS_FORM = "a list of requests {url or path, json, method, headers}, in YAML or JSONL (one a line)"
_METHOD = re.compile(r"[A-Za-z]{1,20}")


def read_requests(path: Path) -> list[dict[str, Any]]:
    """The requests of a warm file, checked before any is sent; ConfigError names what is wrong."""
    where = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(setting=where, value=f"bytes that are not UTF-8 text (at byte {exc.start})",
                          expected=_REQUESTS_FORM) from None
    except OSError as exc:
        raise ConfigError(setting=where, value=exc.strerror or str(exc), expected=f"a readable file: {_REQUESTS_FORM}") from None
    items: Any
    if path.suffix in (".jsonl", ".ndjson"):
        items = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except ValueError as exc:
                raise ConfigError(setting=f"{where} line {number}", value=line[:80],
                                  expected=f"one JSON object a line ({exc})") from None
            except RecursionError:
                raise ConfigError(setting=f"{where} line {number}", value=line[:80],
                                  expected="one JSON object a line (it nests too deep)") from None
    else:
        import yaml

        try:
            items = yaml.safe_load(text) or []
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(setting=where, value=f"invalid YAML ({at}{problem})", expected=_REQUESTS_FORM) from None
        except (ValueError, RecursionError) as exc:
            raise ConfigError(setting=where, value=f"invalid YAML ({type(exc).__name__})",
                              expected=_REQUESTS_FORM) from None
    if not isinstance(items, list):
        raise ConfigError(setting=where, value=type(items).__name__, expected=_REQUESTS_FORM)
    for index, item in enumerate(items, 1):
        _check_request(item, f"{where} request {index}")
    return items


def check_base_url(requests: list[dict[str, Any]], where: str, expected: str) -> None:
    """Without a base URL, a request given by path cannot be sent: said before any is."""
    for index, item in enumerate(requests, 1):
        if "url" not in item:
            raise ConfigError(setting=f"{where} request {index} path", value=item["path"], expected=expected)


_VARIABLE = re.compile(r"\$\{(\w+)\}")  # the documented form; a lone $ in a token is the token's


def check_variables(requests: list[dict[str, Any]], headers: Mapping[str, str] | None, where: str,
                    environ: Mapping[str, str] = os.environ) -> None:
    """Every ``${VAR}`` of a header must be set: a request is never sent with the text
    ``${VAR}`` in place of a key. Said, with the variable's name, before any is sent."""
    for index, item in enumerate(requests, 1):
        for name, value in {**(headers or {}), **(item.get("headers") or {})}.items():
            for match in _VARIABLE.finditer(str(value)):
                variable = match.group(1)
                if variable not in environ:  # only the ${NAME} is shown, never the rest of the value
                    raise ConfigError(setting=f"{where} request {index} header {name}", value=f"${{{variable}}}",
                                      expected=f"a variable set in the environment ({variable} is not set)")


def _check_request(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise ConfigError(setting=where, value=item, expected="a mapping {url or path, json, method, headers}")
    unknown = sorted(set(map(str, item)) - {"url", "path", "json", "method", "headers"})
    if unknown:
        raise ConfigError(setting=f"{where} field {unknown[0]!r}", value=item[unknown[0]],
                          expected="one of the fields url, path, json, method, headers")
    if "url" not in item and "path" not in item:
        raise ConfigError(setting=where, value=item, expected="a mapping with url, or path (with --base-url)")
    for name in ("url", "path"):
        if name in item and not (isinstance(item[name], str) and item[name].strip()):
            raise ConfigError(setting=f"{where} {name}", value=item[name], expected="a non-empty string")
    method = item.get("method", "POST")
    if not (isinstance(method, str) and _METHOD.fullmatch(method)):
        raise ConfigError(setting=f"{where} method", value=method, expected="an HTTP method like POST or GET")
    headers = item.get("headers")
    if headers is not None and not (
        isinstance(headers, dict)
        and all(isinstance(k, str) and isinstance(v, (str, int, float)) and not isinstance(v, bool)
                for k, v in headers.items())
    ):
        raise ConfigError(setting=f"{where} headers", value=headers, expected="a mapping of header names to strings")
