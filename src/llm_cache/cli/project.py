"""The project's pytest configuration, found and read as pytest finds and reads it.

A command given neither ``--dir`` nor ``--store`` works on the store the project's test run
uses: ``llm_cache_store`` or ``llm_cache_dir`` (taken from the rootdir, the configuration
file's directory, as the plugin takes it) of the first pytest configuration file found from
the working directory upward; ``llm_cache_ttl`` is the TTL when ``--ttl`` is not given, and
``llm_cache_secret_allowlist`` adds to ``verify --allow``. The plugin's own flags in that
file's ``addopts`` win over its ini values, as they do in a test run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, final

from .common import Problem, UsageError

__all__ = ["CONFIG_NAMES", "Project", "Setting", "find_project", "project_of", "shown"]

#: Looked for in each directory from the working directory upward, in pytest's order; the
#: first that holds pytest configuration is the project's.
CONFIG_NAMES = ("pytest.toml", ".pytest.toml", "pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")
_KEYS = {"dir": "llm_cache_dir", "store": "llm_cache_store", "ttl": "llm_cache_ttl",
         "allow": "llm_cache_secret_allowlist"}
_FLAGS = {"--llm-cache-dir": "dir", "--llm-cache-store": "store", "--llm-cache-ttl": "ttl"}


@final
@dataclass(frozen=True)
class Setting:
    """One value and where it was read, as messages name it (``llm_cache_dir in pytest.ini``)."""

    value: Any
    origin: str


@final
@dataclass(frozen=True)
class Project:
    """The configuration file, its directory (pytest's rootdir) and the settings the commands use."""

    config: Path
    root: Path
    settings: dict[str, Setting] = field(default_factory=dict)

    def get(self, name: str) -> Setting | None:
        return self.settings.get(name)

    @property
    def shown(self) -> str:
        return shown(self.config)


def project_of(args: argparse.Namespace) -> Project | None:
    """The project of the working directory, found once per command (kept on ``args``)."""
    cached = vars(args)
    if "_project" not in cached:
        cached["_project"] = find_project()
    return cached["_project"]  # type: ignore[no-any-return]


def find_project(start: Path | None = None) -> Project | None:
    """The project whose configuration file is nearest ``start`` (the working directory), or None.

    A file that cannot be parsed is bad usage naming it (exit 2), as it stops pytest too."""
    here = (start or Path.cwd()).absolute()
    for directory in (here, *here.parents):
        for name in CONFIG_NAMES:
            path = directory / name
            if not path.is_file():
                continue
            values = _LOADERS[name](path)
            if values is not None:
                return Project(path, directory, _settings(values, shown(path)))
    return None


def shown(path: Path) -> str:
    """A path as messages show it: from the working directory when under it, else whole."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _settings(values: dict[str, Any], where: str) -> dict[str, Setting]:
    out = {name: Setting(values[key], f"{key} in {where}") for name, key in _KEYS.items() if key in values}
    addopts = values.get("addopts")
    words = shlex.split(addopts) if isinstance(addopts, str) else [str(w) for w in addopts or ()]
    for index, word in enumerate(words):  # --flag=value or --flag value; the last one wins, as in argparse
        flag, sep, value = word.partition("=")
        if flag in _FLAGS and (sep or index + 1 < len(words)):
            out[_FLAGS[flag]] = Setting(value if sep else words[index + 1], f"{flag} in the addopts of {where}")
    return out


# -- reading each kind of file -------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Problem(f"could not read the pytest configuration {shown(path)}: {exc}") from None


def _ini(path: Path, section: str, always: bool = False) -> dict[str, Any] | None:
    import iniconfig

    try:
        parsed = iniconfig.IniConfig(str(path), data=_read(path))
    except iniconfig.ParseError as exc:
        raise UsageError(f"the pytest configuration {shown(path)} cannot be parsed: {exc}") from None
    if section in parsed:
        return dict(parsed[section].items())
    return {} if always else None


def _toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - the backport pytest itself needs there
        import tomli as tomllib
    try:
        return tomllib.loads(_read(path))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"the pytest configuration {shown(path)} cannot be parsed: {exc}") from None


def _pytest_toml(path: Path) -> dict[str, Any]:
    table = _toml(path).get("pytest")
    return dict(table) if isinstance(table, dict) else {}


def _pyproject(path: Path) -> dict[str, Any] | None:
    tool = _toml(path).get("tool")
    table = tool.get("pytest") if isinstance(tool, dict) else None
    if not isinstance(table, dict):
        return None
    native = {k: v for k, v in table.items() if k != "ini_options"}
    if native:  # [tool.pytest]: native TOML values (pytest 9)
        return native
    ini = table.get("ini_options")
    return {k: v if isinstance(v, list) else str(v) for k, v in ini.items()} if isinstance(ini, dict) else None


_LOADERS: dict[str, Callable[[Path], dict[str, Any] | None]] = {
    "pytest.toml": _pytest_toml,
    ".pytest.toml": _pytest_toml,
    "pytest.ini": lambda p: _ini(p, "pytest", always=True),
    ".pytest.ini": lambda p: _ini(p, "pytest", always=True),
    "pyproject.toml": _pyproject,
    "tox.ini": lambda p: _ini(p, "pytest"),
    "setup.cfg": lambda p: _ini(p, "tool:pytest"),
}
