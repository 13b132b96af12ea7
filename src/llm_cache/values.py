"""Parsers of setting values that import nothing of ours: durations, sizes, counts, booleans,
choices, lists, regexes, mappings and prices.

A leaf module, so that settings, stores and the CLI can all use it without an
import circle. Every parser raises ``ConfigError`` naming the setting and the form.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import timedelta

from .errors import ConfigError

__all__ = [
    "DEFAULT_MAX_CASSETTE_BYTES",
    "DEFAULT_TTL",
    "DURATION_FORM",
    "MAX_DURATION",
    "SIZE_FORM",
    "STORE_FORM",
    "STORE_URL",
    "format_age",
    "format_duration",
    "parse_bool",
    "parse_choice",
    "parse_count",
    "parse_duration",
    "parse_lines",
    "parse_mapping",
    "parse_prices",
    "parse_regexes",
    "parse_seconds",
    "parse_size",
    "parse_warm",
]

# The largest cassette recorded or read unless llm_cache_max_cassette_size says otherwise.
DEFAULT_MAX_CASSETTE_BYTES = 64 * 1024 * 1024
# How old a cassette may be before it is stale, unless a setting says otherwise.
DEFAULT_TTL = timedelta(days=30)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*$", re.IGNORECASE)
DURATION_FORM = "a duration like 90s, 30m, 12h, 30d or 2w, or 'never'"
# Longer is 'never' in practice; the bound keeps dates computed from it (recorded_at + ttl) valid.
MAX_DURATION = timedelta(days=36500)
_TOO_LONG = "a duration of at most 36500d (100 years), or 'never'"
# 0s has the form and not the sense: everything would be stale at once
_ZERO = "a duration above 0 (90s, 30m, 12h, 30d or 2w), or 'never' for cassettes that never expire"
# Longer waits are no wait anyone means, and threading refuses timeouts beyond ~292 years.
MAX_SECONDS = 86400.0
_SECONDS_FORM = "a number of seconds or a duration like 30s or 2m"
# Sizes and counts beyond these are typos; they also keep int() away from huge inputs.
MAX_SIZE = 2**60
MAX_COUNT = 10**15


def parse_duration(value: object, setting: str) -> timedelta | None:
    """A duration; ``never`` (or ``none``) gives None: cassettes never expire."""
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise ConfigError(setting=setting, value=value, expected=_ZERO)
        if value > MAX_DURATION:
            raise ConfigError(setting=setting, value=value, expected=_TOO_LONG)
        return value
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # from Python: seconds
        if not value > 0:  # NaN too
            raise ConfigError(setting=setting, value=value, expected=_ZERO)
        if value > MAX_DURATION.total_seconds():
            raise ConfigError(setting=setting, value=value, expected=_TOO_LONG)
        return timedelta(seconds=value)
    text = str(value).strip().lower()
    if text in ("never", "none", "inf"):
        return None
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(setting=setting, value=value, expected=DURATION_FORM)
    if float(match.group(1)) <= 0:
        raise ConfigError(setting=setting, value=value, expected=_ZERO)
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not seconds <= MAX_DURATION.total_seconds():
        raise ConfigError(setting=setting, value=value, expected=_TOO_LONG)
    return timedelta(seconds=seconds)


def parse_seconds(value: object, setting: str) -> float:
    """A number of seconds, or a duration like 30s or 2m; 0 is allowed (do not wait)."""
    if isinstance(value, bool):
        raise ConfigError(setting=setting, value=value, expected=_SECONDS_FORM)
    if isinstance(value, timedelta):
        return _seconds(value.total_seconds(), value, setting)
    if isinstance(value, (int, float)):
        return _seconds(float(value), value, setting)
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        match = _DURATION.match(text.lower())
        if not match:
            raise ConfigError(setting=setting, value=value, expected=_SECONDS_FORM) from None
        number = float(match.group(1)) * _UNITS[match.group(2).lower()]
    return _seconds(number, value, setting)


def _seconds(number: float, value: object, setting: str) -> float:
    if number < 0:
        raise ConfigError(setting=setting, value=value, expected="a number of seconds of 0 or more")
    if not number <= MAX_SECONDS:  # also nan
        raise ConfigError(setting=setting, value=value, expected="a number of seconds from 0 to 86400 (a day)")
    return number


def format_duration(value: timedelta | None) -> str:
    """The shortest of the forms parse_duration reads."""
    if value is None:
        return "never"
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:f}".rstrip("0").rstrip(".") + "s"


def format_age(seconds: float) -> str:
    """An age for people: its largest whole unit of d, h, m or s (``45d``, ``3h``, ``12s``)."""
    whole = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"


_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
SIZE_FORM = "a size like 500KB, 50MB or 1GB (KB = 1000 bytes, KiB = 1024)"


def parse_size(value: object, setting: str) -> int | None:
    """A number of bytes with an optional unit; empty means no cap."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    match = _SIZE.match(str(value))
    if not match:
        raise ConfigError(setting=setting, value=value, expected=SIZE_FORM)
    size = float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
    if size <= 0:
        raise ConfigError(setting=setting, value=value, expected=SIZE_FORM)
    if not 1 <= size <= MAX_SIZE:  # less than a byte, or more than an exbibyte
        raise ConfigError(setting=setting, value=value, expected="a size from 1 byte to 1EiB")
    return int(size)


def parse_count(value: object, setting: str) -> int | None:
    """A positive whole number; empty means no cap."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip().replace("_", "").replace(",", "")
    # ASCII digits only (str.isdigit takes '²', which int() refuses), and not thousands of them
    if not re.fullmatch(r"[0-9]+", text) or not text.strip("0"):
        raise ConfigError(setting=setting, value=value, expected="a whole number above 0, like 1000")
    digits = text.lstrip("0")
    if len(digits) > 16 or int(digits) > MAX_COUNT:
        raise ConfigError(setting=setting, value=value, expected="a whole number from 1 to 10**15")
    return int(digits)


def parse_bool(value: object, setting: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(setting=setting, value=value, expected="true or false")


STORE_FORM = "a store URL: file://PATH, memory://, redis://host:port/db or redis+cluster://host:port,host:port/"
#: What a store setting must begin with (``--llm-cache-store``, ``llm_cache_store``).
STORE_URL = re.compile(r"^(file|memory|redis|rediss|unix|redis\+cluster|rediss\+cluster)://")


def parse_choice(value: object, setting: str, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise ConfigError(setting=setting, value=value, expected="one of " + "|".join(choices))
    return text


def parse_warm(value: object, setting: str) -> tuple[str, ...] | None:
    """``all`` (or true): every model version; a list of model versions; empty or false: none."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).replace(",", "\n").splitlines()
    names = [str(v).strip() for v in items if str(v).strip()]
    if not names or (len(names) == 1 and names[0].lower() in ("false", "no", "off", "0", "none")):
        return None
    if len(names) == 1 and names[0].lower() in ("all", "true", "yes", "on", "1", "*"):
        return ()
    return tuple(names)


def parse_lines(value: object, setting: str) -> tuple[str, ...]:
    """Dotted field paths, one a line (or a list of them)."""
    if value is None:
        return ()
    items: Iterable[object]
    if isinstance(value, str):
        items = value.splitlines()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise ConfigError(setting=setting, value=value, expected="a list of dotted field paths")
    out = []
    for item in items:
        text = str(item).strip()
        if not isinstance(value, str) and not text:  # in a list, a blank path is a mistake, not a comment
            raise ConfigError(setting=setting, value=item, expected="dotted field paths like metadata.run_id")
        if not text or text.startswith("#"):
            continue
        if not re.fullmatch(r"[^\s.]+(\.[^\s.]+)*", text):
            raise ConfigError(
                setting=setting, value=item, expected="dotted field paths like metadata.run_id"
            )
        if text == "model":  # it names the model version: the cassette's directory and part of its key
            raise ConfigError(setting=setting, value=item, expected="fields other than model, which names the "
                              "cassette directory (pin a version with model_version= instead)")
        out.append(text)
    return tuple(out)


def parse_regexes(value: object, setting: str) -> tuple[str, ...]:
    """Regular expressions, one a line."""
    if value is None:
        return ()
    lines = value if isinstance(value, (list, tuple)) else str(value).splitlines()
    out = []
    for line in lines:
        text = str(line).strip()
        if not text:
            continue
        try:
            re.compile(text)
        except (re.error, OverflowError, RecursionError) as exc:  # a{99999999999} overflows
            raise ConfigError(setting=setting, value=line, expected=f"a regular expression ({exc})") from None
        out.append(text)
    return tuple(out)


def parse_prices(value: object, setting: str) -> dict[str, tuple[float, float]]:
    """Lines ``model = input, output``: dollars per million tokens."""
    out: dict[str, tuple[float, float]] = {}
    for name, text in parse_mapping(value, setting).items():
        parts = [p.strip().lstrip("$") for p in text.split(",")]
        try:
            if len(parts) != 2:
                raise ValueError
            inp, outp = float(parts[0]), float(parts[1])
            if not (0 <= inp < math.inf and 0 <= outp < math.inf):  # also nan
                raise ValueError
        except ValueError:
            raise ConfigError(
                setting=setting, value=f"{name} = {text}",
                expected="lines 'model = input, output' in dollars per million tokens, e.g. gpt-4o = 2.50, 10.00",
            ) from None
        out[name] = (inp, outp)
    return out


def parse_mapping(value: object, setting: str) -> dict[str, str]:
    """Lines ``alias = version`` (or a dict)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    lines = value if isinstance(value, (list, tuple)) else str(value).splitlines()
    out: dict[str, str] = {}
    for line in lines:
        text = str(line).strip()
        if not text or text.startswith("#"):
            continue
        name, sep, version = text.partition("=")
        if not sep or not name.strip() or not version.strip():
            raise ConfigError(
                setting=setting, value=line, expected="lines 'alias = version', e.g. gpt-4o = 2024-08-06"
            )
        out[name.strip()] = version.strip()
    return out
