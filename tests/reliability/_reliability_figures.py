"""The figures of a reliability run, kept for the README: ``LLM_CACHE_RELIABILITY_OUT=figures.json``.

Each test merges its own part into a section of one JSON file (``"crash"``, ``"stress"``),
under a file lock: under pytest-xdist several workers write the same file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from filelock import FileLock

ENV = "LLM_CACHE_RELIABILITY_OUT"


def record_figures(section: str, name: str, figures: dict[str, Any]) -> None:
    """Set ``[section][name]`` in the file named by ``$LLM_CACHE_RELIABILITY_OUT``; nothing when unset."""
    target = os.environ.get(ENV)
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=30):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}
        part = data.get(section)
        if not isinstance(part, dict):
            part = data[section] = {}
        part[name] = figures
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def lock_is_free(path: Path) -> bool:
    """Whether no process holds a lock on the file: the flock of the usage index, or any
    key's byte of the recording lock file (POSIX record locks, which flock cannot see)."""
    import fcntl
    import os

    fd = os.open(str(path), os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the whole file: any byte held elsewhere
        except OSError:
            return False
        fcntl.lockf(fd, fcntl.LOCK_UN)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)
