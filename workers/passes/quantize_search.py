"""quantize_search: accuracy-aware INT8 — try quantization recipes, keep the best that meets a bound.

The bound is on one metric of ``workers.evaluation.accuracy.compare_outputs`` measured on
``validation_data`` (candidate vs the float model's own outputs, and vs ``labels`` where the
dataset has them):

- ``metric``: a metric name (agreement, accuracy, pearson, cosine_mean, cosine_min, mae,
  label_mae, max_abs_error, rel_l2) or ``auto`` (the task's default: agreement / mae / cosine_min);
  ``task``: classification / regression / embedding or ``auto`` (inferred from the outputs);
- ``max_drop``: how much worse than the float model the candidate may be (for higher-is-better
  metrics ``value >= reference - max_drop``; for errors ``value <= reference + max_drop``, the
  reference of an error against itself being 0);
- ``min_value``: the worst acceptable value itself (a floor for higher-is-better metrics, a
  ceiling for errors such as mae);
- both may be given (both must hold); with neither, ``max_drop = 0.01`` is used (noted).

Candidates, in order (all on the model after ORT's quantization pre-processing, done once):
1. dynamic, per-tensor weights;  2. dynamic, per-channel weights;
3-5. static QDQ per-channel with MinMax, then Entropy, then Percentile calibration (only with
   ``calibration_data``; each method is calibrated once and its ranges reused below);
6. only when none of those passes: keep the most sensitive weight nodes in float. Sensitivity is
   measured by *exclude-one*: with the best recipe so far, each MatMul/Gemm/Conv (etc.) node that
   has a weight is left unquantized in turn and the metric measured; the nodes whose exclusion
   helps most are the most sensitive. Then the top 2, 4, 8 ... are excluded together (never all).
   Nodes not reached before the time budget ran out count as least sensitive.

The search stops starting new candidates once ``time_budget_s`` is spent (the first candidate
always runs). Of the candidates that pass, the best metric value wins (ties: smaller file) —
not the first to pass. When none passes, the best-scoring candidate is kept as a best effort,
``metrics["passed"]`` is False and the notes say why. Non-finite outputs never pass.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workers import ort
from workers.passes import _onnx_util as util
from workers.passes import quantize_dynamic, quantize_static
from workers.passes.base import PassInputError, PassResult, UnsupportedModelError, data_field
from workers.passes.frame import PassRun
from workers.search.sensitivity import exclusion_counts, weight_nodes

NAME = "quantize_search"
DEFAULT_MAX_DROP = 0.01
TASKS = ("auto", "classification", "regression", "embedding")
_EVAL_ROWS = 1024
_EVAL_BATCH = 64
_STATIC_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class Config:
    """Options of the accuracy-aware INT8 search (see the module docstring for the bound's meaning)."""

    metric: str = "auto"
    min_value: float | None = None
    max_drop: float | None = None
    time_budget_s: float = 120.0
    task: str = "auto"
    validation_data: Path | None = data_field()
    calibration_data: Path | None = data_field()

    def __post_init__(self) -> None:
        from workers.evaluation.accuracy import HIGHER_IS_BETTER

        for name in ("validation_data", "calibration_data"):
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.metric != "auto" and self.metric not in HIGHER_IS_BETTER:
            raise PassInputError(f"Unknown metric {self.metric!r}; use auto or one of {', '.join(HIGHER_IS_BETTER)}.")
        if self.task not in TASKS:
            raise PassInputError(f"Unknown task {self.task!r}; use one of {', '.join(TASKS)}.")
        if self.max_drop is not None and not (isinstance(self.max_drop, (int, float)) and self.max_drop >= 0):
            raise PassInputError(f"max_drop must be a non-negative number; got {self.max_drop!r}.")
        if self.min_value is not None and not (isinstance(self.min_value, (int, float)) and math.isfinite(self.min_value)):
            raise PassInputError(f"min_value must be a number; got {self.min_value!r}.")
        if not (isinstance(self.time_budget_s, (int, float)) and self.time_budget_s > 0):
            raise PassInputError(f"time_budget_s must be a positive number; got {self.time_budget_s!r}.")


@dataclass
class _Bound:
    """The accuracy bound: metric, direction, the float model's value and the threshold."""

    metric: str
    higher_is_better: bool
    reference: float
    threshold: float

    def passes(self, value: float, finite: bool) -> bool:
        """Whether a measured value meets the bound (non-finite outputs never do)."""
        if not finite or not math.isfinite(value):
            return False
        return value >= self.threshold if self.higher_is_better else value <= self.threshold

    def key(self, value: float) -> float:
        """Sort key: smaller is better; NaN is worst."""
        if not math.isfinite(value):
            return math.inf
        return -value if self.higher_is_better else value

    def describe(self) -> str:
        """The bound in words, e.g. "mae <= 0.01 (float model: 0)"."""
        op = ">=" if self.higher_is_better else "<="
        return f"{self.metric} {op} {self.threshold:.6g} (float model: {self.reference:.6g})"


@dataclass
class _Candidate:
    """One quantization recipe and what it measured."""

    name: str
    kind: str  # dynamic | static
    settings: dict[str, Any]
    excluded: tuple[str, ...] = ()
    path: Path | None = None
    value: float = math.nan
    finite: bool = False
    passed: bool = False
    size: int = 0
    seconds: float = 0.0
    error: str | None = None
    report: dict[str, float] | None = None

    def summary(self) -> dict[str, Any]:
        """The candidate as reported in ``metrics["candidates"]``."""
        return {
            "name": self.name,
            "value": self.value if math.isfinite(self.value) else None,
            "passed": self.passed,
            "size": self.size,
            "seconds": round(self.seconds, 3),
            "excluded_nodes": len(self.excluded),
            **({"error": self.error} if self.error else {}),
        }


@dataclass
class _Setup:
    """What every candidate is measured with: validation feeds, the float model's outputs, the bound."""

    signature: util.Signature
    feeds: dict[str, np.ndarray]
    labels: np.ndarray | None
    reference: list[np.ndarray]
    task: str
    bound: _Bound
    calibration_feeds: dict[str, np.ndarray] | None


class _Search:
    """Builds and measures candidates in one scratch directory, keeping only the best file."""

    def __init__(self, work: Path, model_path: Path, setup: _Setup, time_budget_s: float) -> None:
        self.work, self.model_path, self.setup = work, model_path, setup
        self.bound, self.time_budget_s = setup.bound, time_budget_s
        self.started = time.perf_counter()
        self.candidates: list[_Candidate] = []
        self.best: _Candidate | None = None
        self.calibrations: dict[str, quantize_static.Calibration] = {}
        self.out_of_time = False
        self.threads = max(1, min(4, os.cpu_count() or 1))

    def time_left(self) -> bool:
        """False once the budget is spent (the first candidate always runs)."""
        if self.candidates and time.perf_counter() - self.started >= self.time_budget_s:
            self.out_of_time = True
        return not self.out_of_time

    def _evaluate(self, path: Path) -> tuple[float, bool, dict[str, float]]:
        from workers.evaluation.accuracy import compare_outputs

        setup = self.setup
        session = ort.session(path, threads=self.threads)
        outputs = util.run_batched(session, setup.feeds, batch=_EVAL_BATCH, fixed=util.fixed_batch(setup.signature))
        report = compare_outputs(setup.reference, outputs, task=setup.task, labels=setup.labels)
        return float(report.metrics.get(self.bound.metric, math.nan)), bool(report.finite), dict(report.metrics)

    def _build(self, candidate: _Candidate, target: Path) -> None:
        if candidate.kind == "dynamic":
            config = quantize_dynamic.Config(nodes_to_exclude=candidate.excluded, **candidate.settings)
            quantize_dynamic.quantize(self.model_path, target, config, self.work)
            return
        method = candidate.settings["method"]
        if method not in self.calibrations:  # each method calibrates once; exclusions reuse its ranges
            self.calibrations[method] = quantize_static.calibrate(
                self.model_path, self.work, self.setup.calibration_feeds or {}, method,
                quantize_static.Config().max_memory_mb, util.fixed_batch(self.setup.signature),
            )
        config = quantize_static.Config(nodes_to_exclude=candidate.excluded, **candidate.settings)
        quantize_static.quantize(self.model_path, target, self.calibrations[method], config, self.work)

    def try_candidate(self, candidate: _Candidate) -> _Candidate:
        """Build and measure one candidate; only the best file so far is kept on disk."""
        started = time.perf_counter()
        directory = self.work / f"candidate-{len(self.candidates):03d}"
        directory.mkdir()
        target = directory / "model.onnx"
        try:
            self._build(candidate, target)
            candidate.value, candidate.finite, candidate.report = self._evaluate(target)
            candidate.passed = self.bound.passes(candidate.value, candidate.finite)
            candidate.size = util.file_size(target)
            candidate.path = target
        except Exception as exc:  # noqa: BLE001 - one failing recipe (any onnxruntime error) must not end the search
            candidate.error = f"{type(exc).__name__}: {str(exc)[:300]}"
        candidate.seconds = time.perf_counter() - started
        self.candidates.append(candidate)
        if candidate.path is not None and (self.best is None or self._better(candidate, self.best)):
            if self.best is not None and self.best.path is not None:
                shutil.rmtree(self.best.path.parent, ignore_errors=True)
            self.best = candidate
        else:
            shutil.rmtree(directory, ignore_errors=True)
        return candidate

    def _better(self, a: _Candidate, b: _Candidate) -> bool:
        """Passing beats failing; then the better metric value; then the smaller file."""
        return (not a.passed, self.bound.key(a.value), a.size) < (not b.passed, self.bound.key(b.value), b.size)

    def any_passed(self) -> bool:
        """Whether some candidate met the bound."""
        return any(c.passed for c in self.candidates)

    def weight_nodes(self) -> list[str]:
        """Names of the nodes whose weights quantization changes (the search's one definition of them)."""
        return weight_nodes(self.model_path)

    def exclusion_stage(self, base: _Candidate) -> None:
        """Rank weight nodes by exclude-one, then keep the top 2, 4, 8 ... in float."""
        nodes = self.weight_nodes()
        if len(nodes) < 2:
            return
        gains: dict[str, float] = {}  # how much leaving the node in float improves the metric
        for node in nodes:
            if not self.time_left():
                break
            trial = self.try_candidate(_Candidate(f"{base.name}-exclude-{node}", base.kind, base.settings, (node,)))
            if trial.error is None:
                gains[node] = self.bound.key(base.value) - self.bound.key(trial.value)
        if not gains:
            return
        # Unmeasured (or failed) nodes rank last; NaN gains (a non-finite metric) rank last too.
        ranked = sorted(nodes, key=lambda n: -gains[n] if math.isfinite(gains.get(n, math.nan)) else math.inf)
        for count in exclusion_counts(len(nodes))[1:]:  # the top one alone was measured by exclude-one
            if self.any_passed() or not self.time_left():
                break
            self.try_candidate(_Candidate(f"{base.name}-exclude-top{count}", base.kind, base.settings,
                                          tuple(ranked[:count])))

    def run(self, plan: list[_Candidate]) -> tuple[_Candidate, Path]:
        """Try the plan, then (when nothing passed) the exclusion stage; the kept candidate and its file."""
        for candidate in plan:
            if not self.time_left():
                break
            self.try_candidate(candidate)
        if not self.any_passed() and self.best is not None and self.time_left():
            self.exclusion_stage(self.best)
        if self.best is None or self.best.path is None:
            errors = "; ".join(f"{c.name}: {c.error}" for c in self.candidates if c.error)
            raise UnsupportedModelError(f"No quantized candidate could be built ({errors}).")
        return self.best, self.best.path


def _bound(config: Config, task: str, reference_metrics: dict[str, float], notes: list[str]) -> _Bound:
    from workers.evaluation.accuracy import HIGHER_IS_BETTER, default_metric

    metric = default_metric(task) if config.metric == "auto" else config.metric
    if metric not in reference_metrics:
        raise PassInputError(
            f"Metric {metric!r} is not measured for a {task} model on this dataset"
            + (" (it needs labels in the validation dataset)" if metric in ("accuracy", "pearson", "label_mae") else "")
            + f"; available: {', '.join(sorted(reference_metrics))}."
        )
    higher = HIGHER_IS_BETTER[metric]
    reference = float(reference_metrics[metric])
    max_drop = config.max_drop
    if max_drop is None and config.min_value is None:
        max_drop = DEFAULT_MAX_DROP
        notes.append(f"No bound given: using max_drop={DEFAULT_MAX_DROP} on {metric}.")
    limits = []
    if max_drop is not None:
        limits.append(reference - max_drop if higher else reference + max_drop)
    if config.min_value is not None:
        limits.append(float(config.min_value))
    threshold = max(limits) if higher else min(limits)
    return _Bound(metric=metric, higher_is_better=higher, reference=reference, threshold=threshold)


def _validation_feeds(config: Config, signature: util.Signature) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """At most ``_EVAL_ROWS`` validation rows (a multiple of a fixed batch) and their labels."""
    if config.validation_data is None:
        raise PassInputError(
            "quantize_search needs a validation dataset (.npz with one array per model input, plus labels "
            "when the metric uses them) to measure each candidate's accuracy."
        )
    feeds, labels = util.dataset_feeds(Path(config.validation_data), signature, what="validation")
    rows = min(_EVAL_ROWS, min(len(v) for v in feeds.values()))
    fixed = util.fixed_batch(signature)
    rows -= rows % fixed if fixed else 0
    if rows == 0:
        raise PassInputError("The validation dataset has fewer rows than the model's batch size.")
    return {name: value[:rows] for name, value in feeds.items()}, None if labels is None else labels[:rows]


def _setup(src: Path, config: Config, signature: util.Signature, notes: list[str]) -> _Setup:
    """Run the float model on the validation rows, settle task and metric, and state the bound."""
    from workers.evaluation.accuracy import compare_outputs, infer_task

    feeds, labels = _validation_feeds(config, signature)
    calibration_feeds = None
    if config.calibration_data is not None:
        calibration_feeds = quantize_static.load_calibration(config.calibration_data, signature,
                                                             quantize_static.Config().max_samples)
    try:
        session = ort.session(src, threads=max(1, min(4, os.cpu_count() or 1)))
        reference = util.run_batched(session, feeds, batch=_EVAL_BATCH, fixed=util.fixed_batch(signature))
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
        raise PassInputError(f"The model does not run on the validation data: {str(exc)[:500]}") from exc
    task = infer_task(reference, labels) if config.task == "auto" else config.task
    own = compare_outputs(reference, reference, task=task, labels=labels)  # the float model's own scores
    bound = _bound(config, task, own.metrics, notes)
    return _Setup(signature, feeds, labels, reference, task, bound, calibration_feeds)


def _plan(setup: _Setup, notes: list[str]) -> list[_Candidate]:
    plan = [
        _Candidate("dynamic-per-tensor", "dynamic", {"per_channel": False}),
        _Candidate("dynamic-per-channel", "dynamic", {"per_channel": True}),
    ]
    if setup.calibration_feeds is None:
        notes.append("No calibration dataset: static (calibrated) candidates were skipped.")
        return plan
    return plan + [
        _Candidate(f"static-qdq-{method}", "static", {"format": "qdq", "method": method, "per_channel": True})
        for method in _STATIC_METHODS
    ]


def _outcome_note(search: _Search, best: _Candidate, time_budget_s: float) -> list[str]:
    bound = search.bound
    notes = []
    if search.out_of_time:
        notes.append(f"Time budget of {time_budget_s:g} s spent after {len(search.candidates)} candidate(s).")
    if best.passed:
        notes.append(f"Chose {best.name}: {bound.metric} = {best.value:.6g}, bound {bound.describe()}.")
    else:
        closest = f"{best.value:.6g}" if math.isfinite(best.value) else "non-finite"
        notes.append(
            f"No candidate met {bound.describe()}; kept the best effort {best.name} ({bound.metric} = {closest}). "
            "Loosen the bound, provide calibration data, or keep the float model."
        )
    return notes


def _metrics(search: _Search, best: _Candidate, setup: _Setup, sizes: dict[str, Any]) -> dict[str, Any]:
    return {
        "candidates": [c.summary() for c in search.candidates],
        "chosen": best.name,
        "passed": best.passed,
        "task": setup.task,
        "metric": setup.bound.metric,
        "value": best.value if math.isfinite(best.value) else None,
        "reference_value": setup.bound.reference,
        "threshold": setup.bound.threshold,
        "accuracy": best.report or {},
        "excluded_nodes": list(best.excluded),
        **sizes,
        "validation_rows": len(setup.reference[0]),
    }


def run(src: Path, dst: Path, config: Config | None = None) -> PassResult:
    """Search INT8 recipes for the best one meeting the accuracy bound; write it to ``dst/model.onnx``."""
    config = config or Config()
    with PassRun(NAME, src, dst, config) as job:
        source = job.load()
        notes: list[str] = []
        setup = _setup(job.src, config, util.signature_of(source), notes)
        out_path = job.output()
        with util.scratch_dir(job.dst) as work:
            model_path, note = quantize_dynamic.preprocess(job.src, work)
            notes += [note] if note else []
            search = _Search(work, model_path, setup, config.time_budget_s)
            best, kept = search.run(_plan(setup, notes))
            os.replace(kept, out_path)
        notes += _outcome_note(search, best, config.time_budget_s)
        return job.result(_metrics(search, best, setup, job.sizes(ratio=True)), notes)
