"""Export a cache's metrics through the OpenTelemetry metrics API.

Counters and gauges are observable instruments whose callbacks read the ``Metrics``
when the SDK collects; the lookup latency is a histogram recorded at each lookup (the
API has no observable histogram), with the cache's own bucket bounds as its advice.
Needs the ``otel`` extra: ``pip install 'pytest-llm-cache[otel]'``. Names follow
OpenTelemetry's style and translate back to the Prometheus ones (``llm_cache.hits``
with unit ``{request}`` is ``llm_cache_hits_total`` to a Prometheus exporter).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.metrics import CallbackOptions, Histogram, Meter, MeterProvider, Observation
except ImportError as exc:  # the extra is not installed
    raise ImportError(
        "exporting llm_cache metrics to OpenTelemetry needs opentelemetry-api: "
        "pip install 'pytest-llm-cache[otel]'"
    ) from exc

from .model import BUCKETS, COUNTERS, GAUGES, LOOKUP, Family

if TYPE_CHECKING:
    from .model import Metrics

__all__ = ["METER_NAME", "OtelExport", "export", "otel_name"]

METER_NAME = "llm_cache"
# what each counter counts, as the instrument's unit
_UNITS = {"recorded": "{entry}", "refreshed": "{entry}", "corrupt": "{entry}", "entries": "{entry}", "bytes": "By"}


def otel_name(prometheus_name: str) -> str:
    """``llm_cache_stale_served`` -> ``llm_cache.stale_served``; the latency histogram is
    ``llm_cache.lookup`` (unit ``s``)."""
    if prometheus_name == LOOKUP[0]:
        return "llm_cache.lookup"
    return "llm_cache." + prometheus_name.removeprefix("llm_cache_")


class OtelExport:
    """The instruments made on ``meter``, by name; ``stop()`` ends the export (the
    callbacks observe nothing more, lookups are no longer recorded)."""

    def __init__(self, meter: Meter, instruments: dict[str, Any], stop: Callable[[], None]) -> None:
        self.meter = meter
        self.instruments = instruments
        self._stop = stop

    def stop(self) -> None:
        self._stop()


def _family_of(metrics: Metrics, event: str) -> Family:
    return next(f for f in metrics.families() if f.event == event)


def export(metrics: Metrics, meter_provider: MeterProvider | None = None) -> OtelExport:
    """Create the instruments of ``metrics`` on the ``llm_cache`` meter of ``meter_provider``
    (default: the global provider)."""
    from .. import __version__

    meter = otel_metrics.get_meter(METER_NAME, str(__version__), meter_provider=meter_provider)
    stopped = threading.Event()

    def observer(event: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            if stopped.is_set():
                return []
            return [Observation(value, labels) for labels, value in _family_of(metrics, event).samples]

        return observe

    instruments: dict[str, Any] = {}
    for event, (name, text, _) in COUNTERS.items():
        instruments[otel_name(name)] = meter.create_observable_counter(
            otel_name(name), callbacks=[observer(event)], unit=_UNITS.get(event, "{request}"), description=text
        )
    for event, (name, text) in GAUGES.items():
        instruments[otel_name(name)] = meter.create_observable_gauge(
            otel_name(name), callbacks=[observer(event)], unit=_UNITS[event], description=text
        )
    histogram: Histogram = meter.create_histogram(
        otel_name(LOOKUP[0]), unit="s", description=LOOKUP[1], explicit_bucket_boundaries_advisory=list(BUCKETS)
    )
    instruments[otel_name(LOOKUP[0])] = histogram

    def record(model_version: str, store: str, seconds: float) -> None:
        histogram.record(seconds, {"model_version": model_version, "store": store})

    # a new tuple, never a list changed in place: the listener reads it without the lock
    metrics._lookup_hooks = (*metrics._lookup_hooks, record)

    def stop() -> None:
        stopped.set()
        metrics._lookup_hooks = tuple(h for h in metrics._lookup_hooks if h is not record)

    return OtelExport(meter, instruments, stop)
