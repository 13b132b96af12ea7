"""The vcrpy seam: vcrpy's transport patches, our O(1) lookup.

vcrpy's stubs (httpx, httpx2, requests/urllib3, aiohttp, ...) talk to a
cassette through five calls: ``can_play_response_for``, ``play_response``,
``write_protected``, ``filter_request`` and ``append``. ``ScopeCassette``
answers them from a ``Scope``: a dict-like lookup by key instead of vcrpy's
scan over every stored interaction, a write per recorded response instead of
one at exit, and ``CacheMiss`` instead of vcrpy's generic error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vcr.cassette import Cassette, CassetteContextDecorator
from vcr.record_mode import RecordMode

from .modes import Mode
from .session import Scope

__all__ = ["ScopeCassette", "intercept"]


class ScopeCassette(Cassette):  # type: ignore[misc]
    """A vcrpy cassette that delegates every question to a Scope."""

    def __init__(self, path: str, scope: Scope, **kwargs: Any) -> None:
        super().__init__(path, record_mode=RecordMode.NEW_EPISODES, **kwargs)
        self.scope = scope

    def _load(self) -> None:
        """Nothing to load: entries are read by key when a request asks for one."""

    def _save(self, force: bool = False) -> None:
        """Nothing to save: each recorded response was written when it arrived."""

    def can_play_response_for(self, request: Any) -> bool:
        __tracebackhide__ = True
        return self.scope.can_serve(request)

    def play_response(self, request: Any) -> dict[str, Any]:
        return self.scope.serve(request)

    @property
    def write_protected(self) -> bool:
        return self.scope.mode is Mode.REPLAY

    def filter_request(self, request: Any) -> Any:
        # vcrpy asks this only of write-protected cassettes, right before it
        # would raise its own error for an unplayable request: raise ours.
        __tracebackhide__ = True
        if self.scope.mode is Mode.REPLAY:
            self.scope.refuse(request)
        return request

    def append(self, request: Any, response: Any) -> None:
        self.scope.record(request, response)

    def __len__(self) -> int:
        return 0

    def __contains__(self, request: Any) -> bool:
        return self.scope.can_serve(request)


@contextmanager
def intercept(scope: Scope) -> Iterator[Scope]:
    """Patch the HTTP clients vcrpy knows for the duration, answering from ``scope``."""
    if scope.mode is Mode.OFF:
        yield scope
        return
    label = str(scope.session.store).replace(" ", "")
    try:
        with CassetteContextDecorator.from_args(ScopeCassette, path=label, scope=scope):
            yield scope
    finally:
        scope.close()
