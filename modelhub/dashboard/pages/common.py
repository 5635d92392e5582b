"""What every dashboard page shares: role flags, figures with their intervals and run stamps, metric columns, signatures."""

from __future__ import annotations

import datetime
import re
from typing import Any

from modelhub import artifacts, roles, selectors
from modelhub.dashboard import numbers
from modelhub.models import (
    BenchmarkResult,
    OptimizationJob,
    ReadinessProfile,
    Variant,
)
from workers import formats
from workers.evaluation import readiness, stats
from workers.evaluation.accuracy import (
    FIDELITY_METRICS,
    TASK_METRICS,
    AccuracyInputError,
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


def row_stamp(run: dict[str, Any] | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {**run, "words": _run_words(run["kind"], run["job"], None)}


def metric_columns(accuracies: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(fidelity metrics, task metrics) that any of the accuracy reports holds, in their house order."""
    held = {name for report in accuracies for name, value in (report or {}).get("metrics", {}).items()
            if value is not None}
    return [m for m in FIDELITY_METRICS if m in held], [m for m in TASK_METRICS if m in held]


def metric_values(accuracy: dict[str, Any] | None, names: list[str]) -> list[float | None]:
    metrics = (accuracy or {}).get("metrics", {})
    return [metrics.get(name) for name in names]


def latest_run(variant: Variant | None) -> BenchmarkResult | None:
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


def judged_metric(spec: readiness.ProfileSpec, task: str) -> str | None:
    try:
        return spec.metric_for(task)
    except AccuracyInputError:
        return None


def variant_visible(*, user: Any, name: str, number: int, variant: str) -> Variant:
    """A visible variant by model name, version number and variant name, else NotFound."""
    model = selectors.model_get(user=user, name=name)
    return selectors.variant_get(version=selectors.version_get(model=model, number=number), name=variant)


def variant_signature(variant: Variant) -> formats.Signature:
    """The inputs and outputs of a variant: read from its ONNX file, else the version's."""
    if variant.format == "onnx" and variant.storage_key:
        try:
            return formats.signature_from_onnx(artifacts.local_model(variant))
        except Exception:  # noqa: BLE001 - an unreadable file shows the upload's signature instead
            pass
    return formats.Signature.from_dict(variant.version.signature)


def tensor_rows(signature: formats.Signature) -> list[dict[str, str]]:
    return [{"kind": kind, "name": t.name, "dtype": t.dtype, "shape": "[" + ", ".join(map(str, t.shape)) + "]"}
            for kind, tensors in (("input", signature.inputs), ("output", signature.outputs)) for t in tensors]


def text_of(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    return numbers.significant(value, 4)


def is_web_address(text: str) -> bool:
    """Whether a version's source reads as an http(s) URL (shown as a link, never fetched)."""
    return bool(re.fullmatch(r"https?://[^\s<>\"']+", text or ""))
