"""Which passes to run for a model, and which of the resulting variants is best (pure: no Django).

A plan is a list of ``PlanStep``: each step runs one pass on the model produced by an earlier step
(or on the uploaded ``original``). After benchmarking and the readiness verdict each variant
becomes a ``Candidate``; ``rank`` orders the passing ones, draws the Pareto frontier and rejects
variants that gain nothing over their parent.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from workers.evaluation.accuracy import HIGHER_IS_BETTER, AccuracyReport
from workers.evaluation.bench import BenchReport
from workers.evaluation.readiness import ProfileSpec, Verdict, reference_value
from workers.passes import PASS_NAMES

ORIGINAL = "original"
TARGETS = ("cpu", "cuda")
SOURCE_FORMATS = ("onnx", "torchscript")
PRIORITIES = ("latency", "size", "accuracy")
# Latency and size closer than this ratio rank as equal, so that measurement noise does not
# decide between two variants and the next priority can.
_TIE_RATIO = 1.05


class PlanError(ValueError):
    """A plan that cannot run; the message names the step and what is wrong."""


@dataclass(frozen=True)
class PlanStep:
    """One pass to run: its step name (unique in the plan), pass, options and input step."""

    name: str
    pass_name: str
    options: dict[str, Any] = field(default_factory=dict)
    source: str = ORIGINAL

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pass_name": self.pass_name, "options": dict(self.options), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanStep:
        return cls(name=data["name"], pass_name=data["pass_name"], options=dict(data.get("options", {})),
                   source=data.get("source", ORIGINAL))


def default_plan(
    *, target: str, task: str, source_format: str, has_calibration: bool, has_training: bool = False
) -> list[PlanStep]:
    """A small plan that usually finds a good variant; each step says why it is there.

    Every optimization step starts from the same base model (the original ONNX, or the ONNX
    export of a TorchScript upload), so that variants are independent: one failing pass does
    not take the others down, and each variant's speed-up is measured against the base.
    Left out on purpose: unstructured magnitude pruning (zeros in dense ONNX tensors make the
    model neither smaller nor faster) and quantize_search (many quantize-evaluate rounds;
    ask for it when int8 misses an accuracy bound).
    """
    if target not in TARGETS:
        raise PlanError(f"Unknown target {target!r}; use one of {', '.join(TARGETS)}.")
    if source_format not in SOURCE_FORMATS:
        raise PlanError(f"Cannot plan for a {source_format!r} model; plans start from {' or '.join(SOURCE_FORMATS)}.")
    steps: list[PlanStep] = []
    base = ORIGINAL
    if source_format == "torchscript":
        # Every other pass works on ONNX; the export checks its outputs against TorchScript.
        steps.append(PlanStep("export", "export", {"opset": 17}))
        base = "export"
    # Graph fusions cost seconds and lose no accuracy: the cheapest speed-up there is.
    steps.append(PlanStep("graph", "graph", {"level": "extended"}, base))
    if target == "cpu":
        # int8 kernels are what makes CPUs faster; ONNX Runtime's CUDA provider has none, so on
        # CUDA these variants would fall back to CPU kernels or run dequantized in float.
        # Per-channel weights keep accuracy for a negligible cost.
        steps.append(PlanStep("int8-dynamic", "quantize_dynamic", {"per_channel": True}, base))
        if has_calibration:
            # Static QDQ also quantizes activations: faster than dynamic, but needs calibration data.
            steps.append(PlanStep("int8-static", "quantize_static", {"format": "qdq", "method": "minmax"}, base))
    else:
        # Half precision halves size and uses tensor cores; IO stays float32 for callers.
        steps.append(PlanStep("fp16", "fp16", {"keep_io_types": True}, base))
    if task in ("classification", "regression"):
        # Removing half of the channels shrinks and speeds up MLP/CNN layers; an embedding's
        # geometry is too sensitive to it without retraining.
        steps.append(PlanStep("prune-structured", "prune_structured", {"ratio": 0.5}, base))
    if has_training or task == "classification":
        # A half-width student is the largest win, but training costs minutes: worth it when a
        # training set exists, or for a classifier, whose student learns mostly from the teacher's
        # soft labels and so does well on a split of the validation inputs (the distill pass's fallback).
        steps.append(PlanStep("distill", "distill", {"width": 0.5}, base))
    validate_plan(steps)
    return steps


def validate_plan(steps: list[PlanStep]) -> None:
    """Refuse a plan with duplicate names, unknown passes or sources that do not come earlier."""
    seen: set[str] = set()
    for position, step in enumerate(steps, start=1):
        where = f"Step {position} ({step.name!r})"
        if not step.name or step.name == ORIGINAL:
            raise PlanError(f"{where} needs a name other than {ORIGINAL!r}.")
        if step.name in seen:
            raise PlanError(f"{where}: the name is used by an earlier step; step names must be unique.")
        if step.pass_name not in PASS_NAMES:
            raise PlanError(f"{where}: unknown pass {step.pass_name!r}; known passes: {', '.join(PASS_NAMES)}.")
        if step.source != ORIGINAL and step.source not in seen:
            raise PlanError(f"{where}: source {step.source!r} is not an earlier step or {ORIGINAL!r}.")
        if not isinstance(step.options, dict):
            raise PlanError(f"{where}: options must be a JSON object.")
        seen.add(step.name)


# --- ranking ------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One variant as the ranking sees it: its lineage, its numbers and its verdict.

    ``latency_ms`` is p95 at the profile's batch size; ``accuracy`` the value of the profile's
    metric (None when not measured). ``accuracy_limit`` is the value the metric had to reach
    (from min_accuracy / max_accuracy_drop) and ``options`` the pass options, both used by the advisor.
    """

    name: str
    parent: str | None
    pass_name: str
    size_bytes: int
    latency_ms: float
    accuracy: float | None
    higher_is_better: bool
    passed: bool
    failures: list[str] = field(default_factory=list)
    finite: bool = True
    metric: str | None = None
    accuracy_limit: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def measurable(self) -> bool:
        """Finite outputs and finite numbers: the candidate can be compared with others."""
        numbers = [self.latency_ms, float(self.size_bytes)] + ([self.accuracy] if self.accuracy is not None else [])
        return self.finite and all(math.isfinite(x) for x in numbers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(**data)


def _accuracy_limit(metric: str, profile: ProfileSpec, reference_value: float | None) -> float | None:
    """The value the metric must reach: the tighter of min_accuracy and reference − max drop."""
    higher = HIGHER_IS_BETTER[metric]
    limits = [profile.min_accuracy] if profile.min_accuracy is not None else []
    if profile.max_accuracy_drop is not None and reference_value is not None:
        limits.append(reference_value - profile.max_accuracy_drop if higher else reference_value + profile.max_accuracy_drop)
    if not limits:
        return None
    return max(limits) if higher else min(limits)


def make_candidate(
    *,
    name: str,
    parent: str | None,
    pass_name: str,
    profile: ProfileSpec,
    bench: BenchReport,
    accuracy: AccuracyReport | None,
    verdict: Verdict,
    reference_accuracy: AccuracyReport | None = None,
    options: dict[str, Any] | None = None,
) -> Candidate:
    """Build a Candidate from a variant's measurements and verdict under ``profile``."""
    metric = profile.metric_for(accuracy.task) if accuracy is not None else profile.accuracy_metric
    value = accuracy.metrics.get(metric) if accuracy is not None and metric else None
    batch = profile.batch_size
    limit = _accuracy_limit(metric, profile, reference_value(metric, reference_accuracy)) if metric else None
    return Candidate(
        name=name,
        parent=parent,
        pass_name=pass_name,
        size_bytes=bench.file_size_bytes,
        latency_ms=bench.p95(batch) if batch in bench.results else math.inf,
        accuracy=value,
        higher_is_better=HIGHER_IS_BETTER.get(metric, True) if metric else True,
        passed=verdict.passed,
        failures=list(verdict.failures),
        finite=accuracy.finite if accuracy is not None else True,
        metric=metric,
        accuracy_limit=limit,
        options=dict(options or {}),
    )


@dataclass
class Ranking:
    """Passing variants best first, the Pareto frontier, rejections and the choice."""

    ordered: list[str]
    pareto: set[str]
    rejected: dict[str, str]
    best: str | None
    best_effort: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"ordered": list(self.ordered), "pareto": sorted(self.pareto), "rejected": dict(self.rejected),
                "best": self.best, "best_effort": self.best_effort}


def _better_accuracy(a: Candidate, b: Candidate) -> bool:
    """a is strictly more accurate than b (unknown accuracy is never better)."""
    if a.accuracy is None or b.accuracy is None:
        return False
    return a.accuracy > b.accuracy if a.higher_is_better else a.accuracy < b.accuracy


def _dominates(a: Candidate, b: Candidate) -> bool:
    """a is no worse than b on latency, size and accuracy, and better on one of them."""
    no_worse = a.latency_ms <= b.latency_ms and a.size_bytes <= b.size_bytes and not _better_accuracy(b, a)
    better = a.latency_ms < b.latency_ms or a.size_bytes < b.size_bytes or _better_accuracy(a, b)
    return no_worse and better


def _no_gain(child: Candidate, parent: Candidate) -> bool:
    """Slower than its parent beyond noise, no smaller and no more accurate."""
    return (child.latency_ms > parent.latency_ms * _TIE_RATIO and child.size_bytes >= parent.size_bytes
            and not _better_accuracy(child, parent))


def _bucket(value: float) -> int:
    return round(math.log(max(value, 1e-12)) / math.log(_TIE_RATIO))


def _sort_key(candidate: Candidate, priority: tuple[str, ...]) -> tuple[float, ...]:
    accuracy = candidate.accuracy if candidate.accuracy is not None else math.nan
    keys = {
        "latency": _bucket(candidate.latency_ms),
        "size": _bucket(float(candidate.size_bytes)),
        # Unknown accuracy sorts last among equals.
        "accuracy": (-accuracy if candidate.higher_is_better else accuracy) if math.isfinite(accuracy) else math.inf,
    }
    return tuple(keys[p] for p in priority) + (candidate.latency_ms,)


def rank(candidates: list[Candidate], *, priority: tuple[str, ...] = PRIORITIES) -> Ranking:
    """Order the passing candidates by ``priority`` (latency and size within 5 % count as equal),
    draw the latency / size / accuracy Pareto frontier over all measurable candidates, and reject
    a variant that is more than 5 % slower than its parent while neither smaller nor more accurate.
    When nothing passes, ``best_effort`` is the measurable candidate with the fewest failures."""
    unknown = [p for p in priority if p not in PRIORITIES]
    if unknown or not priority:
        raise PlanError(f"Unknown priority {', '.join(unknown) or '(empty)'}; use {', '.join(PRIORITIES)}.")
    by_name = {c.name: c for c in candidates}
    rejected = {
        c.name: f"no gain over parent {c.parent}"
        for c in candidates
        if c.parent in by_name and c.measurable and by_name[c.parent].measurable and _no_gain(c, by_name[c.parent])
    }
    measurable = [c for c in candidates if c.measurable]
    pareto = {c.name for c in measurable if not any(_dominates(o, c) for o in measurable if o is not c)}
    passing = [c for c in measurable if c.passed and c.name not in rejected]
    ordered = [c.name for c in sorted(passing, key=lambda c: _sort_key(c, priority))]
    best_effort = None
    if not ordered:
        failing = sorted((c for c in measurable if not c.passed),
                         key=lambda c: (len(c.failures), *_sort_key(c, priority)))
        best_effort = failing[0].name if failing else None
    return Ranking(ordered=ordered, pareto=pareto, rejected=rejected, best=ordered[0] if ordered else None,
                   best_effort=best_effort)
