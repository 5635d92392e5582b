"""One variant's page: its lineage, every judgment that measured it, its nightly series, its
bundle and what this node's serving counted for it."""

from __future__ import annotations

from typing import Any

from modelhub import selectors
from modelhub.dashboard import svg
from modelhub.dashboard.pages.common import RUNS_OF_RECORD, latencies, run_stamp
from modelhub.dashboard.pages.models import metric_total
from modelhub.models import BenchmarkResult, Variant

LATENCY_FAMILY = "modelhub_predict_latency_seconds"
NON_FINITE_FAMILY = "modelhub_predict_non_finite_outputs"


def lineage(variant: Variant) -> list[Variant]:
    """The variant and its ancestors, the upload first."""
    chain = [variant]
    while chain[-1].parent_id is not None and len(chain) < 64:  # a cap against a corrupted cycle
        chain.append(chain[-1].parent)
    return list(reversed(chain))


def judgments(variant: Variant) -> list[dict[str, Any]]:
    """Every job or on-demand run that measured the variant, newest first: profile, statistic,
    batch, time, fingerprint, latencies with their intervals, verdict."""
    results = (variant.results.filter(kind__in=RUNS_OF_RECORD, pending=False).select_related("profile")
               .order_by("-created_at", "-id"))
    return [_judgment(result) for result in results]


def _judgment(result: BenchmarkResult) -> dict[str, Any]:
    points = {f"{name}_ms": getattr(result, f"{name}_ms") for name in ("p50", "p95", "p99")}
    return {"result": result, "run": run_stamp(result), "statistic": result.statistic, "batch": result.batch_size,
            "fingerprint": result.fingerprint_hash, "latency": latencies(result.intervals, points),
            "passed": result.passed, "failures": (result.verdict or {}).get("failures", [])}


def nightly(variant: Variant) -> dict[str, Any]:
    """The variant's nightly p50 / p95 / p99 series and its chart ("" when never measured at night)."""
    rows = selectors.variant_history(variant=variant)
    chart = svg.lines([svg.Series(name, [row[f"{name}_ms"] for row in rows]) for name in ("p50", "p95", "p99")],
                      x_labels=[f"{row['night']:%b %d}" for row in rows], y_label="latency", unit="ms",
                      title=f"Nightly latency of {variant.label}") if rows else ""
    return {"rows": rows, "chart": chart}


def serving_counters(variant: Variant) -> dict[str, float | None] | None:
    """What this process's serving metrics counted for the variant (answered predictions, outputs
    refused as non-finite); None when the serving plane does not run in this process."""
    model = variant.version.model.name
    answered = metric_total(LATENCY_FAMILY, f"{LATENCY_FAMILY}_count", model=model,
                            version=str(variant.version.number), variant=variant.name)
    if answered is None:
        return None
    return {"answered": answered,
            "non_finite": metric_total(NON_FINITE_FAMILY, f"{NON_FINITE_FAMILY}_total", model=model,
                                       variant=variant.name) or 0.0}


def variant_page(variant: Variant) -> dict[str, Any]:
    """Everything the variant page shows."""
    aliases = list(variant.deployments.values_list("alias", flat=True))
    return {"variant": variant, "version": variant.version, "lineage": lineage(variant),
            "judgments": judgments(variant), "nightly": nightly(variant), "serving": serving_counters(variant),
            "aliases": aliases}
