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
import sysconfig
from functools import lru_cache
from typing import Any

from ..errors import LLMCacheError

__all__ = ["trim"]


@lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    """The directories of installed code: the standard library and site-packages."""
    paths = sysconfig.get_paths()
    roots = {os.path.normcase(os.path.abspath(paths[name])) for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths}
    roots.add(os.path.normcase(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # llm_cache
    return tuple(sorted(root.rstrip(os.sep) + os.sep for root in roots))


def _is_library(path: Any) -> bool:
    return os.path.normcase(os.path.abspath(str(path))).startswith(_library_roots())


def trim(excinfo: Any, keep_all: bool) -> bool:
    """Cut the traceback of a failure the cache raised after the last frame of the
    project's code; True when it was cut. Any other failure is left as it is.

    The frames are cut from the exception's own traceback (pytest rebuilds what it shows
    from that), so what runs after the report sees them cut too: ``keep_all`` (set under
    ``--fulltrace`` and ``--pdb``) keeps every frame."""
    if keep_all or excinfo is None or not isinstance(excinfo.value, LLMCacheError):
        return False
    last = None
    tb = excinfo.tb
    while tb is not None:
        if not _is_library(tb.tb_frame.f_code.co_filename):
            last = tb
        tb = tb.tb_next
    if last is None or last.tb_next is None:
        return False  # raised in the project's code, or no frame of it to stop at
    last.tb_next = None
    excinfo.traceback = type(excinfo.traceback)(excinfo.tb)  # pytest's view, built again
    return True
