"""Parsers of setting values that import nothing of ours: durations, sizes, counts, booleans.

A leaf module, so that settings, stores and the CLI can all use it without an
import circle. Every parser raises ``ConfigError`` naming the setting and the form.
"""

from __future__ import annotations

import re
from datetime import timedelta

from .errors import ConfigError

__all__ = [
    "DURATION_FORM",
    "MAX_DURATION",
    "SIZE_FORM",
    "STORE_FORM",
    "format_age",
    "format_duration",
    "parse_bool",
    "parse_count",
    "parse_duration",
    "parse_seconds",
    "parse_size",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*$", re.IGNORECASE)
DURATION_FORM = "a duration like 90s, 30m, 12h, 30d or 2w, or 'never'"
# Longer is 'never' in practice; the bound keeps dates computed from it (recorded_at + ttl) valid.
MAX_DURATION = timedelta(days=36500)
_TOO_LONG = "a duration of at most 36500d (100 years), or 'never'"
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
            raise ConfigError(setting=setting, value=value, expected=DURATION_FORM)
        if value > MAX_DURATION:
            raise ConfigError(setting=setting, value=value, expected=_TOO_LONG)
        return value
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("never", "none", "inf"):
        return None
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(setting=setting, value=value, expected=DURATION_FORM)
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


STORE_FORM = "a store URL: file://PATH, memory:// or redis://host:port/db"
