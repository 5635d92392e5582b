"""Read-side queries of the dashboard pages: rows and chart inputs built from the registry's tables.

Nothing here changes state. Numbers stay numbers (pages format them with the ``units`` filters);
charts get their points here and are drawn by ``dashboard.svg``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from modelhub import artifacts, roles, selectors
from modelhub.dashboard import numbers, svg
from modelhub.models import (
    BenchmarkResult,
    ModelVersion,
    OptimizationJob,
    PromotionEvent,
    ReadinessProfile,
    RegisteredModel,
    Variant,
)
from workers import formats, planner
from workers.evaluation import readiness
from workers.evaluation.accuracy import HIGHER_IS_BETTER, AccuracyInputError, AccuracyReport

ACTIVE = (OptimizationJob.Status.QUEUED, OptimizationJob.Status.RUNNING)
NIGHTS_SHOWN = 30


def role_flags(user: Any) -> dict[str, bool]:
    """What the pages offer this user: maintainers upload and optimize, approvers promote."""
    maintainer = roles.has_role(user, roles.MAINTAINER)
    return {"can_upload": maintainer, "can_optimize": maintainer, "can_promote": roles.has_role(user, roles.APPROVER)}


# --- the models list -------------------------------------------------------------------------


def serving_counts(model_name: str) -> dict[str, float | None]:
    """Cache hit rate (percent) and fallback count of this web process since it started, from the
    serving metrics; None where serving has counted nothing for the model."""
    try:
        from predictions import metrics
    except ImportError:
        return {"cache_hit_rate": None, "fallbacks": None}
    hits = _counter_total(getattr(metrics, "CACHE", None), model=model_name, result="hit")
    lookups = _counter_total(getattr(metrics, "CACHE", None), model=model_name)
    fallbacks = _counter_total(getattr(metrics, "FALLBACKS", None), model=model_name)
    return {"cache_hit_rate": 100.0 * hits / lookups if lookups else None, "fallbacks": fallbacks or None}


def _counter_total(counter: Any, **labels: str) -> float:
    if counter is None:
        return 0.0
    total = 0.0
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def nightly_p95(variant: Variant | None, limit: int = NIGHTS_SHOWN) -> list[tuple[datetime.date, float]]:
    """The variant's nightly p95 latencies, oldest first (the last ``limit`` nights)."""
    if variant is None:
        return []
    rows = (BenchmarkResult.objects.filter(variant=variant, kind=BenchmarkResult.Kind.NIGHTLY, p95_ms__isnull=False)
            .order_by("-night", "-id").values_list("night", "p95_ms")[:limit])
    return list(reversed(rows))


def _model_status(latest: ModelVersion | None, production: Variant | None, job: OptimizationJob | None) -> tuple[str, str]:
    """A short status and its tone (ok, warn, bad, idle) for the models list."""
    if job is not None:
        what = "optimizing" if job.kind == OptimizationJob.Kind.OPTIMIZE else "benchmarking"
        where = f"{job.progress:.0f} %" if job.status == OptimizationJob.Status.RUNNING else "queued"
        return f"{what} v{job.version.number}: {where}", "warn"
    if latest is None:
        return "no versions yet", "idle"
    if latest.status == ModelVersion.Status.PENDING:
        return f"v{latest.number} being inspected", "warn"
    if latest.status == ModelVersion.Status.FAILED:
        return f"v{latest.number} refused", "bad"
    if production is not None:
        return "serving", "ok"
    return "ready, nothing promoted", "idle"


def model_rows(*, user: Any) -> list[dict[str, Any]]:
    """One row per visible model: production variant, status, last benchmark, nightly trend, serving."""
    rows = []
    for model in selectors.model_visible_to(user).select_related("owner"):
        production = selectors.deployment_variant(model=model)
        latest = model.versions.order_by("-number").first()
        job = OptimizationJob.objects.filter(version__model=model, status__in=ACTIVE).select_related("version").first()
        last = (BenchmarkResult.objects.filter(variant__version__model=model).select_related("variant__version")
                .order_by("-created_at", "-id").first())
        nights = nightly_p95(production)
        status, tone = _model_status(latest, production, job)
        rows.append({
            "model": model, "production": production, "latest": latest, "status": status, "tone": tone,
            "last_result": last, "nights": len(nights),
            "sparkline": svg.sparkline([p95 for _, p95 in nights], title=f"{model.name} nightly p95"),
            "last_night_p95": nights[-1][1] if nights else None,
            "open_regressions": selectors.model_regressions(model=model, open_only=True).count(),
            **serving_counts(model.name),
        })
    return rows


# --- a model ---------------------------------------------------------------------------------


def version_rows(*, model: RegisteredModel) -> list[dict[str, Any]]:
    """The versions of a model, newest first, with their variant count and latest job."""
    production = selectors.deployment_variant(model=model)
    rows = []
    for version in model.versions.order_by("-number").select_related("created_by"):
        job = version.jobs.first()
        rows.append({"version": version, "variants": version.variants.count(), "job": job,
                     "best": (job.result or {}).get("best") if job else None,
                     "serving": production is not None and production.version_id == version.pk})
    return rows


def rollback_target(*, model: RegisteredModel, alias: str = "production") -> Variant | None:
    """The variant a rollback would bring back (the one before the current promotion), if any."""
    last = model.promotions.filter(alias=alias).select_related("from_variant__version").first()
    return last.from_variant if last else None


def history(*, model: RegisteredModel) -> list[PromotionEvent]:
    """Every promotion and rollback of the model, newest first."""
    return list(selectors.promotion_history(model=model))


# --- a version -------------------------------------------------------------------------------


def last_result_job(version: ModelVersion) -> OptimizationJob | None:
    """The latest optimization job of the version that succeeded (its ranking and advice)."""
    return version.jobs.filter(status=OptimizationJob.Status.SUCCEEDED, kind=OptimizationJob.Kind.OPTIMIZE).first()


def _profile_of(version: ModelVersion, job: OptimizationJob | None) -> ReadinessProfile | None:
    if job is not None and job.profile is not None:
        return job.profile
    result = (BenchmarkResult.objects.filter(variant__version=version, profile__isnull=False)
              .select_related("profile").order_by("-created_at").first())
    return result.profile if result else None


def _metric(spec: readiness.ProfileSpec, task: str) -> str | None:
    try:
        return spec.metric_for(task)
    except AccuracyInputError:
        return None


def _accuracy_limit(spec: readiness.ProfileSpec, metric: str, reference: dict[str, Any]) -> float | None:
    """The value the metric had to reach: the tighter of min_accuracy and reference − max drop."""
    higher = HIGHER_IS_BETTER[metric]
    ref = readiness.reference_value(metric, AccuracyReport.from_dict(reference) if reference else None)
    limits = [spec.min_accuracy] if spec.min_accuracy is not None else []
    if spec.max_accuracy_drop is not None and ref is not None:
        limits.append(ref - spec.max_accuracy_drop if higher else ref + spec.max_accuracy_drop)
    if not limits:
        return None
    return max(limits) if higher else min(limits)


@dataclass
class VersionResults:
    """Everything the version page shows about its variants."""

    rows: list[dict[str, Any]]
    job: OptimizationJob | None
    profile: ReadinessProfile | None
    metric: str | None
    higher_is_better: bool
    accuracy_limit: float | None
    best: str | None
    best_effort: str | None
    advice: list[str] = field(default_factory=list)
    lineage: list[dict[str, Any]] = field(default_factory=list)


def version_results(*, version: ModelVersion) -> VersionResults:
    """The variant table with each row's metric, verdict, Pareto and production flags, and lineage."""
    job = last_result_job(version)
    result = job.result if job else {}
    profile = _profile_of(version, job)
    spec = readiness.ProfileSpec.from_dict(profile.spec()) if profile else readiness.ProfileSpec()
    rows = selectors.variant_rows(version=version)
    task = result.get("task") or next((r["accuracy"].get("task") for r in rows if r["accuracy"]), version.model.task)
    metric = _metric(spec, task)
    production = selectors.deployment_variant(model=version.model)
    serving = production.name if production is not None and production.version_id == version.pk else None
    for row in rows:
        row.update(_row_flags(row, version=version, metric=metric, result=result, serving=serving))
    reference = next((r["accuracy"] for r in rows if r["name"] == Variant.ORIGINAL and r["accuracy"]), {})
    return VersionResults(
        rows=rows, job=job, profile=profile, metric=metric, higher_is_better=HIGHER_IS_BETTER.get(metric or "", True),
        accuracy_limit=_accuracy_limit(spec, metric, reference) if metric in HIGHER_IS_BETTER else None,
        best=result.get("best"), best_effort=result.get("best_effort"), advice=list(result.get("advice", [])),
        lineage=_lineage(rows),
    )


def _row_flags(row: dict[str, Any], *, version: ModelVersion, metric: str | None, result: dict[str, Any],
               serving: str | None) -> dict[str, Any]:
    """What the page adds to a variant row: the profile's metric, ranking flags, and downloads."""
    ranking = result.get("ranking", {})
    onnx = row["name"] != Variant.ORIGINAL or version.format == "onnx"  # a TorchScript upload has no bundle
    return {
        "metric_value": (row["accuracy"] or {}).get("metrics", {}).get(metric) if metric else None,
        "pareto": row["name"] in ranking.get("pareto", []),
        "rejected": ranking.get("rejected", {}).get(row["name"]),
        "best": row["name"] == result.get("best"),
        "production": row["name"] == serving,
        "bundle": row["status"] == Variant.Status.READY and bool(row["sha256"]) and onnx,
    }


def _lineage(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The variants as a tree: each node with the rows made from it (by a pass) as children."""
    nodes = {row["name"]: {"row": row, "children": []} for row in rows}
    roots = []
    for row in rows:
        parent = nodes.get(row["parent"]) if row["parent"] else None
        (parent["children"] if parent else roots).append(nodes[row["name"]])
    return roots


def charts(results: VersionResults) -> dict[str, str]:
    """The version page's SVG charts: latency against accuracy, and sizes."""
    profile = results.profile
    points = [svg.Point(label=r["name"], x=r["p95_ms"], y=r["metric_value"], passed=r["passed"], pareto=r["pareto"],
                        production=r["production"]) for r in results.rows if r["status"] == Variant.Status.READY]
    batch = profile.batch_size if profile else 1
    scatter = svg.scatter(points, x_label=f"p95 latency at batch {batch} (ms)", y_label=results.metric or "accuracy",
                          x_limit=profile.max_p95_ms if profile else None, y_limit=results.accuracy_limit,
                          higher_is_better=results.higher_is_better,
                          title=f"p95 latency against {results.metric or 'accuracy'}")
    bar_items = [svg.Bar(label=r["name"], value=r["size_bytes"] / readiness.MB if r["size_bytes"] else None,
                         passed=r["passed"], production=r["production"]) for r in results.rows]
    sizes = svg.bars(bar_items, unit="MB", limit=profile.max_size_mb if profile else None)
    return {"scatter": scatter, "sizes": sizes}


def nightly_charts(*, version: ModelVersion) -> list[tuple[str, str]]:
    """(variant name, SVG of p50 / p95 / p99 over nights) for each variant measured at night."""
    charts = []
    for variant in version.variants.order_by("created_at", "id"):
        nights = selectors.variant_history(variant=variant)
        if not nights:
            continue
        series = [svg.Series(name, [night[f"{name}_ms"] for night in nights]) for name in ("p50", "p95", "p99")]
        labels = [night["night"].strftime("%b %d") for night in nights]
        charts.append((variant.name, svg.lines(series, x_labels=labels, y_label="latency", unit="ms",
                                               title=f"{variant.name}: latency per night")))
    return charts


def variant_visible(*, user: Any, name: str, number: int, variant: str) -> Variant:
    """A visible variant by model name, version number and variant name, else NotFound."""
    model = selectors.model_get(user=user, name=name)
    return selectors.variant_get(version=selectors.version_get(model=model, number=number), name=variant)


# --- optimize --------------------------------------------------------------------------------


def default_plan(*, version: ModelVersion, profile: ReadinessProfile | None) -> list[dict[str, Any]]:
    """The steps the default plan would run for this version and profile (what "Optimize" runs)."""
    try:
        steps = planner.default_plan(
            target=profile.target if profile else "cpu", task=selectors.model_task(version),
            source_format=version.format, has_calibration=version.dataset("calibration") is not None,
            has_training=version.dataset("training") is not None)
    except planner.PlanError:
        return []
    return [step.to_dict() for step in steps]


# --- promote ---------------------------------------------------------------------------------


def variant_signature(variant: Variant) -> formats.Signature:
    """The inputs and outputs of a variant: read from its ONNX file, else the version's."""
    if variant.format == "onnx" and variant.storage_key:
        try:
            return formats.signature_from_onnx(artifacts.local_path(variant.storage_key))
        except Exception:  # noqa: BLE001 - an unreadable file shows the upload's signature instead
            pass
    return formats.Signature.from_dict(variant.version.signature)


def _tensor_rows(signature: formats.Signature) -> list[dict[str, str]]:
    return [{"kind": kind, "name": t.name, "dtype": t.dtype, "shape": "[" + ", ".join(map(str, t.shape)) + "]"}
            for kind, tensors in (("input", signature.inputs), ("output", signature.outputs)) for t in tensors]


RULE_NAMES = {"target": "Target hardware", "size_mb": "Size (MB)", "latency": "Latency", "p95_ms": "p95 latency (ms)",
              "p99_ms": "p99 latency (ms)", "peak_memory_mb": "Peak memory (MB)", "finite": "Finite outputs",
              "accuracy": "Accuracy", "min_accuracy": "Minimum accuracy", "accuracy_drop": "Accuracy drop",
              "speedup": "Speed-up over parent (×)"}


def _shown(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    return numbers.significant(value, 4)


def promotion_preview(*, variant: Variant, alias: str = "production") -> dict[str, Any]:
    """What the confirmation page shows: the verdict, production now, and the signature changes
    that would break production's callers."""
    model = variant.version.model
    production = selectors.deployment_variant(model=model, alias=alias)
    result = variant.latest_result()
    candidate = variant_signature(variant)
    current = variant_signature(production) if production else None
    verdict = result.verdict if result else {}
    checks = [{**check, "name": RULE_NAMES.get(check.get("rule"), check.get("rule")),
               "measured_text": _shown(check.get("measured")), "limit_text": _shown(check.get("limit"))}
              for check in verdict.get("checks", [])]
    return {
        "variant": variant, "production": production, "result": result, "verdict": verdict, "checks": checks,
        "passed": bool(result and result.passed is True),
        "measured": result is not None, "same": production is not None and production.pk == variant.pk,
        "breaking": readiness.compatibility(candidate, current) if current else [],
        "candidate_signature": _tensor_rows(candidate), "production_signature": _tensor_rows(current) if current else [],
    }


# --- compare ---------------------------------------------------------------------------------


def _chosen(version: ModelVersion) -> tuple[Variant | None, str]:
    """The variant that speaks for a version: its last job's best, else best effort, else the original."""
    job = last_result_job(version)
    result = job.result if job else {}
    for key, why in (("best", "best"), ("best_effort", "best effort")):
        if result.get(key):
            variant = version.variants.filter(name=result[key]).first()
            if variant is not None:
                return variant, why
    return version.variants.filter(name=Variant.ORIGINAL).first(), "original"


def compare(*, model: RegisteredModel) -> dict[str, Any]:
    """Each version's chosen variant side by side, and its numbers over the versions."""
    columns = []
    for version in model.versions.order_by("number"):
        variant, why = _chosen(version)
        result = variant.latest_result() if variant else None
        original = version.variants.filter(name=Variant.ORIGINAL).first()
        base = original.latest_result() if original else None
        columns.append({"version": version, "variant": variant, "why": why, "result": result,
                        "original": base, "accuracy": _headline_accuracy(result)})
    labels = [f"v{c['version'].number} · {c['version'].created_at:%b %d}" for c in columns]
    latency = svg.lines([svg.Series("chosen variant", [_p95(c["result"]) for c in columns]),
                         svg.Series("original", [_p95(c["original"]) for c in columns])],
                        x_labels=labels, y_label="p95 latency", unit="ms", title="p95 latency by version")
    size = svg.lines([svg.Series("chosen variant", [c["variant"].size_bytes / readiness.MB if c["variant"] else None
                                                    for c in columns])],
                     x_labels=labels, y_label="size", unit="MB", title="Size by version")
    production = selectors.deployment_variant(model=model)
    nights = nightly_p95(production)
    nightly = svg.lines([svg.Series(production.label if production else "production", [p for _, p in nights])],
                        x_labels=[night.strftime("%b %d") for night, _ in nights], y_label="nightly p95", unit="ms",
                        title="Nightly p95 of the production variant") if nights else ""
    return {"columns": columns, "latency_chart": latency, "size_chart": size, "nightly_chart": nightly,
            "nights": len(nights), "production": production}


def _p95(result: BenchmarkResult | None) -> float | None:
    return result.p95_ms if result else None


def _headline_accuracy(result: BenchmarkResult | None) -> tuple[str, float] | None:
    """The metric the verdict judged (from its accuracy checks), else the first one measured."""
    if result is None or not result.accuracy:
        return None
    metrics = result.accuracy.get("metrics", {})
    profile = result.profile
    if profile is not None:
        metric = _metric(readiness.ProfileSpec.from_dict(profile.spec()), result.accuracy.get("task", ""))
        if metric in metrics:
            return metric, metrics[metric]
    return next(iter(metrics.items()), None)
