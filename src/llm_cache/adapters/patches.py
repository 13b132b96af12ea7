"""Patching once per process: the transports stay patched while anything needs them.

The pytest plugin holds the patches from the first intercepted test to the end of
the session; ``intercept()`` holds them for its block. The first holder installs
them (importing vcrpy and the HTTP clients only then), the last one removes them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..engine import active
from ..modes import Mode

if TYPE_CHECKING:
    from ..engine.scope import Scope

__all__ = ["hold", "intercept", "let_go"]

_guard = threading.Lock()
_holders = 0
_remove: Callable[[], None] | None = None


def hold() -> None:
    """Install the patches unless they are installed; count one more holder."""
    global _holders, _remove
    with _guard:
        if _holders == 0:
            from .vcr import install

            _remove = install()
        _holders += 1


def let_go() -> None:
    """One holder fewer; the last one removes the patches."""
    global _holders, _remove
    with _guard:
        if _holders == 0:
            return
        _holders -= 1
        if _holders == 0 and _remove is not None:
            remove, _remove = _remove, None
            remove()


@contextmanager
def intercept(scope: Scope) -> Iterator[Scope]:
    """Answer the requests of every client the cache can see from ``scope`` for the block.

    A scope in ``off`` mode is active too: inside its block nothing is intercepted,
    even when an outer scope is open; with no outer scope nothing is patched."""
    if scope.mode is Mode.OFF and active.current() is None:
        yield scope
        return
    hold()
    try:
        with active.activated(scope):
            yield scope
    finally:
        scope.close()
        let_go()
