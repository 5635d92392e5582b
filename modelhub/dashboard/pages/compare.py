"""The compare page: each version's chosen variant (what an approver promoted from it) side by side over the versions."""

from __future__ import annotations

from typing import Any

from modelhub import gate, selectors
from modelhub.dashboard import svg
from modelhub.dashboard.pages.common import STATISTICS, estimate, judged_metric, latencies, latest_run, run_stamp
from modelhub.dashboard.pages.models import nightly_p95
from modelhub.models import (
    BenchmarkResult,
    PromotionEvent,
    RegisteredModel,
    Variant,
)
from workers.evaluation import readiness


def _why_chosen(variant: Variant | None) -> str:
    if variant is None:
        return "no ready variant"
    if PromotionEvent.objects.filter(to_variant=variant).exists():
        return "promoted by an approver"
    return "the upload" if variant.name == Variant.ORIGINAL else "the upload's ONNX export"


def compare(*, model: RegisteredModel) -> dict[str, Any]:
    """Each version's chosen variant (what ``?version=N`` serves) side by side, with its latest run
    (statistic, interval, run stamp), and its numbers over the versions in the governing statistic."""
    governing = gate.governing_profile(model=model)
    statistic = governing.statistic if governing else "p50"
    columns = []
    for version in model.versions.order_by("number"):
        variant = selectors.version_chosen_variant(version)
        result = latest_run(variant)
        original = version.variants.filter(name=Variant.ORIGINAL).first()
        base = latest_run(original)
        columns.append({"version": version, "variant": variant, "why": _why_chosen(variant), "result": result,
                        "run": run_stamp(result), "original": base,
                        "latency": latencies(result.intervals, {f"{s}_ms": getattr(result, f"{s}_ms") for s in STATISTICS})
                        if result else {name: None for name in STATISTICS},
                        "original_latency": estimate(base.intervals, statistic, getattr(base, f"{statistic}_ms"))
                        if base else None,
                        "accuracy": _headline_accuracy(result)})
    labels = [f"v{c['version'].number} · {c['version'].created_at:%b %d}" for c in columns]

    def point(result: BenchmarkResult | None) -> float | None:
        figure = estimate(result.intervals, statistic, getattr(result, f"{statistic}_ms")) if result else None
        return figure["value"] if figure and figure["enough"] else None

    latency = svg.lines([svg.Series("chosen variant", [point(c["result"]) for c in columns]),
                         svg.Series("original", [point(c["original"]) for c in columns])],
                        x_labels=labels, y_label=f"{statistic} latency", unit="ms",
                        title=f"{statistic} latency by version")
    size = svg.lines([svg.Series("chosen variant", [c["variant"].size_bytes / readiness.MB if c["variant"] else None
                                                    for c in columns])],
                     x_labels=labels, y_label="size", unit="MB", title="Size by version")
    production = selectors.deployment_variant(model=model)
    nights = nightly_p95(production)
    nightly = svg.lines([svg.Series(production.label if production else "production", [p for _, p in nights])],
                        x_labels=[night.strftime("%b %d") for night, _ in nights], y_label="nightly p95", unit="ms",
                        title="Nightly p95 of the production variant") if nights else ""
    return {"columns": columns, "latency_chart": latency, "size_chart": size, "nightly_chart": nightly,
            "nights": len(nights), "production": production, "statistic": statistic, "governing": governing,
            "statistics": STATISTICS}


def _headline_accuracy(result: BenchmarkResult | None) -> tuple[str, float] | None:
    """The metric the verdict judged (its profile's), else the first one measured."""
    if result is None or not result.accuracy:
        return None
    metrics = result.accuracy.get("metrics", {})
    profile = result.profile
    if profile is not None:
        metric = judged_metric(profile.to_spec(), result.accuracy.get("task", ""))
        if metric in metrics:
            return metric, metrics[metric]
    return next(iter(metrics.items()), None)
