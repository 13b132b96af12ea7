"""The engine: one flow for every request, whichever adapter brought it.

- ``session.CacheSession``: settings, store, memory tier, stats;
- ``claims``: the key's recording lock across threads, tasks and processes;
- ``scope.Scope``: one test's (or block's, or application's) view; ``begin`` decides;
- ``flight.Flight``: serve, forward, record or abandon one request; ``Recording`` tees a stream;
- ``record``: what an answer must pass to be stored;
- ``active``: which scope answers patched requests now;
- ``gate``: single flight for asyncio tasks.
"""

from __future__ import annotations

from .flight import Flight, Recording
from .scope import Scope
from .session import CacheSession, utcnow

__all__ = ["CacheSession", "Flight", "Recording", "Scope", "utcnow"]
