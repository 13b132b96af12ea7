"""Single flight for asyncio tasks: identical requests wait for the first without blocking the loop.

A task blocked on a file or Redis lock would block its whole event loop, the loop
on which the holder must finish; these gates let tasks wait without that. The
holder is a task object, never an id; a task asking again for a key it holds
itself (two identical streams open at once) passes instead of waiting on itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Gates"]


class _Slot:
    __slots__ = ("failed", "holder", "lock", "waiters")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiters = 0
        self.holder: Any = None
        # how many holders' requests kept no answer (the API failing, an answer not stored):
        # a task that was waiting when one did has nothing to wait for, and goes upstream
        # beside the others instead of in turn; one that comes later waits as usual
        self.failed = 0


async def _acquire(lock: asyncio.Lock, wait: float | None) -> bool:
    """Acquire ``lock`` within ``wait`` seconds: True when held, False when the time ran out.

    The waiting is an inner task's, watched with ``asyncio.wait``: the caller's own task is
    never cancelled for a timeout, so a cancel from outside stays one (on 3.10, which has no
    ``uncancel``, the two could not be told apart), and an inner task that got the lock just
    as the time ran out, or as the caller was cancelled, gives it back."""
    if wait is None:
        await lock.acquire()
        return True
    inner = asyncio.ensure_future(lock.acquire())
    try:
        await asyncio.wait({inner}, timeout=max(wait, 0.0))
    except BaseException:
        _drop(inner, lock)
        raise
    if inner.done() and not inner.cancelled() and inner.exception() is None:
        return True
    _drop(inner, lock)
    return False


def _drop(inner: asyncio.Future[Any], lock: asyncio.Lock) -> None:
    """An acquisition no one waits for any more: cancelled while it waits (``Lock.acquire``
    then hands on a wake-up it got), or, when it got the lock already, the lock released."""
    if inner.cancel():
        return
    if not inner.cancelled() and inner.exception() is None:
        lock.release()


class Gates:
    """One gate per key while any task wants it."""

    def __init__(self) -> None:
        self._slots: dict[tuple[int, str], _Slot] = {}
        self._guard = threading.Lock()

    async def enter(self, key: str, wait: float | None = None) -> Callable[..., None] | None:
        """Wait for the key's gate and return what opens it again (``leave(failed=True)`` when
        no answer was kept); None when this task holds it already, or when the holder before
        kept no answer (then there is nothing to open). Raises ``TimeoutError`` when
        another task held it for ``wait`` seconds (None: no limit)."""
        task = asyncio.current_task()
        name = (id(asyncio.get_running_loop()), key)
        with self._guard:
            slot = self._slots.get(name)
            if slot is None:
                slot = self._slots[name] = _Slot()
            elif task is not None and slot.holder is task:
                return None
            slot.waiters += 1
            failures = slot.failed
        try:
            if not await _acquire(slot.lock, wait):
                raise TimeoutError(f"another task held the gate for {wait:g} s")
        except BaseException:
            self._forget(name, slot)
            raise
        if slot.failed > failures:  # passed on at once: the next waiter is let through as quickly
            slot.lock.release()
            self._forget(name, slot)
            return None
        slot.holder = task
        done = False

        def leave(failed: bool = False) -> None:
            nonlocal done
            if not done:
                done = True
                slot.holder = None
                slot.failed += failed
                slot.lock.release()
                self._forget(name, slot)

        return leave

    def _forget(self, name: tuple[int, str], slot: _Slot) -> None:
        with self._guard:
            slot.waiters -= 1
            if slot.waiters == 0 and self._slots.get(name) is slot:
                del self._slots[name]
