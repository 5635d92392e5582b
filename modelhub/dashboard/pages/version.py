"""A version's page: the variants of ONE judgment with their run stamps, intervals, verdicts, ties, lineage and charts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelhub import gate, selectors
from modelhub.dashboard import svg
from modelhub.dashboard.pages.common import (
    JOBS_LISTED,
    STATISTICS,
    TARGET_LABELS,
    judged_metric,
    latencies,
    metric_columns,
    metric_values,
    row_stamp,
)
from modelhub.dashboard.pages.targets import target_rows
from modelhub.errors import NotFound
from modelhub.measurement import reference_of
from modelhub.models import (
    ModelVersion,
    OptimizationJob,
    ReadinessProfile,
    Variant,
)
from workers import planner
from workers.evaluation import readiness, stats
from workers.evaluation.accuracy import (
    HIGHER_IS_BETTER,
    AccuracyReport,
)


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
    targets: list[dict[str, Any]] = field(default_factory=list)  # native vs node / browser-wasm runs

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
    metric = judged_metric(spec or readiness.ProfileSpec(), task)
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
        targets=target_rows(version=version),
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
        "stamp": row_stamp(row["run"]),
        "latency": latencies(row["intervals"], row) if row["run"] else {name: None for name in STATISTICS},
        "fidelity": metric_values(row["accuracy"], fidelity),
        "task": metric_values(row["accuracy"], task_metrics),
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
    """(variant name, SVG of p50 / p95 / p99 over nights) for each variant measured at night, all on
    one y scale: the charts sit side by side, and their heights must compare."""
    drawn = []
    for variant in version.variants.order_by("created_at", "id"):
        nights = selectors.variant_history(variant=variant)
        if nights:
            series = [svg.Series(name, [night[f"{name}_ms"] for night in nights]) for name in STATISTICS]
            drawn.append((variant.name, series, [night["night"].strftime("%b %d") for night in nights]))
    domain = svg.shared_domain(*(series for _, series, _ in drawn))
    return [(name, svg.lines(series, x_labels=labels, y_label="latency", unit="ms", y_domain=domain,
                             title=f"{name}: latency per night")) for name, series, labels in drawn]


def default_plan(*, version: ModelVersion, profile: ReadinessProfile | None) -> list[dict[str, Any]]:
    """The steps the default plan would run for this version and profile (what "Optimize" runs)."""
    try:
        steps = selectors.default_plan_for(version, profile)
    except planner.PlanError:
        return []
    return [step.to_dict() for step in steps]
