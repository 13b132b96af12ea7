"""How a test failure the cache raised is shown: down to the test's own line, not the SDK's.

A miss (or a blocked request, a stale or corrupt cassette) is raised from inside an
HTTP transport, fifteen or so frames below the test: the SDK's client, its retry loop,
httpx. pytest would print each of those frames, and to print one it parses the
whole source file it is in (the openai SDK's client module is over 2,000 lines):
about 0.35 s for one failure, so a prompt change that misses 300 tests spent 100 s
before the run could report. The error's own message says everything the frames
would (the request, the key, the cassette looked for, the closest one, the fix), so
the traceback stops at the last frame of the project's code. ``--fulltrace`` (and
``--pdb``, to step through them) keep every frame.
"""

from __future__ import annotations

import os
import site
import sysconfig
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import LLMCacheError

__all__ = ["trim"]

_OURS = os.path.normcase(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + os.sep  # llm_cache
_INSTALLED = {"site-packages", "dist-packages"}


@lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    """The directories of installed code: the standard library, site-packages, user site."""
    paths = sysconfig.get_paths()
    found = [paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths]
    found += getattr(site, "getsitepackages", list)()
    user = getattr(site, "getusersitepackages", lambda: None)()
    if isinstance(user, str):
        found.append(user)
    return tuple(sorted({os.path.normcase(os.path.abspath(root)).rstrip(os.sep) + os.sep for root in found}))


@lru_cache(maxsize=4)
def _project_packages(rootpath: str) -> frozenset[str]:
    """The top-level modules the project itself holds (under its root or ``src/``): code of
    its own even where it is installed, not editable, in site-packages (tox, ``pip install .``)."""
    names: set[str] = set()
    for folder in (Path(rootpath), Path(rootpath, "src")):
        try:
            for child in folder.iterdir():
                if child.suffix == ".py" or (child / "__init__.py").is_file():
                    names.add(child.stem if child.suffix == ".py" else child.name)
        except OSError:
            continue
    names.discard("llm_cache")
    return frozenset(names)


def _is_project(frame: Any, packages: frozenset[str]) -> bool:
    path = os.path.normcase(os.path.abspath(frame.f_code.co_filename))
    if path.startswith(_OURS):
        return False
    if path.startswith(_library_roots()) or not _INSTALLED.isdisjoint(Path(path).parts):
        module = frame.f_globals.get("__name__")
        return isinstance(module, str) and module.partition(".")[0] in packages
    return True


def _cut(tb: Any, packages: frozenset[str]) -> bool:
    """Cut the traceback ``tb`` after its last frame of the project's code; True when cut."""
    last = None
    while tb is not None:
        if _is_project(tb.tb_frame, packages):
            last = tb
        tb = tb.tb_next
    if last is None or last.tb_next is None:
        return False  # raised in the project's code, or no frame of it to stop at
    last.tb_next = None
    return True


def _cut_group(group: BaseException, packages: frozenset[str], depth: int = 0) -> bool:
    """Cut the tracebacks of the cache's errors in an exception group (``asyncio.TaskGroup``,
    anyio), at any depth."""
    cut = False
    for member in getattr(group, "exceptions", ()) if depth < 20 else ():
        if isinstance(member, LLMCacheError):
            cut = _cut(member.__traceback__, packages) or cut
        elif isinstance(getattr(member, "exceptions", None), tuple):
            cut = _cut_group(member, packages, depth + 1) or cut
    return cut


def trim(excinfo: Any, keep_all: bool, rootpath: str | os.PathLike[str]) -> bool:
    """Cut the traceback of a failure the cache raised (or of each of the cache's errors in an
    exception group) after the last frame of the project's code; True when it was cut. Any
    other failure is left as it is, and so is an error of the cache another one wraps.

    The frames are cut from the exception's own traceback (pytest rebuilds what it shows
    from that), so what runs after the report sees them cut too: ``keep_all`` (set under
    ``--fulltrace`` and ``--pdb``) keeps every frame."""
    if keep_all or excinfo is None:
        return False
    value = excinfo.value
    if isinstance(value, LLMCacheError):
        cut = _cut(excinfo.tb, _project_packages(os.fspath(rootpath)))
    elif isinstance(getattr(value, "exceptions", None), tuple):
        cut = _cut_group(value, _project_packages(os.fspath(rootpath)))
    else:
        return False  # any other failure, a skip, an xfail
    if cut:
        excinfo.traceback = type(excinfo.traceback)(excinfo.tb)  # pytest's view, built again
    return cut
