"""Exceptions raised by llm_cache.

Each carries its data as attributes, builds its message from them, and
pickles (pytest-xdist sends exceptions between processes).
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["LLMCacheError", "CacheMiss", "CassetteError", "ConfigError", "StoreUnavailable", "LLMCacheWarning"]


class LLMCacheError(Exception):
    """Base class of every error raised by llm_cache."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the constructor's keyword arguments (kept as attributes),
        # then restore anything else set later, such as PEP 678 notes.
        names = inspect.signature(type(self).__init__).parameters
        state = dict(self.__dict__)
        kwargs = {name: state.pop(name) for name in list(state) if name in names}
        return (_rebuild, (type(self), kwargs, state))


def _rebuild(cls: type[LLMCacheError], kwargs: dict[str, Any], extra: dict[str, Any]) -> LLMCacheError:
    error = cls(**kwargs)
    error.__dict__.update(extra)
    return error


class ConfigError(LLMCacheError, ValueError):
    """A setting has a value of the wrong form.

    ``setting`` names where it came from (``--llm-cache-ttl``, ``llm_cache_ttl``,
    ``@pytest.mark.llm_cache(ttl=...)``), ``expected`` the form it must take.
    """

    def __init__(self, *, setting: str, value: object, expected: str) -> None:
        self.setting = setting
        self.value = value
        self.expected = expected
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.setting} must be {self.expected}, got {self.value!r}"


class CassetteError(LLMCacheError):
    """A cassette file cannot be read, parsed or validated."""

    def __init__(self, *, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return (
            f"cassette {self.path} is unusable: {self.reason}\n"
            "Delete it, or re-record it with --llm-cache=record "
            "(record and refresh move a corrupt cassette aside to <name>.corrupt)."
        )


class CacheMiss(LLMCacheError):
    """A request has no cassette and the mode does not allow recording it."""

    def __init__(
        self,
        *,
        method: str,
        endpoint: str,
        model: str | None,
        key: str,
        path: str,
        mode: str,
        test_id: str | None = None,
        closest_path: str | None = None,
        differences: list[str] | None = None,
    ) -> None:
        self.method = method
        self.endpoint = endpoint
        self.model = model
        self.key = key
        self.path = path
        self.mode = mode
        self.test_id = test_id
        self.closest_path = closest_path
        self.differences = list(differences or [])
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [
            f"no cassette for {self.method} {self.endpoint} (model {self.model or '-'}) "
            f"in {self.mode} mode",
            f"  key:       {self.key}",
            f"  looked in: {self.path}",
        ]
        if self.closest_path is None:
            lines.append("  closest:   no stored request for this model and endpoint")
        else:
            lines.append(f"  closest:   {self.closest_path}")
            shown = self.differences[:10]
            more = len(self.differences) - len(shown)
            lines.append(
                "  differs in: " + ", ".join(shown) + (f" (+{more} more)" if more > 0 else "")
            )
        lines.append("  fix: record it with --llm-cache=record (or LLM_CACHE_MODE=record)")
        return "\n".join(lines)


class StoreUnavailable(LLMCacheError):
    """The store cannot be reached (a Redis server down, slow, or refusing)."""

    def __init__(self, *, url: str, reason: str, timeout: float | None = None) -> None:
        self.url = url
        self.reason = reason
        self.timeout = timeout
        super().__init__(str(self))

    def __str__(self) -> str:
        within = f" within {self.timeout:g} s" if self.timeout is not None else ""
        return (
            f"cache store {self.url} is unavailable{within}: {self.reason}\n"
            "Start it, or choose another store with --llm-cache-store (file://cassettes, memory://)."
        )


class LLMCacheWarning(UserWarning):
    """Something was recovered from, and the user should know (a corrupt cassette moved aside)."""
