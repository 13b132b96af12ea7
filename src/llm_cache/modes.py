"""Where a mode is decided: what to do with one request, given the mode and its cassette.

``decide`` is the whole rule, as a pure function of the mode and the state of
the request's cassette. The interception layer only carries its verdict out.
"""

from __future__ import annotations

import enum

__all__ = ["Mode", "Found", "Action", "decide", "MODES"]


class Mode(str, enum.Enum):
    """How the cache treats a test's requests."""

    REPLAY = "replay"  # serve cassettes only; a miss fails the test
    RECORD = "record"  # serve what exists, record what is missing
    REFRESH = "refresh"  # serve fresh cassettes, re-record expired ones and misses
    OFF = "off"  # no interception at all

    def __str__(self) -> str:
        return self.value


MODES = tuple(m.value for m in Mode)


class Found(enum.Enum):
    """The state of a request's cassette."""

    MISSING = "missing"
    FRESH = "fresh"
    EXPIRED = "expired"


class Action(enum.Enum):
    """What the interception layer does with the request."""

    SERVE = "serve"  # answer from the cassette
    SERVE_STALE = "serve_stale"  # answer from an expired cassette, counted as stale
    RECORD = "record"  # send upstream, write a new cassette
    REFRESH = "refresh"  # send upstream, replace the expired cassette
    FAIL = "fail"  # raise CacheMiss
    PASS = "pass"  # not intercepted


def decide(mode: Mode, found: Found) -> Action:
    """The action for a request whose cassette is ``found`` under ``mode``."""
    if mode is Mode.OFF:
        return Action.PASS
    if found is Found.FRESH:
        return Action.SERVE
    if found is Found.EXPIRED:
        return Action.REFRESH if mode is Mode.REFRESH else Action.SERVE_STALE
    return Action.FAIL if mode is Mode.REPLAY else Action.RECORD
