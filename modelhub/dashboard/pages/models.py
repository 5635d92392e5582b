"""The models list and a model's page: production's own latest numbers, versions, governing profiles, rollback, history."""

from __future__ import annotations

import datetime
from typing import Any

from prometheus_client import REGISTRY

from modelhub import gate, selectors
from modelhub.dashboard import svg
from modelhub.dashboard.pages.common import ACTIVE, NIGHTS_SHOWN, result_summary
from modelhub.models import (
    BenchmarkResult,
    ModelVersion,
    OptimizationJob,
    PromotionEvent,
    RegisteredModel,
    Variant,
)


def production_numbers(production: Variant | None) -> dict[str, Any] | None:
    """The production variant's OWN latest numbers: its newest finished measurement of any run
    (a job, a benchmark, a night), never another variant's."""
    if production is None:
        return None
    result = production.results.filter(pending=False).select_related("profile").order_by("-created_at", "-id").first()
    return result_summary(result)


def serving_counts(model_name: str) -> dict[str, float | None]:
    """Cache hit rate (percent) and fallback count of this web process since it started, from the
    serving metrics; None where serving has counted nothing for the model. The counters are read
    by their exported names from the process's Prometheus registry, as a scraper would, so the
    registry's pages do not import the serving app."""
    hits = _counter_total("modelhub_predict_cache", model=model_name, result="hit")
    lookups = _counter_total("modelhub_predict_cache", model=model_name)
    fallbacks = _counter_total("modelhub_predict_fallbacks", model=model_name)
    return {"cache_hit_rate": 100.0 * hits / lookups if lookups else None, "fallbacks": fallbacks or None}


def _counter_total(name: str, **labels: str) -> float:
    return metric_total(name, f"{name}_total", **labels) or 0.0


def metric_total(family_name: str, sample_name: str, **labels: str) -> float | None:
    """The sum of the samples ``sample_name`` of this process's Prometheus family ``family_name``
    whose labels match, read as a scraper would; None when this process has no such family (the
    serving plane does not run here)."""
    total, known = 0.0, False
    for family in REGISTRY.collect():
        if family.name != family_name:
            continue
        known = True
        total += sum(sample.value for sample in family.samples if sample.name == sample_name
                     and all(sample.labels.get(k) == v for k, v in labels.items()))
    return total if known else None


def nightly_p95(variant: Variant | None, limit: int = NIGHTS_SHOWN) -> list[tuple[datetime.date, float]]:
    """The variant's nightly p95 latencies, oldest first (the last ``limit`` nights)."""
    if variant is None:
        return []
    rows = (BenchmarkResult.objects.filter(variant=variant, kind=BenchmarkResult.Kind.NIGHTLY, pending=False,
                                           p95_ms__isnull=False)
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
    """One row per visible model: production variant and its own last benchmark, status, nightly
    trend, governing profile, serving counts."""
    rows = []
    for model in selectors.model_visible_to(user).select_related("owner"):
        production = selectors.deployment_variant(model=model)
        latest = model.versions.order_by("-number").first()
        job = OptimizationJob.objects.filter(version__model=model, status__in=ACTIVE).select_related("version").first()
        nights = nightly_p95(production)
        status, tone = _model_status(latest, production, job)
        rows.append({
            "model": model, "production": production, "latest": latest, "status": status, "tone": tone,
            "last": production_numbers(production), "nights": len(nights),
            "governing": gate.governing_profile(model=model),
            "sparkline": svg.sparkline([p95 for _, p95 in nights], title=f"{model.name} nightly p95"),
            "last_night_p95": nights[-1][1] if nights else None,
            "open_regressions": selectors.model_regressions(model=model, open_only=True).count(),
            **serving_counts(model.name),
        })
    return rows


def version_rows(*, model: RegisteredModel) -> list[dict[str, Any]]:
    """The versions of a model, newest first, with their variant count, latest job and the best
    variant of their latest judgment."""
    production = selectors.deployment_variant(model=model)
    rows = []
    for version in model.versions.order_by("-number").select_related("created_by"):
        judged = selectors.judgment_jobs(version=version).first()
        rows.append({"version": version, "variants": version.variants.count(), "job": version.jobs.first(),
                     "judged_job": judged, "best": (judged.result or {}).get("best") if judged else None,
                     "serving": production is not None and production.version_id == version.pk})
    return rows


def rollback_plan(*, model: RegisteredModel, alias: str = "production") -> dict[str, Any]:
    """What the rollback button would do, as ``services.deployment_rollback`` decides it: go to the
    last known good (the most recent earlier variant the gate lets through); when none passes, only
    a forced rollback (with a reason) to the variant that served before, and why each was refused."""
    made = gate.rollback_plan(model=model, alias=alias)
    return {"governing": gate.governing_profile(model=model, alias=alias), "target": made.target,
            "decision": made.decision, "forced_target": made.forced_target, "earlier": made.earlier,
            "refused": [{"variant": variant, "reason": reason} for variant, reason in made.refused]}


def history(*, model: RegisteredModel) -> list[PromotionEvent]:
    """Every promotion and rollback of the model, newest first (with the judgment that opened the gate)."""
    return list(selectors.promotion_history(model=model))


def governing_rows(*, model: RegisteredModel) -> list[Any]:
    """The profiles governing the model's aliases (production first)."""
    return sorted(model.governing_profiles.select_related("profile", "set_by"),
                  key=lambda row: (row.alias != "production", row.alias))
