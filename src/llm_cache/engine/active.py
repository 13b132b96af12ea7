"""The scope requests are answered from now: process-wide, so that threads a test starts are covered.

The transports are patched once per process (``adapters.patches``); each patched
call asks ``current()`` and goes straight to the real transport when it is None.
Scopes nest: the most recently opened one that is still open answers (a library
``cache.intercept()`` inside an intercepted test answers for its block).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .scope import Scope

__all__ = ["activated", "current"]

_stack: list[Scope] = []
_guard = threading.Lock()


def current() -> Scope | None:
    """The innermost open scope, or None when no test or block is intercepted."""
    try:
        return _stack[-1]
    except IndexError:
        return None


@contextmanager
def activated(scope: Scope) -> Iterator[Scope]:
    """Make ``scope`` answer every patched request until the block ends."""
    with _guard:
        _stack.append(scope)
    try:
        yield scope
    finally:
        with _guard:
            # not always the top: concurrent scopes may close out of order
            for index in range(len(_stack) - 1, -1, -1):
                if _stack[index] is scope:
                    del _stack[index]
                    break
