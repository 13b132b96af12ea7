"""The ``@pytest.mark.llm_cache(...)`` marker's arguments, validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from .errors import ConfigError
from .modes import Mode
from .settings import parse_mode
from .values import parse_duration, parse_lines, parse_mapping

__all__ = ["MARKER_ARGS", "MarkerOptions", "parse_marker"]


@dataclass(frozen=True)
class MarkerOptions:
    """The keyword arguments of ``@pytest.mark.llm_cache(...)``, validated."""

    mode: Mode | None = None
    ttl: timedelta | None | object = ...  # ... when not given; None means never expire
    model_version: str | dict[str, str] | None = None
    ignore_fields: tuple[str, ...] = ()
    sequence: bool = False


MARKER_ARGS = ("mode", "ttl", "model_version", "ignore_fields", "sequence")


def parse_marker(args: tuple[object, ...], kwargs: Mapping[str, object]) -> MarkerOptions:
    """Check a marker's arguments; a typo is a ConfigError listing what it takes."""
    where = "@pytest.mark.llm_cache"
    if args:
        raise ConfigError(setting=where, value=args, expected="keyword arguments only: " + ", ".join(MARKER_ARGS))
    unknown = sorted(set(kwargs) - set(MARKER_ARGS))
    if unknown:
        import difflib

        near = difflib.get_close_matches(unknown[0], MARKER_ARGS, n=1)
        raise ConfigError(  # the name is what is wrong, not its value
            setting=f"{where} argument",
            value=unknown[0],
            expected="one of the arguments " + ", ".join(MARKER_ARGS) + (f" (did you mean {near[0]}?)" if near else ""),
        )
    mode = parse_mode(kwargs["mode"], f"{where}(mode=...)") if "mode" in kwargs else None
    ttl: timedelta | None | object = ...
    if "ttl" in kwargs:
        ttl = parse_duration(kwargs["ttl"], f"{where}(ttl=...)")
    version = kwargs.get("model_version")
    if version is not None and not isinstance(version, (str, dict)):
        raise ConfigError(
            setting=f"{where}(model_version=...)", value=version,
            expected="a version label like '2024-08-06' or a dict {model: version}",
        )
    if isinstance(version, dict):
        version = parse_mapping(version, f"{where}(model_version=...)")
    fields = parse_lines(kwargs.get("ignore_fields"), f"{where}(ignore_fields=...)")
    sequence = kwargs.get("sequence", False)
    if not isinstance(sequence, bool):
        raise ConfigError(setting=f"{where}(sequence=...)", value=sequence, expected="True or False")
    return MarkerOptions(mode=mode, ttl=ttl, model_version=version, ignore_fields=fields, sequence=sequence)
