"""Export a cache's metrics through prometheus_client: a collector that reads them when scraped.

Needs the ``prometheus`` extra: ``pip install 'pytest-llm-cache[prometheus]'``.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as exc:  # the extra is not installed
    raise ImportError(
        "exporting llm_cache metrics to Prometheus needs prometheus_client: "
        "pip install 'pytest-llm-cache[prometheus]'"
    ) from exc

from .model import Family, Histogram
from .text import _bound

if TYPE_CHECKING:
    from .model import Metrics

__all__ = ["MetricsCollector", "register"]


def _family(family: Family, with_samples: bool = True) -> Metric:
    labels = list(family.labels)
    if family.kind == "histogram":
        histogram = HistogramMetricFamily(family.name, family.help, labels=labels)
        for values, series in family.histograms if with_samples else ():
            buckets = [(_bound(bound), count) for bound, count in series.cumulative()]
            histogram.add_metric(list(values.values()), buckets, series.total)
        return histogram
    metric: CounterMetricFamily | GaugeMetricFamily
    if family.kind == "counter":
        metric = CounterMetricFamily(family.name, family.help, labels=labels)
    else:
        metric = GaugeMetricFamily(family.name, family.help, labels=labels)
    for values, value in family.samples if with_samples else ():
        metric.add_metric(list(values.values()), value)
    return metric


class MetricsCollector:
    """A prometheus_client collector of one or more caches' ``Metrics``: each scrape reads
    their current values. The series of several caches are told apart by their ``store``
    label; two caches on the same store and model version add up (their gauges, which
    measure the same store, are the reading of the cache registered last that has one)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._all: list[Metrics] = [metrics]
        self._lock = threading.Lock()

    def add(self, metrics: Metrics) -> None:
        with self._lock:
            if all(m is not metrics for m in self._all):
                self._all.append(metrics)

    def remove(self, metrics: Metrics) -> None:
        """Stop exporting one cache's metrics (``registry.unregister(collector)`` stops them all)."""
        with self._lock:
            self._all = [m for m in self._all if m is not metrics]
            if self.metrics is metrics and self._all:  # not kept alive by the collector
                self.metrics = self._all[0]

    def describe(self) -> Iterator[Metric]:
        """The families without samples: the registry learns the names, nothing is read."""
        from .model import Metrics

        for family in Metrics().families():  # the same names for every cache
            yield _family(family, with_samples=False)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            every = list(self._all)
        for family in _merged([m.families() for m in every]):
            yield _family(family)


def _merged(per_cache: list[list[Family]]) -> list[Family]:
    """The families of several caches as one set: samples of the same labels added (a
    gauge's: the last one), histograms of the same labels added bucket by bucket."""
    if len(per_cache) == 1:
        return per_cache[0]
    out: dict[str, Family] = {}
    for families in per_cache:
        for family in families:
            into = out.get(family.name)
            if into is None:
                into = out[family.name] = dataclasses.replace(family, samples=[], histograms=[])
            for labels, value in family.samples:
                for i, (have, old) in enumerate(into.samples):
                    if have == labels:
                        into.samples[i] = (have, value if family.kind == "gauge" else old + value)
                        break
                else:
                    into.samples.append((labels, value))
            for labels, series in family.histograms:
                for have, old_series in into.histograms:
                    if have == labels:
                        old_series.counts = [a + b for a, b in zip(old_series.counts, series.counts)]
                        old_series.total += series.total
                        old_series.count += series.count
                        break
                else:
                    into.histograms.append((labels, Histogram(list(series.counts), series.total, series.count)))
    return list(out.values())


# The collector of each registry this process registered caches' metrics on.
_COLLECTORS: weakref.WeakKeyDictionary[CollectorRegistry, MetricsCollector] = weakref.WeakKeyDictionary()
_COLLECTORS_LOCK = threading.Lock()


def register(metrics: Metrics, registry: CollectorRegistry | None = None) -> MetricsCollector:
    """Export ``metrics`` on ``registry`` (default the global REGISTRY); returns the
    registry's collector of llm_cache metrics. The first cache registers it; the next ones
    (an application with a file cache and a Redis cache) join it, their series told apart
    by ``store``. ``registry.unregister(collector)`` takes them all off, ``collector.remove(metrics)`` one."""
    target = REGISTRY if registry is None else registry
    with _COLLECTORS_LOCK:
        collector = _COLLECTORS.get(target)
        if collector is not None and collector in getattr(target, "_collector_to_names", {collector: ()}):
            collector.add(metrics)
            return collector
        collector = MetricsCollector(metrics)
        target.register(collector)
        _COLLECTORS[target] = collector
        return collector
