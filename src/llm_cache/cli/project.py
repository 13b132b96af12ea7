"""The project's pytest configuration, found and read as pytest finds and reads it.

A command given neither ``--dir`` nor ``--store`` works on the store the project's test run
uses: ``llm_cache_store`` or ``llm_cache_dir`` (taken from the rootdir, as the plugin takes
them) of the configuration pytest would use when run from the working directory;
``llm_cache_ttl`` is then the TTL unless ``--ttl`` is given, ``llm_cache_secret_allowlist``
adds to ``verify --allow``, and ``llm_cache_max_cassette_size`` is the largest cassette read. The file's ``addopts`` count as in a test run: the plugin's flags
there win over the ini values, and ``-o name=value`` there overrides them. With ``--dir`` or
``--store`` nothing is read: the flags name a store, and its settings are the flags'.

The rootdir is found as pytest finds it: the first directory, from here upward, holding a
file that configures pytest (``pytest.toml``, ``.pytest.toml``, ``pytest.ini``,
``.pytest.ini`` always; ``pyproject.toml`` with a ``[tool.pytest]`` table, ``tox.ini`` with
``[pytest]``, ``setup.cfg`` with ``[tool:pytest]``); else the first ``pyproject.toml``
(pytest takes it as the configuration file, empty); else the first directory with a
``setup.py``; else the working directory itself (``./cassettes``).
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

from .common import UsageError

__all__ = ["CONFIG_NAMES", "Project", "Setting", "find_project", "project_of", "shown"]

#: Looked for in each directory from the working directory upward, in pytest's order.
CONFIG_NAMES = ("pytest.toml", ".pytest.toml", "pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")
_KEYS = {"dir": "llm_cache_dir", "store": "llm_cache_store", "ttl": "llm_cache_ttl",
         "allow": "llm_cache_secret_allowlist", "cassette_size": "llm_cache_max_cassette_size"}
_LISTS = {"allow"}  # pytest's linelist: a list in TOML, lines in an ini file
_FLAGS = {"--llm-cache-dir": "dir", "--llm-cache-store": "store", "--llm-cache-ttl": "ttl"}
_NEEDS_NOTHING = "--dir DIR and --ttl AGE need no configuration"


@final
@dataclass(frozen=True)
class Setting:
    """One value and where it was read, as messages name it (``llm_cache_dir in pytest.ini``)."""

    value: Any
    origin: str


@final
@dataclass(frozen=True)
class Project:
    """The configuration file (None: a rootdir pytest takes without one), the rootdir, and
    the settings the commands use."""

    config: Path | None
    root: Path
    settings: dict[str, Setting] = field(default_factory=dict)

    def get(self, name: str) -> Setting | None:
        return self.settings.get(name)

    @property
    def shown(self) -> str:
        """The file that made the rootdir, as messages name it: the configuration, or a setup.py."""
        return shown(self.config if self.config is not None else self.root / "setup.py")


def project_of(args: argparse.Namespace) -> Project | None:
    """The project of the working directory, found once per command (kept on ``args``), or
    None when ``--dir`` or ``--store`` is given: the flags' store has no settings of ours."""
    if getattr(args, "dir", None) is not None or getattr(args, "store", None) is not None:
        return None
    cached = vars(args)
    if "_project" not in cached:
        cached["_project"] = find_project()
    return cached["_project"]  # type: ignore[no-any-return]


def find_project(start: Path | None = None) -> Project | None:
    """The project pytest would see when run from ``start`` (the working directory), or None
    when it would take ``start`` itself as the rootdir, with no configuration.

    A file pytest would refuse (it cannot be parsed, or its tables are wrong) is bad usage
    naming it (exit 2), as it stops pytest too."""
    here = (start or Path.cwd()).absolute()
    pyproject: Path | None = None
    for directory in (here, *here.parents):
        for name in CONFIG_NAMES:
            path = directory / name
            if not path.is_file():
                continue
            loaded = _LOADERS[name](path)
            if loaded is not None:
                return Project(path, directory, _settings(*loaded, shown(path)))
            if name == "pyproject.toml" and pyproject is None:
                pyproject = path
    if pyproject is not None:
        return Project(pyproject, pyproject.parent)
    for directory in (here, *here.parents):
        if (directory / "setup.py").is_file():
            return Project(None, directory)
    return None


def shown(path: Path) -> str:
    """A path as messages show it: from the working directory when under it, else whole."""
    path = Path(os.path.normpath(path))
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _settings(values: dict[str, Any], native: bool, where: str) -> dict[str, Setting]:
    """The settings of one file: ini values, then ``-o`` overrides in its addopts, then the
    plugin's flags there (the last of each kind wins, as in argparse). Empty values count as
    unset, as the plugin counts them. ``native``: TOML values, which keep their types (a
    list setting must be a list), not an ini file's strings."""
    out: dict[str, Setting] = {}
    for name, key in _KEYS.items():
        if key in values:
            _put(out, name, values[key], f"{key} in {where}", native)
    flags: dict[str, Setting] = {}
    words = _addopts(values.get("addopts"), where)
    for index, word in enumerate(words):
        following = words[index + 1] if index + 1 < len(words) else None
        flag, sep, value = word.partition("=")
        if flag in _FLAGS and (sep or following is not None):
            _put(flags, _FLAGS[flag], value if sep else following, f"{flag} in the addopts of {where}")
            continue
        override = _override(word, following)
        if override is not None:
            key, _, value = override.partition("=")
            target = next((n for n, k in _KEYS.items() if k == key.strip()), None)
            if target is not None:
                out.pop(target, None)
                _put(out, target, value, f"-o {key.strip()} in the addopts of {where}")
    out.update(flags)
    return out


def _put(out: dict[str, Setting], name: str, value: Any, origin: str, native: bool = False) -> None:
    if name in _LISTS:
        if isinstance(value, str) and not native:
            value = value.splitlines()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{origin} must be a list of strings, got {_kind(value)}")
    elif not isinstance(value, str):
        raise UsageError(f"{origin} must be a string, got {_kind(value)}")
    if value == "" or value == []:
        out.pop(name, None)  # unset, as pytest's empty value is to the plugin
    else:
        out[name] = Setting(value, origin)


def _override(word: str, following: str | None) -> str | None:
    """``name=value`` of ``-o name=value``, ``-oname=value``, ``--override-ini[=]name=value``."""
    if word in ("-o", "--override-ini"):
        return following
    for prefix in ("--override-ini=", "-o"):
        if word.startswith(prefix) and len(word) > len(prefix):
            return word[len(prefix):]
    return None


def _addopts(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:  # an unclosed quote
            raise UsageError(f"addopts in {where} cannot be split into arguments: {exc}") from None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise UsageError(f"addopts in {where} must be a string or a list of strings, got {_kind(value)}")


def _kind(value: object) -> str:
    """What a value of the wrong type is, without the value: it may hold a store's password."""
    if isinstance(value, list):
        kinds = sorted({type(v).__name__ for v in value})
        return f"a list of {', '.join(kinds)}" if kinds else "an empty list"
    return f"a TOML {type(value).__name__}" if not isinstance(value, str) else "a string"


# -- reading each kind of file -------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"the pytest configuration {shown(path)} cannot be read: {exc} ({_NEEDS_NOTHING})") from None


def _bad(path: Path, why: str) -> UsageError:
    return UsageError(f"the pytest configuration {shown(path)} {why} ({_NEEDS_NOTHING})")


Loaded = tuple[dict[str, Any], bool]  # the values, and whether they are native TOML ones


def _ini(path: Path, section: str, always: bool = False) -> Loaded | None:
    import iniconfig

    try:
        parsed = iniconfig.IniConfig(str(path), data=_read(path))
    except iniconfig.ParseError as exc:
        raise _bad(path, f"cannot be parsed: {exc}") from None
    if section in parsed:
        return dict(parsed[section].items()), False
    if path.name == "setup.cfg" and "pytest" in parsed:
        raise _bad(path, "has a [pytest] section, which pytest no longer reads in setup.cfg: name it [tool:pytest]")
    return ({}, False) if always else None


def _toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - the backport pytest itself needs there
        import tomli as tomllib
    try:
        return tomllib.loads(_read(path))
    except tomllib.TOMLDecodeError as exc:
        raise _bad(path, f"cannot be parsed: {exc}") from None


def _pytest_toml(path: Path) -> Loaded:
    document = _toml(path)
    table = document.get("pytest")
    if isinstance(table, dict):
        return dict(table), True
    top = [key for key, value in document.items() if not isinstance(value, dict)]
    if top:
        raise _bad(path, f"has options outside a [pytest] table ({', '.join(top)})")
    return {}, True


def _pyproject(path: Path) -> Loaded | None:
    tool = _toml(path).get("tool")
    table = tool.get("pytest") if isinstance(tool, dict) else None
    if not isinstance(table, dict):
        return None
    native = {k: v for k, v in table.items() if k != "ini_options"}
    ini = table.get("ini_options")
    if native and ini is not None:
        raise _bad(path, "has both [tool.pytest] and [tool.pytest.ini_options]: pytest reads one of them")
    if native:  # [tool.pytest]: native TOML values (pytest 9)
        return native, True
    if not isinstance(ini, dict):
        return None
    # [tool.pytest.ini_options]: scalars as strings, as pytest reads them
    return {k: v if isinstance(v, list) else str(v) for k, v in ini.items()}, False


_LOADERS: dict[str, Callable[[Path], Loaded | None]] = {
    "pytest.toml": _pytest_toml,
    ".pytest.toml": _pytest_toml,
    "pytest.ini": lambda p: _ini(p, "pytest", always=True),
    ".pytest.ini": lambda p: _ini(p, "pytest", always=True),
    "pyproject.toml": _pyproject,
    "tox.ini": lambda p: _ini(p, "pytest"),
    "setup.cfg": lambda p: _ini(p, "tool:pytest"),
}
