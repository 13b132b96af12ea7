"""The usage index: when each entry was last used and how often it was hit.

Kept apart from the cassettes so that a hit never rewrites a cassette (git
would show churn): one small JSON file, ``<dir>/.llm-cache/usage.json``,
merged once at session end under a lock. It is derived bookkeeping: a missing
or damaged index is started again, never fatal. The ``.llm-cache`` directory
carries its own ``.gitignore``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from .atomic import write_atomic

__all__ = ["Usage", "UsageIndex", "META_DIR", "ensure_meta_dir"]

log = logging.getLogger("llm_cache")

META_DIR = ".llm-cache"
FORMAT = 1
LOCK_TIMEOUT = 30.0


@dataclass
class Usage:
    """One key's use: ``last_used`` as a POSIX timestamp, ``hits`` served from the cache."""

    last_used: float
    hits: int = 0

    def merged(self, other: Usage) -> Usage:
        return Usage(max(self.last_used, other.last_used), self.hits + other.hits)


def ensure_meta_dir(root: Path) -> Path:
    """``<root>/.llm-cache``, created with a .gitignore that keeps it out of git."""
    meta = root / META_DIR
    if not meta.is_dir():
        meta.mkdir(parents=True, exist_ok=True)
        ignore = meta / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# derived data of pytest-llm-cache: usage index, locks\n*\n")
    return meta


class UsageIndex:
    """The usage index file of one cassette directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / META_DIR / "usage.json"

    def load(self) -> dict[str, Usage]:
        """The index, or an empty one when it is missing or damaged."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}")
            return {key: Usage(float(v[0]), int(v[1])) for key, v in data["keys"].items()}
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            log.warning("usage index %s is damaged (%s); starting it again", self.path, exc)
            return {}

    def update(self, deltas: Mapping[str, Usage], keep: set[str] | None = None) -> dict[str, Usage]:
        """Merge ``deltas`` into the file under its lock; drop keys not in ``keep`` when given."""
        meta = ensure_meta_dir(self.root)
        with FileLock(str(meta / "usage.lock"), timeout=LOCK_TIMEOUT):
            current = self.load()
            for key, usage in deltas.items():
                current[key] = current[key].merged(usage) if key in current else usage
            if keep is not None:
                current = {k: v for k, v in current.items() if k in keep}
            self._write(current)
        return current

    def _write(self, index: Mapping[str, Usage]) -> None:
        data = {"format": FORMAT, "keys": {k: [round(u.last_used, 3), u.hits] for k, u in sorted(index.items())}}
        write_atomic(self.path, json.dumps(data, separators=(",", ":")))
