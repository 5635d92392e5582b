"""The promote confirmation page: the gate's decision and the candidate beside what serves now, with intervals."""

from __future__ import annotations

from typing import Any

from modelhub import gate, selectors
from modelhub.dashboard import numbers
from modelhub.dashboard.pages.common import (
    STATISTICS,
    latencies,
    latest_run,
    metric_columns,
    run_stamp,
    tensor_rows,
    text_of,
    variant_signature,
)
from modelhub.models import (
    BenchmarkResult,
    ReadinessProfile,
    Variant,
)
from workers.evaluation import readiness, stats

RULE_NAMES = {"target": "Target hardware", "size_mb": "Size (MB)", "latency": "Latency", "p95_ms": "p95 latency (ms)",
              "p99_ms": "p99 latency (ms)", "peak_memory_mb": "Peak memory (MB)", "finite": "Finite outputs",
              "accuracy": "Accuracy", "min_accuracy": "Minimum accuracy", "accuracy_drop": "Accuracy drop",
              "speedup": "Speed-up over parent (×)"}


def _check_row(check: dict[str, Any]) -> dict[str, Any]:
    interval = check.get("interval") or []
    return {**check, "name": RULE_NAMES.get(check.get("rule"), check.get("rule")),
            "measured_text": text_of(check.get("measured")), "limit_text": text_of(check.get("limit")),
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
    latest = latest_run(variant)
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
        "candidate_signature": tensor_rows(signature),
        "production_signature": tensor_rows(serving_signature) if serving_signature else [],
        "batching": gate.batching_advice(variant=variant, alias=alias),
    }
