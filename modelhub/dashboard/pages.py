"""Read-side queries of the dashboard pages: rows and chart inputs built from the registry's tables.

Nothing here changes state. Numbers stay numbers (pages format them with the ``units`` filters);
charts get their points here and are drawn by ``dashboard.svg``.

Every figure a page shows says where it comes from: the run that measured it (job, time, profile),
the statistic and the batch size, and its 95 % interval with the calls behind it, or "too few calls"
when the percentile rests on too few to mean anything. A version's variant table shows ONE
judgment (one job); nightly measurements are their own series and never mix into it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from modelhub import artifacts, gate, roles, selectors
from modelhub.dashboard import numbers, svg
from modelhub.errors import NotFound
from modelhub.measurement import reference_of
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
from workers.evaluation import readiness, stats
from workers.evaluation.accuracy import (
    FIDELITY_METRICS,
    HIGHER_IS_BETTER,
    TASK_METRICS,
    AccuracyInputError,
    AccuracyReport,
)

ACTIVE = (OptimizationJob.Status.QUEUED, OptimizationJob.Status.RUNNING)
NIGHTS_SHOWN = 30
JOBS_LISTED = 50
STATISTICS = stats.STATISTICS
RUNS_OF_RECORD = (BenchmarkResult.Kind.JOB, BenchmarkResult.Kind.ON_DEMAND)
TARGET_LABELS = dict(ReadinessProfile.Target.choices)


def role_flags(user: Any) -> dict[str, bool]:
    """What the pages offer this user: maintainers upload and optimize, approvers promote."""
    maintainer = roles.has_role(user, roles.MAINTAINER)
    return {"can_upload": maintainer, "can_optimize": maintainer, "can_promote": roles.has_role(user, roles.APPROVER)}


# --- figures with their uncertainty and their run ------------------------------------------------


def estimate(intervals: dict[str, Any] | None, statistic: str, point: float | None = None) -> dict[str, Any] | None:
    """One latency statistic as a page shows it: value, 95 % interval (low, high), calls, ``enough``
    and the calls it ``needs``. A result stored before intervals were kept gives its point value
    alone (no interval, calls unknown); None when nothing was measured."""
    data = (intervals or {}).get(statistic)
    if data:
        return {"statistic": statistic, "value": data.get("value"), "low": data.get("low"), "high": data.get("high"),
                "calls": data.get("calls"), "enough": bool(data.get("enough", True)),
                "needs": stats.min_calls(statistic)}
    if point is None:
        return None
    return {"statistic": statistic, "value": point, "low": None, "high": None, "calls": None, "enough": True,
            "needs": stats.min_calls(statistic)}


def latencies(intervals: dict[str, Any] | None, points: dict[str, float | None]) -> dict[str, dict[str, Any] | None]:
    """p50, p95 and p99 (``estimate`` each) from a result's intervals, else its point values."""
    return {name: estimate(intervals, name, points.get(f"{name}_ms")) for name in STATISTICS}


def _run_words(kind: str, job: int | None, night: datetime.date | None) -> str:
    if kind == BenchmarkResult.Kind.NIGHTLY:
        return f"nightly of {night:%Y-%m-%d}" if night else "nightly"
    if job is None:
        return "a deleted job"
    return f"benchmark job {job}" if kind == BenchmarkResult.Kind.ON_DEMAND else f"job {job}"


def run_stamp(result: BenchmarkResult | None) -> dict[str, Any] | None:
    """Which run measured ``result``: job (or night), when, under which profile (None: not judged)."""
    if result is None:
        return None
    profile = result.profile.name if result.profile_id and result.profile else None
    return {"job": result.job_id, "kind": result.kind, "at": result.created_at, "profile": profile,
            "words": _run_words(result.kind, result.job_id, result.night)}


def _row_stamp(run: dict[str, Any] | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {**run, "words": _run_words(run["kind"], run["job"], None)}


def metric_columns(accuracies: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(fidelity metrics, task metrics) that any of the accuracy reports holds, in their house order."""
    held = {name for report in accuracies for name, value in (report or {}).get("metrics", {}).items()
            if value is not None}
    return [m for m in FIDELITY_METRICS if m in held], [m for m in TASK_METRICS if m in held]


def _metric_values(accuracy: dict[str, Any] | None, names: list[str]) -> list[float | None]:
    metrics = (accuracy or {}).get("metrics", {})
    return [metrics.get(name) for name in names]


def _latest_run(variant: Variant | None) -> BenchmarkResult | None:
    """The variant's newest finished job or on-demand result (nightly runs are a series of their own)."""
    if variant is None:
        return None
    return (variant.results.filter(kind__in=RUNS_OF_RECORD, pending=False).select_related("profile")
            .order_by("-created_at", "-id").first())


def result_summary(result: BenchmarkResult | None) -> dict[str, Any] | None:
    """A result's headline as a page shows it: its ranking statistic with interval, batch, run and verdict."""
    if result is None:
        return None
    statistic = result.statistic or "p50"
    return {"result": result, "statistic": statistic, "batch_size": result.batch_size,
            "latency": estimate(result.intervals, statistic, getattr(result, f"{statistic}_ms", None)),
            "throughput": result.throughput, "throughput_batch": result.throughput_batch, "run": run_stamp(result),
            "passed": result.passed}


def production_numbers(production: Variant | None) -> dict[str, Any] | None:
    """The production variant's OWN latest numbers: its newest finished measurement of any run
    (a job, a benchmark, a night), never another variant's."""
    if production is None:
        return None
    result = production.results.filter(pending=False).select_related("profile").order_by("-created_at", "-id").first()
    return result_summary(result)


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


# --- a model ---------------------------------------------------------------------------------


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


# --- a version -------------------------------------------------------------------------------


def _metric(spec: readiness.ProfileSpec, task: str) -> str | None:
    try:
        return spec.metric_for(task)
    except AccuracyInputError:
        return None


@dataclass
class VersionResults:
    """Everything the version page shows about its variants under one judgment (one job)."""

    rows: list[dict[str, Any]]
    job: OptimizationJob | None
    jobs: list[OptimizationJob]
    profile: ReadinessProfile | None
    spec: readiness.ProfileSpec | None
    judged: bool
    statistic: str
    batch_size: int
    metric: str | None
    higher_is_better: bool
    accuracy_limit: float | None
    best: str | None
    best_effort: str | None
    reference: str | None
    fidelity: list[str] = field(default_factory=list)
    task_metrics: list[str] = field(default_factory=list)
    throughput_batch: int | None = None
    ties: dict[str, list[str]] = field(default_factory=dict)
    advice: list[str] = field(default_factory=list)
    lineage: list[dict[str, Any]] = field(default_factory=list)
    limits_changed: bool = False
    governing: ReadinessProfile | None = None
    judged_at: Any = None

    @property
    def measured(self) -> bool:
        return any(row["run"] is not None for row in self.rows)

    @property
    def best_ties(self) -> list[str]:
        """The variants the best one was tied with on the ranking statistic (chosen by the next priority)."""
        return list(self.ties.get(self.best or "", []))

    @property
    def target_label(self) -> str:
        return TARGET_LABELS.get(self.spec.target, self.spec.target) if self.spec else ""

    @property
    def governed_elsewhere(self) -> bool:
        """The run was judged under another profile than the one governing production."""
        return self.governing is not None and (self.profile is None or self.profile.pk != self.governing.pk)


def _chosen_job(version: ModelVersion, job_id: int | None) -> tuple[OptimizationJob | None, list[OptimizationJob]]:
    jobs = list(selectors.judgment_jobs(version=version)[:JOBS_LISTED])
    if job_id is None:
        return (jobs[0] if jobs else None), jobs
    job = selectors.judgment_jobs(version=version).filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"Version {version.number} of {version.model.name} has no succeeded job {job_id}.")
    if job not in jobs:
        jobs.append(job)
    return job, jobs


def _judgment_spec(job: OptimizationJob | None, judgment: dict[str, Any]) -> readiness.ProfileSpec | None:
    """The limits the run was judged under (as recorded then), else its profile's now."""
    if judgment.get("spec"):
        try:
            return readiness.ProfileSpec.from_dict(judgment["spec"])
        except (TypeError, ValueError):
            pass
    return job.profile.to_spec() if job is not None and job.profile is not None else None


def version_results(*, version: ModelVersion, job_id: int | None = None) -> VersionResults:
    """The variant table of one judgment (``job_id``, default: the latest succeeded job): each row's
    run stamp, latencies with intervals, fidelity and task metrics, verdict, ranking flags; the
    run's statistic, batch, ties and advice; and the lineage."""
    job, jobs = _chosen_job(version, job_id)
    result = (job.result or {}) if job else {}
    judgment = result.get("judgment") or {}
    ranking = result.get("ranking") or {}
    profile = job.profile if job else None
    spec = _judgment_spec(job, judgment)
    judged = bool(judgment.get("judged", profile is not None)) if job else False
    rows = selectors.variant_rows(version=version, job=job)
    measured = [r for r in rows if r["run"] is not None]
    statistic = (judgment.get("statistic") or ranking.get("statistic")
                 or next((r["statistic"] for r in measured if r["statistic"]), None)
                 or (spec.statistic if spec else "p50"))
    batch = int(judgment.get("batch_size") or ranking.get("batch_size")
                or next((r["batch_size"] for r in measured if r["batch_size"]), None) or (spec.batch_size if spec else 1))
    task = result.get("task") or next((r["accuracy"].get("task") for r in measured if r["accuracy"]), version.model.task)
    metric = _metric(spec or readiness.ProfileSpec(), task)
    production = selectors.deployment_variant(model=version.model)
    serving = production.name if production is not None and production.version_id == version.pk else None
    fidelity, task_metrics = metric_columns([r["accuracy"] for r in measured])
    reference = reference_of(version)
    for row in rows:
        row.update(_row_flags(row, version=version, metric=metric, result=result, serving=serving,
                              fidelity=fidelity, task_metrics=task_metrics))
    ref_row = next((r for r in rows if reference is not None and r["name"] == reference.name and r["accuracy"]), None)
    ref_report = AccuracyReport.from_dict(ref_row["accuracy"]) if ref_row else None
    limit = (spec.accuracy_limit(metric, readiness.reference_value(metric, ref_report))
             if spec is not None and judged and metric in HIGHER_IS_BETTER else None)
    batches = {r["throughput_batch"] for r in measured if r["throughput_batch"]}
    return VersionResults(
        rows=rows, job=job, jobs=jobs, profile=profile, spec=spec if judged else None, judged=judged,
        statistic=statistic, batch_size=batch, metric=metric, higher_is_better=HIGHER_IS_BETTER.get(metric or "", True),
        accuracy_limit=limit, best=result.get("best"), best_effort=result.get("best_effort"),
        reference=reference.name if reference else None, fidelity=fidelity, task_metrics=task_metrics,
        throughput_batch=batches.pop() if len(batches) == 1 else None, ties=dict(ranking.get("ties", {})),
        advice=list(result.get("advice", [])), lineage=_lineage(rows),
        limits_changed=bool(judged and profile is not None and judgment.get("spec")
                            and judgment["spec"] != profile.to_spec().to_dict()),
        governing=gate.governing_profile(model=version.model), judged_at=judgment.get("at"),
    )


def _speedup_cell(comparison: dict[str, Any] | None) -> dict[str, Any] | None:
    """A speed-up Estimate dict (>1 faster) with the words ``stats.claim`` allows for it."""
    if not comparison:
        return None
    ratio = stats.Estimate.from_dict(comparison)
    return {**ratio.to_dict(), "claim": stats.claim(ratio)}


def _row_flags(row: dict[str, Any], *, version: ModelVersion, metric: str | None, result: dict[str, Any],
               serving: str | None, fidelity: list[str], task_metrics: list[str]) -> dict[str, Any]:
    """What the page adds to a variant row: the run's words, latencies with intervals, named metric
    columns, ranking flags (ties included), the speed-up over the reference, and downloads."""
    ranking = result.get("ranking", {})
    onnx = row["name"] != Variant.ORIGINAL or version.format == "onnx"  # a TorchScript upload has no bundle
    return {
        "stamp": _row_stamp(row["run"]),
        "latency": latencies(row["intervals"], row) if row["run"] else {name: None for name in STATISTICS},
        "fidelity": _metric_values(row["accuracy"], fidelity),
        "task": _metric_values(row["accuracy"], task_metrics),
        "metric_value": (row["accuracy"] or {}).get("metrics", {}).get(metric) if metric else None,
        "speedup": _speedup_cell(result.get("comparisons", {}).get(row["name"])),
        "pareto": row["name"] in ranking.get("pareto", []),
        "rejected": ranking.get("rejected", {}).get(row["name"]),
        "tied_with": list(ranking.get("ties", {}).get(row["name"], [])),
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


def _latency_limit(spec: readiness.ProfileSpec | None, statistic: str) -> float | None:
    if spec is None:
        return None
    return {"p95": spec.max_p95_ms, "p99": spec.max_p99_ms}.get(statistic)


def charts(results: VersionResults) -> dict[str, str]:
    """The version page's SVG charts: the run's declared statistic against the judged metric, and sizes."""
    statistic, batch, metric = results.statistic, results.batch_size, results.metric or "accuracy"
    points, too_few, unmeasured = [], [], []
    for row in results.rows:
        if row["status"] != Variant.Status.READY:
            continue
        latency = row["latency"].get(statistic)
        if row["run"] is None or latency is None:
            unmeasured.append(row["name"])
        elif not latency["enough"]:
            too_few.append(f"{row['name']} ({latency['calls']})")
        else:
            points.append(svg.Point(label=row["name"], x=latency["value"], y=row["metric_value"], passed=row["passed"],
                                    pareto=row["pareto"], production=row["production"]))
    notes = ([f"not drawn (too few calls for {statistic}): " + ", ".join(too_few)] if too_few else []) + (
        [f"not measured in job {results.job.pk}: " + ", ".join(unmeasured)] if unmeasured and results.job else [])
    scatter = svg.scatter(points, x_label=f"{statistic} latency at batch {batch} (ms)", y_label=metric,
                          x_limit=_latency_limit(results.spec, statistic), y_limit=results.accuracy_limit,
                          higher_is_better=results.higher_is_better, title=f"{statistic} latency against {metric}",
                          notes=notes)
    bar_items = [svg.Bar(label=r["name"], value=r["size_bytes"] / readiness.MB if r["size_bytes"] else None,
                         passed=r["passed"], production=r["production"]) for r in results.rows]
    sizes = svg.bars(bar_items, unit="MB", limit=results.spec.max_size_mb if results.spec else None)
    return {"scatter": scatter, "sizes": sizes}


def nightly_charts(*, version: ModelVersion) -> list[tuple[str, str]]:
    """(variant name, SVG of p50 / p95 / p99 over nights) for each variant measured at night."""
    charts = []
    for variant in version.variants.order_by("created_at", "id"):
        nights = selectors.variant_history(variant=variant)
        if not nights:
            continue
        series = [svg.Series(name, [night[f"{name}_ms"] for night in nights]) for name in STATISTICS]
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


def _check_row(check: dict[str, Any]) -> dict[str, Any]:
    interval = check.get("interval") or []
    return {**check, "name": RULE_NAMES.get(check.get("rule"), check.get("rule")),
            "measured_text": _shown(check.get("measured")), "limit_text": _shown(check.get("limit")),
            "interval_text": (f"95 % [{numbers.significant(interval[0])}–{numbers.significant(interval[1])}]"
                              if len(interval) == 2 else ""),
            "calls": check.get("calls")}


def standing(variant: Variant, profile: ReadinessProfile | None) -> tuple[BenchmarkResult | None, str]:
    """What speaks for a variant on the promote page, and what it is: its judgment under the
    governing profile (with the profile's current limits), else its latest job or benchmark,
    else its latest measurement of any run."""
    if profile is not None:
        judged = gate.judgment(variant=variant, profile=profile)
        if judged is not None:
            return judged, f"judgment under {profile.name}"
    latest = _latest_run(variant)
    if latest is not None:
        return latest, ("latest run, not a judgment under the governing profile" if profile is not None
                        else "latest run")
    latest = variant.results.filter(pending=False).select_related("profile").order_by("-created_at", "-id").first()
    return latest, "latest measurement" if latest is not None else "never measured"


def _side(variant: Variant, profile: ReadinessProfile | None) -> dict[str, Any]:
    result, source = standing(variant, profile)
    return {"variant": variant, "result": result, "source": source, "run": run_stamp(result),
            "latency": latencies(result.intervals, {f"{s}_ms": getattr(result, f"{s}_ms") for s in STATISTICS})
            if result else {name: None for name in STATISTICS},
            "size_bytes": variant.size_bytes, "accuracy": result.accuracy if result else {},
            "passed": result.passed if result else None, "batch_size": result.batch_size if result else None,
            "throughput": result.throughput if result else None,
            "throughput_batch": result.throughput_batch if result else None,
            "peak_memory_mb": result.peak_memory_mb if result else None}


def _rounds(result: BenchmarkResult, batch: int) -> list[list[float]]:
    return list(((result.report or {}).get("results", {}).get(str(batch)) or {}).get("rounds") or [])


def comparison(current: dict[str, Any], candidate: dict[str, Any], statistic: str) -> dict[str, Any]:
    """How many times faster the candidate is than what serves now, in ``statistic`` at their batch
    size: paired when one job measured both (interleaved rounds), else from two separate runs.
    ``note`` says why no ratio is given when there is none."""
    now, new = current["result"], candidate["result"]
    base = {"statistic": statistic, "paired": False, "ratio": None, "claim": None, "note": ""}
    if now is None or new is None:
        return {**base, "note": "not both measured: no speed-up to state"}
    if now.batch_size != new.batch_size:
        return {**base, "note": f"measured at different batch sizes ({new.batch_size} and {now.batch_size}): "
                                "no speed-up to state"}
    batch = new.batch_size
    now_rounds, new_rounds = _rounds(now, batch), _rounds(new, batch)
    if not now_rounds or not new_rounds:
        return {**base, "batch_size": batch, "note": "the raw timings of one side were not kept: no speed-up to state"}
    paired = now.job_id is not None and now.job_id == new.job_id
    ratio = stats.speedup(now_rounds, new_rounds, statistic, paired=paired)
    claim = stats.claim(ratio)
    shown = ratio.value if claim != stats.SLOWER else 1 / ratio.value
    low, high = (ratio.low, ratio.high) if claim != stats.SLOWER else (1 / ratio.high, 1 / ratio.low)
    return {**base, "batch_size": batch, "paired": paired, "ratio": ratio.to_dict(), "claim": claim,
            "shown": shown, "low": low, "high": high, "job": new.job_id if paired else None,
            "jobs": (new.job_id, now.job_id)}


def _metric_values_of(sides: list[dict[str, Any]], name: str) -> list[float | None]:
    return [(side["accuracy"] or {}).get("metrics", {}).get(name) for side in sides]


def promotion_preview(*, variant: Variant, alias: str = "production") -> dict[str, Any]:
    """What the confirmation page shows: the gate's decision under the alias's governing profile,
    the candidate beside what serves now (latencies with intervals, each stamped with its run, the
    speed-up, size, fidelity and task metrics), and the signature changes that would break callers."""
    model = variant.version.model
    production = selectors.deployment_variant(model=model, alias=alias)
    decision = gate.decide(variant=variant, alias=alias)
    governing = decision.profile or gate.governing_profile(model=model, alias=alias)
    same = production is not None and production.pk == variant.pk
    candidate = _side(variant, governing)
    current = _side(production, governing) if production is not None and not same else None
    statistic = governing.statistic if governing else (candidate["result"].statistic if candidate["result"] else "p50")
    verdict_source = decision.result or candidate["result"]
    verdict = verdict_source.verdict if verdict_source else {}
    sides = [side for side in (candidate, current) if side]
    fidelity, task_metrics = metric_columns([side["accuracy"] for side in sides])
    signature = variant_signature(variant)
    serving_signature = variant_signature(production) if production else None
    return {
        "variant": variant, "alias": alias, "production": production, "decision": decision, "governing": governing,
        "passed": decision.passed, "same": same, "candidate": candidate, "current": current,
        "statistic": statistic, "sides": sides,
        "latency_rows": [{"statistic": name, "ranks": name == statistic, "cells": [side["latency"][name] for side in sides]}
                         for name in STATISTICS],
        "fidelity_rows": [{"name": name, "cells": _metric_values_of(sides, name)} for name in fidelity],
        "task_rows": [{"name": name, "cells": _metric_values_of(sides, name)} for name in task_metrics],
        "speedup": comparison(current, candidate, statistic) if current else None,
        "verdict": verdict, "verdict_run": run_stamp(verdict_source),
        "checks": [_check_row(check) for check in verdict.get("checks", [])],
        "breaking": readiness.compatibility(signature, serving_signature) if serving_signature else [],
        "candidate_signature": _tensor_rows(signature),
        "production_signature": _tensor_rows(serving_signature) if serving_signature else [],
    }


# --- compare ---------------------------------------------------------------------------------


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
        result = _latest_run(variant)
        original = version.variants.filter(name=Variant.ORIGINAL).first()
        base = _latest_run(original)
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
        metric = _metric(profile.to_spec(), result.accuracy.get("task", ""))
        if metric in metrics:
            return metric, metrics[metric]
    return next(iter(metrics.items()), None)
