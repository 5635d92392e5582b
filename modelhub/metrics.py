"""Prometheus metrics of the registry, computed from the database when Prometheus scrapes.

Nightly runs happen in a worker while ``/metrics`` is served by the web processes: a gauge set
in the worker would never be scraped. These figures are read from the rows at scrape time
instead (two small grouped queries), so every web process reports the same truth.

- ``modelhub_regressions_open{model,variant}``: unacknowledged regressions of a variant. Alert on
  ``modelhub_regressions_open > 0``.
- ``modelhub_nightly_last_result_timestamp_seconds``: when the newest nightly measurement was
  recorded. Alert when ``time() - modelhub_nightly_last_result_timestamp_seconds > 36 * 3600``
  (the nightly run stopped).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.db import DatabaseError
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

REGRESSIONS_OPEN = "modelhub_regressions_open"
NIGHTLY_LAST_RESULT = "modelhub_nightly_last_result_timestamp_seconds"


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (GaugeMetricFamily(REGRESSIONS_OPEN, "Unacknowledged nightly regressions per variant.",
                              labels=["model", "variant"]),
            GaugeMetricFamily(NIGHTLY_LAST_RESULT, "Unix time of the newest finished nightly measurement."))


class RegistryCollector(Collector):
    """Yields the registry's gauges from the database on each scrape (nothing when it is down)."""

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Describing without collecting keeps registration free of database queries.
        yield from _families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from modelhub import selectors

        regressions, last = _families()
        try:
            counts = selectors.open_regression_counts()
            last_at = selectors.nightly_last_result_at()
        except DatabaseError as exc:
            log.warning("registry metrics skipped: the database did not answer (%s)", exc)
            return
        for model, variant, count in counts:
            regressions.add_metric([model, variant], count)
        yield regressions
        if last_at is not None:
            last.add_metric([], last_at.timestamp())
            yield last


def register(registry: CollectorRegistry = REGISTRY) -> None:
    """Add the registry's collector once (an app loaded twice, a test reload: no duplicate)."""
    if REGRESSIONS_OPEN not in registry._names_to_collectors:  # noqa: SLF001 - no public lookup exists
        registry.register(RegistryCollector())
