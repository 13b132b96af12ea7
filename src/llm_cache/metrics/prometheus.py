"""Export a cache's metrics through prometheus_client: a collector that reads them when scraped.

Needs the ``prometheus`` extra: ``pip install 'pytest-llm-cache[prometheus]'``.
"""

from __future__ import annotations

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

from .model import Family
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
    """A prometheus_client collector of one ``Metrics``: each scrape reads their current values."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        """The families without samples: the registry learns the names, nothing is read."""
        for family in self.metrics.families():
            yield _family(family, with_samples=False)

    def collect(self) -> Iterator[Metric]:
        for family in self.metrics.families():
            yield _family(family)


def register(metrics: Metrics, registry: CollectorRegistry | None = None) -> MetricsCollector:
    """Register a collector of ``metrics`` on ``registry`` (default the global REGISTRY).

    A registry that already has llm_cache metrics refuses a second collector (ValueError,
    duplicated timeseries): unregister the first."""
    collector = MetricsCollector(metrics)
    (REGISTRY if registry is None else registry).register(collector)
    return collector
