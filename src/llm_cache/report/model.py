"""The one report model: a session's figures and what surrounds them, built once.

The terminal summary (``text``), the JSON report (``json``) and the HTML page
(``html``) are pure functions of a ``Report``. ``build_report`` makes one from a
session; ``store_report`` makes the inventory part alone, for a store without a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from ..errors import StoreUnavailable
from ..meta import EntryMeta
from ..policy import Cap, is_expired
from ..redact import mask_url
from ..stats import SessionStats

if TYPE_CHECKING:
    from ..engine.session import CacheSession
    from ..stores.protocol import Store

__all__ = [
    "AGE_BUCKETS",
    "Inventory",
    "Report",
    "Run",
    "Unused",
    "VersionInventory",
    "build_report",
    "cost_saved",
    "store_report",
    "take_inventory",
]

_DAY = 86400.0
# The age histogram's bars: a label and the age (seconds) below which an entry falls in it.
AGE_BUCKETS: tuple[tuple[str, float | None], ...] = (
    ("< 1 day", _DAY),
    ("1-7 days", 7 * _DAY),
    ("7-30 days", 30 * _DAY),
    ("30-90 days", 90 * _DAY),
    ("90 days-1 year", 365 * _DAY),
    ("> 1 year", None),
)


@dataclass(frozen=True)
class VersionInventory:
    """The entries of one model version: how many, their bytes, how many expired or
    unreadable, and how many fall in each of ``AGE_BUCKETS``."""

    model_version: str
    entries: int
    bytes: int
    expired: int
    unreadable: int
    ages: tuple[int, ...]
    oldest: datetime | None
    newest: datetime | None


@dataclass(frozen=True)
class Inventory:
    """What a store holds, per model version, at ``taken_at``."""

    location: str
    taken_at: datetime
    ttl: timedelta | None
    versions: tuple[VersionInventory, ...]

    @property
    def entries(self) -> int:
        return sum(v.entries for v in self.versions)

    @property
    def bytes(self) -> int:
        return sum(v.bytes for v in self.versions)

    @property
    def expired(self) -> int:
        return sum(v.expired for v in self.versions)


def _bucket(age: float) -> int:
    for index, (_, below) in enumerate(AGE_BUCKETS):
        if below is None or age < below:
            return index
    raise AssertionError("unreachable")


def take_inventory(metas: Iterable[EntryMeta], location: str, now: datetime, ttl: timedelta | None) -> Inventory:
    """The inventory of a store from its entries' metadata."""
    groups: dict[str, list[EntryMeta]] = {}
    for meta in metas:
        groups.setdefault(meta.model_version, []).append(meta)
    versions = []
    for name, group in sorted(groups.items()):
        dated = [m.recorded_at for m in group if m.recorded_at is not None]
        ages = [0] * len(AGE_BUCKETS)
        for when in dated:
            ages[_bucket((now - when).total_seconds())] += 1
        versions.append(VersionInventory(
            model_version=name,
            entries=len(group),
            bytes=sum(m.size for m in group),
            expired=sum(is_expired(when, ttl, now) for when in dated),
            unreadable=len(group) - len(dated),
            ages=tuple(ages),
            oldest=min(dated, default=None),
            newest=max(dated, default=None),
        ))
    return Inventory(location, now, ttl, tuple(versions))


@dataclass(frozen=True)
class Unused:
    """The cassettes no request of a run used: ``entries`` when the whole collection ran
    (``why_not`` None), else ``why_not`` says why it cannot be told."""

    why_not: str | None
    entries: tuple[EntryMeta, ...] = ()

    @property
    def known(self) -> bool:
        return self.why_not is None


@dataclass(frozen=True)
class Run:
    """What the test runner knows of a run: why it was not the whole collection (None when
    it was), and whether the store's inventory is wanted (an HTML or JSON report)."""

    partial: str | None = None
    inventory: bool = False
    # the directory the run was started from: paths under it are shown relative to it
    shown_from: str | None = None


@dataclass(frozen=True)
class Report:
    """A session's stats and what surrounds them."""

    stats: SessionStats
    mode: str
    location: str
    entries: int
    bytes: int
    cap: Cap = Cap()
    # model (version) -> dollars per million (input, output) tokens, from llm_cache_prices
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    ttl: timedelta | None = None
    # llm_cache_unused and llm_cache_stale, as the run had them
    unused_policy: str = "off"
    stale_policy: str = "serve"
    # None: not looked for (llm_cache_unused = off, or not a test run)
    unused: Unused | None = None
    inventory: Inventory | None = None
    # where the JSON report was written, for the command that prunes what it lists
    report_path: str | None = None
    # the terminal summary shows paths under this directory relative to it (pytest's
    # invocation directory); the JSON and HTML reports keep them whole
    shown_from: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def unused_failed(self) -> bool:
        """The run must fail: unused cassettes under ``llm_cache_unused = fail``."""
        return self.unused_policy == "fail" and self.unused is not None and bool(self.unused.entries)


def _location(session: CacheSession) -> str:
    settings = session.settings
    root = getattr(session.store, "root", None)
    # a store URL is shown with its password masked, wherever the report goes
    if settings.store_url:
        return mask_url(settings.store_url)
    return str(root) if root == settings.cassette_dir else repr(session.store)


def build_report(session: CacheSession, run: Run | None = None) -> Report:
    """The one report model of a session, for the terminal summary, the JSON and HTML reports
    and ``stats()``. With a ``run`` (the pytest plugin at session end) the store is listed
    once, for the unused cassettes and the inventory."""
    settings = session.settings
    stats = session.stats
    location = _location(session)
    used_any = bool(stats.tests_used)
    # a run whose tests never used the cache still has cassettes to account for
    want_unused = run is not None and settings.unused != "off" and settings.mode.value != "off"
    metas: list[EntryMeta] | None = None
    listing_failed = None
    if run is not None and (want_unused or (used_any and run.inventory)):
        try:
            metas = list(session.store.scan())
        except (StoreUnavailable, OSError) as exc:
            listing_failed = f"the store could not be listed: {str(exc).splitlines()[0]}"
    if metas is not None:
        entries, size = len(metas), sum(m.size for m in metas)
    else:
        entries, size = session.size() if used_any else (0, 0)
    unused = None
    if want_unused:
        assert run is not None
        if run.partial is not None:
            unused = Unused(run.partial)
        elif metas is None:
            unused = Unused(listing_failed or "the store could not be listed")
        else:
            unused = Unused(None, tuple(sorted(
                (m for m in metas if m.recorded_at is not None and m.key not in stats.used),
                key=lambda m: m.location,
            )))
    inventory = None
    if run is not None and run.inventory and metas is not None:
        inventory = take_inventory(metas, location, session.clock(), settings.ttl)
    return Report(
        stats, settings.mode.value, location, entries, size, settings.cap, settings.prices,
        ttl=settings.ttl,
        unused_policy=settings.unused if run is not None else "off",
        stale_policy=settings.stale,
        unused=unused,
        inventory=inventory,
        report_path=str(settings.report_path) if settings.report_path is not None else None,
        shown_from=run.shown_from if run is not None else None,
    )


def store_report(store: Store, location: str, ttl: timedelta | None, now: datetime | None = None) -> Report:
    """The inventory of a store, with no run: for ``llm-cache report``."""
    now = now or datetime.now(timezone.utc)
    metas = list(store.scan())
    inventory = take_inventory(metas, location, now, ttl)
    return Report(
        SessionStats(), "-", location, inventory.entries, inventory.bytes, ttl=ttl, inventory=inventory,
        created_at=now,
    )


def _price(prices: Mapping[str, tuple[float, float]], model: str) -> tuple[float, float] | None:
    """The price of a model version label: the label itself, else its model (before '@')."""
    return prices.get(model) or prices.get(model.split("@", 1)[0])


def cost_saved(report: Report) -> tuple[float, dict[str, float], list[str]]:
    """Dollars saved (total, per model) and the models served without a price."""
    per_model: dict[str, float] = {}
    unpriced = []
    for model, (inp, out) in sorted(report.stats.tokens_io.items()):
        price = _price(report.prices, model)
        if price is None:
            unpriced.append(model)
            continue
        per_model[model] = (inp * price[0] + out * price[1]) / 1_000_000
    return sum(per_model.values()), per_model, unpriced
