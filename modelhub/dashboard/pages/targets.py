"""A version's variants on each target: the latest native (cpu) run beside the latest node and
browser-wasm runs, so a user can compare where a variant will run with the server's numbers."""

from __future__ import annotations

from typing import Any

from modelhub.dashboard.pages.common import RUNS_OF_RECORD, TARGET_LABELS, estimate
from modelhub.models import BenchmarkResult, ModelVersion, Variant
from workers.evaluation import advisor
from workers.evaluation.bench import BenchReport
from workers.targets.capabilities import JS_TARGETS, PROVIDER_OF_TARGET

_TARGET_OF_PROVIDER = {provider: target for target, provider in PROVIDER_OF_TARGET.items()}


def target_of(result: BenchmarkResult) -> str:
    """The target a result was measured on, read from its fingerprint (older runs: cpu)."""
    fingerprint = result.fingerprint or {}
    return fingerprint.get("target") or _TARGET_OF_PROVIDER.get(fingerprint.get("provider", ""), "cpu")


def _ratio(result: BenchmarkResult, native: BenchmarkResult | None) -> tuple[dict[str, Any] | None, Any]:
    """The target's time over native's at p95 with its interval (unpaired: separate runs), and the
    speed-up estimate behind it; (None, None) without a native run at the same batch size."""
    if native is None or not result.report or not native.report:
        return None, None
    mine, theirs = BenchReport.from_dict(result.report), BenchReport.from_dict(native.report)
    if result.batch_size not in mine.results or result.batch_size not in theirs.results:
        return None, None
    speedup = mine.speedup(theirs, "p95", result.batch_size)
    return {"value": 1 / speedup.value, "low": 1 / speedup.high, "high": 1 / speedup.low, "enough": speedup.enough}, speedup


def _row(variant: Variant, target: str, result: BenchmarkResult, native: BenchmarkResult | None) -> dict[str, Any]:
    ratio, speedup = _ratio(result, native)
    limit = (result.profile_spec or {}).get("max_p95_ms")
    both = [(native, "native"), (result, "target")]
    row = {"variant": variant.name, "target": TARGET_LABELS.get(target, target), "batch": result.batch_size,
           "job": result.job_id, "native_job": native.job_id if native else None, "passed": result.passed,
           "ratio": ratio, "limit": limit, "failures": (result.verdict or {}).get("failures", [])}
    for run, side in both:
        for statistic in ("p50", "p95"):
            row[f"{side}_{statistic}"] = (estimate(run.intervals, statistic, getattr(run, f"{statistic}_ms"))
                                          if run is not None else None)
    row["advice"] = (advisor.target_line(target, speedup, result.p95_ms, result.batch_size, limit)
                     if speedup is not None and result.p95_ms is not None else None)
    return row


def target_rows(*, version: ModelVersion) -> list[dict[str, Any]]:
    """One row per (variant, JavaScript target) the variant was measured on: p50 / p95 there and
    natively with their intervals, the p95 ratio, the target's verdict and the advisor's sentence."""
    rows = []
    for variant in version.variants.filter(status=Variant.Status.READY).order_by("created_at", "id"):
        latest: dict[str, BenchmarkResult] = {}
        for result in variant.results.filter(kind__in=RUNS_OF_RECORD, pending=False).order_by("-created_at", "-id"):
            latest.setdefault(target_of(result), result)
        rows.extend(_row(variant, target, latest[target], latest.get("cpu")) for target in JS_TARGETS if target in latest)
    return rows
