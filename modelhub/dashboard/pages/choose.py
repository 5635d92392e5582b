"""Compare any two or more variants (of any versions of one model) on chosen axes: p50 / p95 / p99
with their intervals, size, accuracy, memory. Each latency axis names the best and says "tied"
where ``stats.claim`` cannot tell a variant from it (intervals within the noise band)."""

from __future__ import annotations

from typing import Any

from modelhub import selectors
from modelhub.dashboard.pages.common import STATISTICS, latencies, latest_run, run_stamp
from modelhub.models import BenchmarkResult, ModelVersion, RegisteredModel, Variant
from workers.evaluation import stats

AXES = {"p50": "p50 latency", "p95": "p95 latency", "p99": "p99 latency", "size": "size",
        "accuracy": "accuracy", "memory": "peak memory"}
DEFAULT_AXES = ["p50", "p95", "size", "accuracy"]
MAX_PICKED = 12


def pick_key(variant: Variant) -> str:
    """How a variant is named in ``?pick=``: ``<version number>:<variant name>``."""
    return f"{variant.version.number}:{variant.name}"


def choices(*, model: RegisteredModel) -> list[tuple[str, str]]:
    """What may be picked, as (pick key, label): each version (its chosen variant), then every
    ready variant, newest version first."""
    versions = [(str(v.number), f"v{v.number} (the variant it serves)")
                for v in model.versions.filter(status=ModelVersion.Status.READY).order_by("-number")]
    variants = (Variant.objects.filter(version__model=model, status=Variant.Status.READY)
                .select_related("version").order_by("-version__number", "created_at", "id"))
    return versions + [(pick_key(v), v.label) for v in variants]


def picked(*, model: RegisteredModel, keys: list[str]) -> list[Variant]:
    """The variants ``keys`` name (unknown keys are skipped), in the order given, each once: a
    ``<number>:<variant>`` key names a variant, a bare ``<number>`` the version's chosen variant
    (what ``?version=N`` serves)."""
    found: list[Variant] = []
    for key in dict.fromkeys(keys[:MAX_PICKED]):
        variant = _named(model, key)
        if variant is not None and variant not in found:
            found.append(variant)
    return found


def _named(model: RegisteredModel, key: str) -> Variant | None:
    number, colon, name = key.partition(":")
    if not number.isdigit():
        return None
    if not colon:
        version = model.versions.filter(number=int(number)).first()
        return selectors.version_chosen_variant(version) if version else None
    return (Variant.objects.filter(version__model=model, version__number=int(number), name=name)
            .select_related("version").first())


def _column(variant: Variant) -> dict[str, Any]:
    result = latest_run(variant)
    points = {f"{name}_ms": getattr(result, f"{name}_ms") for name in STATISTICS} if result else {}
    return {"variant": variant, "result": result, "run": run_stamp(result),
            "latency": latencies(result.intervals, points) if result else dict.fromkeys(STATISTICS),
            "accuracy": _accuracy(result)}


def _accuracy(result: BenchmarkResult | None) -> tuple[str, float] | None:
    metrics = (result.accuracy or {}).get("metrics", {}) if result else {}
    known = [(name, value) for name, value in metrics.items() if value is not None]
    return known[0] if known else None


def _ratio(best: dict[str, Any], other: dict[str, Any]) -> stats.Estimate | None:
    """How many times faster the best is than ``other``, its interval from the two intervals."""
    if not best or not other or None in (best["low"], best["high"], other["low"], other["high"]) or best["low"] <= 0:
        return None
    return stats.Estimate(statistic=best["statistic"], value=other["value"] / best["value"],
                          low=other["low"] / best["high"], high=other["high"] / best["low"],
                          calls=min(best["calls"] or 0, other["calls"] or 0),
                          enough=best["enough"] and other["enough"])


def _latency_row(statistic: str, columns: list[dict[str, Any]]) -> dict[str, Any]:
    figures = [column["latency"][statistic] for column in columns]
    usable = [f for f in figures if f and f["enough"] and f["value"] is not None]
    best = min(usable, key=lambda f: f["value"]) if usable else None
    cells = []
    for figure in figures:
        ratio = _ratio(best, figure) if best is not None and figure is not best else None
        standing = "best" if figure is best else "tied" if ratio is not None and stats.claim(ratio) == stats.SAME \
            else "slower" if ratio is not None else None
        cells.append({"figure": figure, "standing": standing})
    return {"axis": statistic, "label": AXES[statistic], "kind": "latency", "cells": cells}


def comparison(*, variants: list[Variant], axes: list[str]) -> dict[str, Any]:
    """The chosen variants side by side on the chosen axes (unknown axes are dropped)."""
    columns = [_column(variant) for variant in variants]
    rows = []
    for axis in [a for a in AXES if a in axes]:
        if axis in STATISTICS:
            rows.append(_latency_row(axis, columns))
        elif axis == "size":
            rows.append({"axis": axis, "label": AXES[axis], "kind": "size",
                         "cells": [{"value": c["variant"].size_bytes} for c in columns]})
        elif axis == "memory":
            rows.append({"axis": axis, "label": AXES[axis], "kind": "memory",
                         "cells": [{"value": c["result"].peak_memory_mb if c["result"] else None} for c in columns]})
        else:
            rows.append({"axis": axis, "label": AXES[axis], "kind": "accuracy",
                         "cells": [{"metric": c["accuracy"]} for c in columns]})
    return {"columns": columns, "rows": rows}
