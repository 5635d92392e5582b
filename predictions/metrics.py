"""Prometheus metrics of serving, registered once in the default registry (served at /metrics).

Labels are bounded: ``model`` / ``version`` / ``variant`` only ever carry names of rows that
exist (a request naming an unknown model counts under the error reason, not under its name).
Cache hit rate: ``rate(modelhub_predict_cache_total{result="hit"}[5m]) / rate(modelhub_predict_cache_total[5m])``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _metric(cls: type, name: str, documentation: str, labels: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """Create a metric, or return the one already registered (a module imported twice, a test reload)."""
    existing = REGISTRY._names_to_collectors.get(name)  # noqa: SLF001 - prometheus_client has no public lookup
    if existing is not None:
        return existing
    return cls(name, documentation, labels, **kwargs)


REQUEST_LATENCY = _metric(Histogram, "modelhub_predict_latency_seconds",
                          "Server time of answered predictions.", ("model", "version", "variant"),
                          buckets=LATENCY_BUCKETS)
CACHE = _metric(Counter, "modelhub_predict_cache", "Response cache lookups by result (hit, miss).",
                ("model", "result"))
CACHE_UNAVAILABLE = _metric(Counter, "modelhub_serving_redis_unavailable",
                            "Redis operations skipped or failed (the request went on without Redis).", ("op",))
FALLBACKS = _metric(Counter, "modelhub_predict_fallbacks", "Predictions answered by a fallback variant, by reason.",
                    ("model", "reason"))
ERRORS = _metric(Counter, "modelhub_predict_errors", "Refused or failed predictions, by reason.", ("reason",))
NON_FINITE = _metric(Counter, "modelhub_predict_non_finite_outputs",
                     "Runs whose outputs held NaN or Infinity (never returned to a client).", ("model", "variant"))
OUTPUT_REFUSED = _metric(Counter, "modelhub_predict_refused_outputs",
                         "Runs whose outputs were over the answer caps or unlike the declared outputs (never returned).",
                         ("model", "variant", "reason"))
PREDICT_ACTIVE = _metric(Gauge, "modelhub_predict_active", "Predictions at work in this process.")
PREDICT_QUEUED = _metric(Gauge, "modelhub_predict_queued", "Predictions waiting for a place to work in this process.")
RUNTIMES_LOADED = _metric(Gauge, "modelhub_runtimes_loaded", "Runtimes loaded in this process.")
RUNTIME_MEMORY = _metric(Gauge, "modelhub_runtime_memory_bytes", "Estimated bytes held by loaded runtimes.")
RUNTIME_LOAD = _metric(Histogram, "modelhub_runtime_load_seconds", "Time to verify, load and warm a runtime.",
                       ("kind",), buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
RUNTIME_LOAD_FAILURES = _metric(Counter, "modelhub_runtime_load_failures", "Runtimes that could not be loaded.",
                                ("reason",))
WARM_FAILURES = _metric(Counter, "modelhub_serving_warm_failures",
                        "New primaries that could not be warmed when their route changed (the chain's next link "
                        "answered).", ("model", "reason"))
BATCH_SIZE = _metric(Histogram, "modelhub_batch_size",
                     "Requests joined into one session run by the server-side batcher (its count: joined runs).",
                     ("model",), buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64))
BATCH_QUEUE = _metric(Histogram, "modelhub_batch_queue_seconds",
                      "Time a batched request waited for its run to start.", ("model",),
                      buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0))

_latency_children: dict[tuple[str, str, str], Any] = {}


def observe_latency(model: str, version: int, variant: str, seconds: float) -> None:
    """Record one answered request (label children are looked up once per variant)."""
    key = (model, str(version), variant)
    child = _latency_children.get(key)
    if child is None:
        child = _latency_children[key] = REQUEST_LATENCY.labels(*key)
    child.observe(seconds)


def count_error(reason: str) -> None:
    ERRORS.labels(reason).inc()
