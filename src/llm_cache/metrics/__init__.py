"""Cache metrics: counters, a lookup-latency histogram and store gauges, per model version and store.

``Metrics`` is kept in plain Python and renders the Prometheus text format itself;
``Metrics.to_prometheus()`` (extra ``prometheus``) and ``Metrics.to_otel()`` (extra
``otel``) import their libraries only when called. ``LLMCache.metrics`` attaches one
to a cache, ``--llm-cache-metrics=PATH`` to a pytest run.
"""

from __future__ import annotations

from .model import BUCKETS, Metrics, store_label

__all__ = ["BUCKETS", "Metrics", "store_label"]
