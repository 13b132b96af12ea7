"""The figures of a cache, kept in plain Python: counters, a lookup-latency histogram, gauges.

A ``Metrics`` is a session listener (see ``stats.Listener``): the session tells it of
each event as it happens, and it counts them per model version and store. The
exporters (Prometheus text, ``prometheus_client``, OpenTelemetry) all read the same
``families()``; ``to_dict()``/``merge()`` carry the figures across pytest-xdist workers.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..redact import mask_url

if TYPE_CHECKING:
    from ..engine.session import CacheSession

__all__ = ["BUCKETS", "COUNTERS", "GAUGES", "Family", "Histogram", "Metrics", "store_label"]

# Upper bounds (seconds) of the lookup-latency buckets: a memory hit takes microseconds, a
# cassette read a millisecond or so, a Redis round trip a few; a second is a store in trouble.
BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)

# event -> (metric name without _total, help, labelled by reason)
COUNTERS: dict[str, tuple[str, str, bool]] = {
    "hit": ("llm_cache_hits", "Requests answered from the cache, stale ones included.", False),
    "miss": ("llm_cache_misses", "Requests refused for want of an entry (replay).", False),
    "stale_served": ("llm_cache_stale_served", "Requests answered from an entry past its TTL.", False),
    "recorded": ("llm_cache_recorded", "Responses fetched upstream and stored as new entries.", False),
    "refreshed": ("llm_cache_refreshed", "Expired entries fetched upstream and stored again.", False),
    "not_stored": ("llm_cache_not_stored", "Responses fetched upstream but not stored, by reason.", True),
    "corrupt": ("llm_cache_corrupt", "Entries found unreadable in the store.", False),
    "store_error": ("llm_cache_store_errors", "Requests the store failed, by reason.", True),
}
# event -> (metric name, help)
GAUGES: dict[str, tuple[str, str]] = {
    "entries": ("llm_cache_entries", "Entries in the store after the last eviction pass."),
    "bytes": ("llm_cache_bytes", "Bytes the store's entries take after the last eviction pass."),
}
LOOKUP = ("llm_cache_lookup_seconds", "Time of the store lookup of a request, in seconds.")

# the counters every series gets, at zero until counted: a dashboard's rate() needs a start
_ZERO_FILLED = tuple(event for event, (_, _, by_reason) in COUNTERS.items() if not by_reason)
_ATTACHING = threading.Lock()
_SERIES = ("model_version", "store")
_REASONED = ("model_version", "store", "reason")


def store_label(session: CacheSession) -> str:
    """The store as the metrics name it: its URL as given or its directory, any password
    masked; a directory under the project's root relative to it (``cassettes``), so that
    checkouts in different places report one series."""
    url = session.settings.store_url
    if url:
        return mask_url(url)
    store = session.store
    root = getattr(store, "root", None)
    if root is not None:
        base = Path(session.settings.root)
        for under, top in ((Path(root), base), (Path(root).resolve(), base.resolve())):
            if under.is_relative_to(top):
                return under.relative_to(top).as_posix() or "."
        return str(root)
    url = getattr(store, "url", None)  # a RedisStore given as an object
    if url:
        return mask_url(str(url))
    if type(store).__name__ == "MemoryStore":
        return "memory://"
    return type(store).__name__


@dataclass
class Histogram:
    """Lookups of one series: ``counts[i]`` fell in bucket ``i`` (the last one: above 1 s)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0  # the sum of the seconds
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, lookups at or below it), ending with (inf, count)."""
        out, running = [], 0
        for bound, n in zip((*BUCKETS, float("inf")), self.counts):
            running += n
            out.append((bound, running))
        return out


@dataclass(frozen=True)
class Family:
    """One metric and its samples, as every exporter renders it.

    ``samples`` are (labels, value) for a counter or a gauge; ``histograms`` are
    (labels, histogram) for the lookup latency. A counter's ``name`` has no ``_total``.
    """

    name: str
    kind: str  # counter, gauge or histogram
    help: str
    event: str
    labels: tuple[str, ...]  # the label names of every sample, in order
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)
    histograms: list[tuple[dict[str, str], Histogram]] = field(default_factory=list)


class Metrics:
    """Counters, a lookup-latency histogram and gauges of a cache, per model version and store.

    Call it as a session listener; read it with ``count()``/``gauge()``, ``prometheus_text()``,
    ``to_prometheus()`` or ``to_otel()``. Thread-safe. ``store`` labels the events it is told.
    """

    def __init__(self, store: str = "-") -> None:
        self.store = store
        self._lock = threading.Lock()
        # (event, model_version, store, reason or "") -> count
        self._counters: dict[tuple[str, str, str, str], int] = {}
        # (model_version, store) -> lookups
        self._lookups: dict[tuple[str, str], Histogram] = {}
        # (event, store) -> value
        self._gauges: dict[tuple[str, str], float] = {}
        # told of each lookup as it is counted (model_version, store, seconds): OpenTelemetry
        self._lookup_hooks: tuple[Callable[[str, str, float], None], ...] = ()

    @classmethod
    def of(cls, session: CacheSession) -> Metrics:
        """The Metrics listening to ``session``, made and attached on the first call."""
        with _ATTACHING:
            for listener in session.stats.listeners:
                if isinstance(listener, Metrics):
                    return listener
            return cls().attach(session)

    def attach(self, session: CacheSession) -> Metrics:
        """Listen to ``session`` (once), labelling its events with its store."""
        self.store = store_label(session)
        if self not in session.stats.listeners:
            session.stats.listeners.append(self)
        return self

    def __call__(self, event: str, model_version: str, reason: str | None = None, value: float | None = None) -> None:
        store = self.store
        if event in COUNTERS:
            key = (event, model_version, store, reason or "")
            with self._lock:
                self._counters[key] = self._counters.get(key, 0) + 1
        elif event == "lookup" and value is not None:
            with self._lock:
                series = self._lookups.get((model_version, store))
                if series is None:
                    series = self._lookups[(model_version, store)] = Histogram()
                series.observe(value)
            for hook in self._lookup_hooks:
                hook(model_version, store, value)
        elif event in GAUGES and value is not None:
            with self._lock:
                self._gauges[(event, store)] = float(value)
        # any other event (refreshed and corrupt are counters) is not a metric yet

    # -- reading ------------------------------------------------------------------

    def count(self, event: str, model_version: str | None = None, reason: str | None = None,
              store: str | None = None) -> int:
        """How many ``event``s (``hit``, ``miss``, ``not_stored``...) were counted, summed over
        the model versions, reasons and stores not given; ``lookup``: the lookups timed."""
        with self._lock:
            if event == "lookup":
                return sum(h.count for (mv, st), h in self._lookups.items()
                           if model_version in (None, mv) and store in (None, st))
            return sum(n for (ev, mv, st, why), n in self._counters.items()
                       if ev == event and model_version in (None, mv) and store in (None, st)
                       and reason in (None, why))

    def gauge(self, name: str, store: str | None = None) -> float | None:
        """The last ``entries`` or ``bytes`` of ``store`` (this listener's by default)."""
        with self._lock:
            return self._gauges.get((name, self.store if store is None else store))

    def families(self) -> list[Family]:
        """Every metric with its current samples, in a fixed order."""
        with self._lock:
            counters = dict(self._counters)
            lookups = {k: Histogram(list(h.counts), h.total, h.count) for k, h in self._lookups.items()}
            gauges = dict(self._gauges)
        series = {(mv, st) for (ev, mv, st, _), _n in counters.items() if ev in _ZERO_FILLED} | set(lookups)
        out: list[Family] = []
        for event, (name, text, by_reason) in COUNTERS.items():
            family = Family(name, "counter", text, event, _REASONED if by_reason else _SERIES)
            if by_reason:
                for (ev, mv, st, why), n in sorted(counters.items()):
                    if ev == event:
                        family.samples.append(({"model_version": mv, "store": st, "reason": why}, n))
            else:
                for mv, st in sorted(series):
                    family.samples.append(({"model_version": mv, "store": st}, counters.get((event, mv, st, ""), 0)))
            out.append(family)
        lookup = Family(LOOKUP[0], "histogram", LOOKUP[1], "lookup", _SERIES)
        for (mv, st), histogram in sorted(lookups.items()):
            lookup.histograms.append(({"model_version": mv, "store": st}, histogram))
        out.append(lookup)
        for event, (name, text) in GAUGES.items():
            family = Family(name, "gauge", text, event, ("store",))
            for (ev, st), value in sorted(gauges.items()):
                if ev == event:
                    family.samples.append(({"store": st}, value))
            out.append(family)
        return out

    # -- exporters ------------------------------------------------------------------

    def prometheus_text(self) -> str:
        """The metrics in the Prometheus text exposition format (no extra needed)."""
        from .text import render

        return render(self.families())

    def to_prometheus(self, registry: Any = None) -> Any:
        """Register a collector of these metrics on ``registry`` (default
        ``prometheus_client.REGISTRY``) and return it (``registry.unregister`` takes it off).
        Needs ``pip install 'pytest-llm-cache[prometheus]'``."""
        from .prometheus import register

        return register(self, registry)

    def to_otel(self, meter_provider: Any = None) -> Any:
        """Create these metrics' instruments on the ``llm_cache`` meter of ``meter_provider``
        (default: the global one) and return them; ``stop()`` ends the export. The latency
        histogram counts the lookups made from then on. Needs
        ``pip install 'pytest-llm-cache[otel]'``."""
        from .otel import export

        return export(self, meter_provider)

    # -- across processes -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for pytest-xdist's workeroutput."""
        with self._lock:
            return {
                "buckets": list(BUCKETS),
                "counters": [[*key, n] for key, n in self._counters.items()],
                "lookups": [[mv, st, list(h.counts), h.total, h.count] for (mv, st), h in self._lookups.items()],
                "gauges": [[ev, st, value] for (ev, st), value in self._gauges.items()],
            }

    def merge(self, data: dict[str, Any]) -> None:
        """Add another process's ``to_dict()`` into these metrics; its gauges replace ours."""
        if list(data.get("buckets", BUCKETS)) != list(BUCKETS):
            raise ValueError("metrics with other lookup buckets cannot be merged")
        with self._lock:
            for event, mv, st, why, n in data.get("counters", []):
                key = (event, mv, st, why)
                self._counters[key] = self._counters.get(key, 0) + int(n)
            for mv, st, counts, total, count in data.get("lookups", []):
                mine = self._lookups.get((mv, st))
                if mine is None:
                    mine = self._lookups[(mv, st)] = Histogram()
                mine.counts = [a + int(b) for a, b in zip(mine.counts, counts)]
                mine.total += float(total)
                mine.count += int(count)
            for event, st, value in data.get("gauges", []):
                self._gauges[(event, st)] = float(value)
