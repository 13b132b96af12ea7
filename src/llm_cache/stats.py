"""Counters for one test and for a session; merged across pytest-xdist workers."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from .usage import Usage, merge_usage

__all__ = ["MAX_LISTED", "MAX_MISSES_KEPT", "MAX_TESTS_KEPT", "Counts", "Drift", "Miss", "SessionStats", "StaleUse",
           "Unseen"]

MAX_MISSES_KEPT = 50
# stale cassettes listed per session (each once per test)
MAX_LISTED = 1000
# tests whose counts are kept one by one, for the HTML report's table
MAX_TESTS_KEPT = 100_000
# the longest text a drift keeps of each side (the summary shows less)
MAX_DRIFT_TEXT = 4000


@dataclass
class Counts:
    """What happened to a set of requests.

    ``hits`` are requests answered from a cassette, ``stale`` the part of
    them answered from an expired one; ``misses`` were refused (replay);
    ``recorded`` were new and written, ``refreshed`` replaced an expired
    cassette; ``not_stored`` went upstream but were not written (an error
    status, say); ``refused`` were stale cassettes refused under
    ``llm_cache_stale = fail`` (counted in ``stale`` too, never hits).
    """

    hits: int = 0
    misses: int = 0
    recorded: int = 0
    refreshed: int = 0
    stale: int = 0
    not_stored: int = 0
    corrupt: int = 0
    refused: int = 0

    @property
    def lookups(self) -> int:
        return self.hits + self.misses + self.recorded + self.refreshed + self.not_stored + self.refused

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Miss:
    """A request replay refused: ``closest`` is the stored request that differs least
    (its location) and ``differences`` the fields it differs in."""

    test_id: str
    model: str | None
    endpoint: str
    key: str
    closest: str | None = None
    differences: list[str] = field(default_factory=list)


@dataclass
class Drift:
    """A re-recorded response that differs from the one it replaced (refresh mode)."""

    test_id: str
    key: str
    field: str  # response_model, system_fingerprint or text
    old: str  # whole, up to MAX_DRIFT_TEXT characters; renderers shorten it
    new: str


@dataclass(frozen=True)
class StaleUse:
    """A test that met a cassette past its TTL: served (``failed`` False) or refused under
    ``llm_cache_stale = fail``. ``age_seconds`` is the cassette's age then."""

    test_id: str
    key: str
    location: str
    age_seconds: float
    ttl_seconds: float | None
    failed: bool = False


@dataclass(frozen=True)
class Unseen:
    """A connection a test made that no patched transport saw (record, refresh), so nothing
    of it was recorded: ``host`` is ``host:port``."""

    host: str
    test_id: str


# What a session tells its listeners (the metrics): an event, the model version it is of,
# a reason (why not stored, which store error) and a number (a lookup's seconds; a size).
# Events: hit, stale_served, miss, recorded, refreshed, not_stored, corrupt, store_error,
# lookup (seconds), entries and bytes (the store's size after an eviction pass).
Listener = Callable[[str, str, "str | None", "float | None"], None]


@dataclass
class SessionStats:
    """Everything the summary and the JSON report are made from."""

    counts: Counts = field(default_factory=Counts)
    tokens_saved: dict[str, int] = field(default_factory=dict)
    # model version -> [input tokens, output tokens] served from the cache
    tokens_io: dict[str, list[int]] = field(default_factory=dict)
    # why responses went unstored: reason -> count
    not_stored_reasons: dict[str, int] = field(default_factory=dict)
    drift: list[Drift] = field(default_factory=list)
    misses_detail: list[Miss] = field(default_factory=list)
    tests_used: int = 0
    # key -> this session's use of it, for the usage index and eviction
    used: dict[str, Usage] = field(default_factory=dict)
    evicted: int = 0
    cap_short: bool = False
    warmed: int = 0
    warm_seconds: float = 0.0
    # model versions --llm-cache-warm named that have no entries (a typo, or not recorded yet)
    warm_none: list[str] = field(default_factory=list)
    # connections the cache could not see, one per host and test, in the order first made
    unseen: list[Unseen] = field(default_factory=list)
    # cassettes past the TTL that tests met, once per test and key
    stale_uses: list[StaleUse] = field(default_factory=list)
    # each test's own counts, by test id (a library scope's too)
    tests: dict[str, Counts] = field(default_factory=dict)
    # expired answers served on purpose (stale_while_revalidate, stale_if_error), and the
    # background refreshes that stored a new answer
    stale_served: int = 0
    revalidated: int = 0
    # told of each event as it happens (see Listener); none by default, and then free
    listeners: list[Listener] = field(default_factory=list, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def emit(self, event: str, model_version: str, reason: str | None = None, value: float | None = None) -> None:
        for listener in self.listeners:
            listener(event, model_version, reason, value)

    def bump(self, counts: Counts, name: str, n: int = 1) -> None:
        """Count one event for a test's counts and the session's together."""
        with self._lock:
            setattr(counts, name, getattr(counts, name) + n)
            setattr(self.counts, name, getattr(self.counts, name) + n)

    def add_tokens(self, model: str, input_tokens: int, output_tokens: int) -> None:
        if input_tokens or output_tokens:
            with self._lock:
                self.tokens_saved[model] = self.tokens_saved.get(model, 0) + input_tokens + output_tokens
                io = self.tokens_io.setdefault(model, [0, 0])
                io[0] += input_tokens
                io[1] += output_tokens

    def not_stored(self, counts: Counts, reason: str, model_version: str = "-") -> None:
        self.bump(counts, "not_stored")
        with self._lock:
            self.not_stored_reasons[reason] = self.not_stored_reasons.get(reason, 0) + 1
        if self.listeners:
            self.emit("not_stored", model_version, reason)

    def add_drift(self, drift: Drift) -> None:
        with self._lock:
            if len(self.drift) < MAX_MISSES_KEPT:
                self.drift.append(drift)

    def use(self, key: str, now: datetime, hit: bool) -> None:
        stamp = now.timestamp()
        with self._lock:
            old = self.used.get(key)
            self.used[key] = Usage(max(stamp, old.last_used) if old else stamp, (old.hits if old else 0) + hit)

    def add_miss(self, miss: Miss) -> None:
        with self._lock:
            if len(self.misses_detail) < MAX_MISSES_KEPT:
                self.misses_detail.append(miss)

    def add_unseen(self, host: str, test_id: str) -> None:
        unseen = Unseen(host, test_id)
        with self._lock:
            if len(self.unseen) < MAX_MISSES_KEPT and unseen not in self.unseen:
                self.unseen.append(unseen)

    def stale_served_bump(self) -> None:
        with self._lock:
            self.stale_served += 1

    def revalidated_bump(self) -> None:
        with self._lock:
            self.revalidated += 1

    def add_stale(self, stale: StaleUse) -> None:
        with self._lock:
            if len(self.stale_uses) < MAX_LISTED and not any(
                s.test_id == stale.test_id and s.key == stale.key for s in self.stale_uses
            ):
                self.stale_uses.append(stale)

    def add_test(self, test_id: str, counts: Counts) -> None:
        """A test's counts once it is over (added to any the same id has already)."""
        with self._lock:
            mine = self.tests.get(test_id)
            if mine is not None:
                mine.add(counts)
            elif len(self.tests) < MAX_TESTS_KEPT:
                self.tests[test_id] = dataclasses.replace(counts)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for pytest-xdist's workeroutput."""
        return {
            "counts": asdict(self.counts),
            "tokens_saved": dict(self.tokens_saved),
            "tokens_io": {k: list(v) for k, v in self.tokens_io.items()},
            "not_stored_reasons": dict(self.not_stored_reasons),
            "drift": [asdict(d) for d in self.drift],
            "misses_detail": [asdict(m) for m in self.misses_detail],
            "tests_used": self.tests_used,
            "used": {k: [u.last_used, u.hits] for k, u in self.used.items()},
            "warmed": self.warmed,
            "warm_seconds": self.warm_seconds,
            "warm_none": list(self.warm_none),
            "unseen": [asdict(u) for u in self.unseen],
            "stale_uses": [asdict(u) for u in self.stale_uses],
            "tests": {t: asdict(c) for t, c in self.tests.items()},
            "stale_served": self.stale_served,
            "revalidated": self.revalidated,
        }

    def merge(self, data: dict[str, Any]) -> None:
        """Add a worker's ``to_dict()`` into these stats."""
        with self._lock:
            self.counts.add(Counts(**data["counts"]))
            for model, tokens in data["tokens_saved"].items():
                self.tokens_saved[model] = self.tokens_saved.get(model, 0) + tokens
            for model, (inp, out) in data.get("tokens_io", {}).items():
                io = self.tokens_io.setdefault(model, [0, 0])
                io[0] += inp
                io[1] += out
            for reason, n in data.get("not_stored_reasons", {}).items():
                self.not_stored_reasons[reason] = self.not_stored_reasons.get(reason, 0) + n
            self.drift.extend(Drift(**d) for d in data.get("drift", [])[: max(MAX_MISSES_KEPT - len(self.drift), 0)])
            room = MAX_MISSES_KEPT - len(self.misses_detail)
            self.misses_detail.extend(Miss(**m) for m in data["misses_detail"][: max(room, 0)])
            for item in data.get("unseen", []):
                unseen = Unseen(**item)
                if len(self.unseen) < MAX_MISSES_KEPT and unseen not in self.unseen:
                    self.unseen.append(unseen)
            for item in data.get("stale_uses", []):
                stale = StaleUse(**item)
                if len(self.stale_uses) < MAX_LISTED and stale not in self.stale_uses:
                    self.stale_uses.append(stale)
            for test_id, counts in data.get("tests", {}).items():
                if test_id in self.tests:
                    self.tests[test_id].add(Counts(**counts))
                elif len(self.tests) < MAX_TESTS_KEPT:
                    self.tests[test_id] = Counts(**counts)
            self.stale_served += data.get("stale_served", 0)
            self.revalidated += data.get("revalidated", 0)
            self.tests_used += data["tests_used"]
            # every worker warms its own memory: report the largest, not the sum
            self.warmed = max(self.warmed, data.get("warmed", 0))
            self.warm_seconds = max(self.warm_seconds, data.get("warm_seconds", 0.0))
            self.warm_none.extend(v for v in data.get("warm_none", []) if v not in self.warm_none)
            merge_usage(self.used, {key: Usage(last, hits) for key, (last, hits) in data.get("used", {}).items()})
