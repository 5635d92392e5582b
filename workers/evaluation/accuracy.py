"""How far a variant's outputs are from the original's, and from the labels (pure: no Django).

``compare_outputs`` works on arrays already computed; ``evaluate`` runs two ONNX files on a
validation dataset and compares them. Metrics by task:

- every task: ``max_abs_error`` and ``rel_l2`` (||candidate - reference|| / ||reference|| over all
  outputs) and ``finite`` (False when any candidate output holds NaN or Inf);
- classification: ``agreement`` (top-1 equal to the reference's) and, with labels, ``accuracy``;
- regression: ``mae`` vs the reference and, with labels, ``pearson`` r and ``label_mae`` vs labels;
- embedding: ``cosine_mean`` and ``cosine_min`` of each row against the reference row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workers.errors import EngineError

HIGHER_IS_BETTER: dict[str, bool] = {
    "agreement": True,
    "accuracy": True,
    "pearson": True,
    "cosine_mean": True,
    "cosine_min": True,
    "mae": False,
    "label_mae": False,
    "max_abs_error": False,
    "rel_l2": False,
}

# Fidelity: how close a variant's outputs are to the original's. Task quality: how good they are
# against the dataset's labels. Pages and answers show them as separate, named columns.
FIDELITY_METRICS = ("agreement", "cosine_mean", "cosine_min", "mae", "max_abs_error", "rel_l2")
TASK_METRICS = ("accuracy", "label_mae", "pearson")
TASKS = ("classification", "regression", "embedding")
_DEFAULT_METRIC = {"classification": "agreement", "regression": "mae", "embedding": "cosine_min"}

# Rows whose L2 norm is this close to 1 are taken as normalized embeddings.
_UNIT_NORM_TOLERANCE = 1e-3
# Wide outputs without class labels or probabilities are read as feature vectors.
_EMBEDDING_MIN_WIDTH = 32
# Evaluation feeds the models this many rows at a time to bound memory.
_EVAL_BATCH = 64


class AccuracyInputError(EngineError, ValueError):
    """Outputs or a dataset that cannot be compared; the message says what is wrong."""


@dataclass
class AccuracyReport:
    """Metrics of one candidate against the reference (and labels when the dataset has them)."""

    task: str
    metrics: dict[str, float] = field(default_factory=dict)
    finite: bool = True
    samples: int = 0

    def value(self, metric: str) -> float:
        """One metric by name; a metric the report lacks is an error that names those it has."""
        if metric not in self.metrics:
            raise KeyError(f"No {metric!r} in this {self.task} report; it has {', '.join(sorted(self.metrics))}.")
        return self.metrics[metric]

    def to_dict(self) -> dict[str, Any]:
        # NaN / Inf become None so that the dict is strict JSON.
        metrics = {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()}
        return {"task": self.task, "metrics": metrics, "finite": self.finite, "samples": self.samples}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccuracyReport:
        metrics = {k: (math.nan if v is None else float(v)) for k, v in data.get("metrics", {}).items()}
        return cls(task=data["task"], metrics=metrics, finite=bool(data.get("finite", True)),
                   samples=int(data.get("samples", 0)))


def default_metric(task: str) -> str:
    """The metric a readiness profile uses when it names none."""
    if task not in _DEFAULT_METRIC:
        raise AccuracyInputError(f"Unknown task {task!r}; use one of {', '.join(TASKS)}.")
    return _DEFAULT_METRIC[task]


def _is_class_labels(labels: np.ndarray | None, width: int) -> bool:
    if labels is None or labels.size == 0:
        return False
    flat = labels.reshape(-1)
    return np.issubdtype(flat.dtype, np.integer) and flat.min() >= 0 and flat.max() < width


def _is_probability_rows(rows: np.ndarray) -> bool:
    return bool(np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3))


def infer_task(outputs: list[np.ndarray], labels: np.ndarray | None = None) -> str:
    """Guess the task from the reference's first output (and the labels, when given).

    The rule, in order:
    1. ``[batch]`` or ``[batch, 1]`` -> regression (one number per sample);
    2. rank 3 or more (``[batch, seq, hidden]`` ...) -> embedding (features, not scores);
    3. ``[batch, k > 1]`` with every row of unit L2 norm -> embedding (normalized vectors);
    4. ``[batch, k]`` whose rows are probabilities, or with integer labels in ``[0, k)``
       -> classification;
    5. ``[batch, k >= 32]`` otherwise -> embedding (wide and neither scores of labelled classes nor
       probabilities); narrower -> classification (logits).
    """
    if not outputs:
        raise AccuracyInputError("There are no outputs to infer a task from.")
    first = np.asarray(outputs[0])
    if first.ndim <= 1 or (first.ndim == 2 and first.shape[1] == 1):
        return "regression"
    if first.ndim >= 3:
        return "embedding"
    rows = first.astype(np.float64)
    finite = rows[np.all(np.isfinite(rows), axis=1)]
    if len(finite) and np.allclose(np.linalg.norm(finite, axis=1), 1.0, atol=_UNIT_NORM_TOLERANCE):
        return "embedding"
    width = first.shape[1]
    if (len(finite) and _is_probability_rows(finite)) or _is_class_labels(labels, width):
        return "classification"
    return "embedding" if width >= _EMBEDDING_MIN_WIDTH else "classification"


def _as_float_rows(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    return array.reshape(len(array), -1) if array.ndim >= 1 else array.reshape(1, 1)


def _check_shapes(reference: list[np.ndarray], candidate: list[np.ndarray]) -> None:
    if not reference:
        raise AccuracyInputError("The reference produced no outputs.")
    if len(reference) != len(candidate):
        raise AccuracyInputError(f"The reference has {len(reference)} outputs but the candidate has {len(candidate)}.")
    for i, (r, c) in enumerate(zip(reference, candidate, strict=True)):
        if np.shape(r) != np.shape(c):
            raise AccuracyInputError(f"Output {i} has shape {np.shape(c)} but the reference's is {np.shape(r)}.")


def _common_metrics(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, float]:
    diff_sq = ref_sq = 0.0
    max_abs = 0.0
    for r, c in zip(reference, candidate, strict=True):
        delta = np.asarray(c, dtype=np.float64) - np.asarray(r, dtype=np.float64)
        if delta.size:
            max_abs = max(max_abs, float(np.max(np.abs(delta))))
        diff_sq += float(np.sum(delta * delta))
        ref_sq += float(np.sum(np.asarray(r, dtype=np.float64) ** 2))
    rel_l2 = math.sqrt(diff_sq) / math.sqrt(ref_sq) if ref_sq > 0 else math.sqrt(diff_sq)
    return {"max_abs_error": max_abs, "rel_l2": rel_l2}


def _classification_metrics(ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    ref_top, cand_top = np.argmax(_as_float_rows(ref), axis=1), np.argmax(_as_float_rows(cand), axis=1)
    # argmax of a NaN row is index 0: such rows must not count as agreeing.
    valid = np.all(np.isfinite(_as_float_rows(cand)), axis=1)
    metrics = {"agreement": float(np.mean((ref_top == cand_top) & valid))}
    if labels is not None:
        truth = np.asarray(labels).reshape(-1)[: len(cand_top)]
        metrics["accuracy"] = float(np.mean((cand_top == truth) & valid))
    return metrics


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y)))
    return float(np.sum(x * y)) / denominator if denominator > 0 else math.nan


def _regression_metrics(ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    r, c = np.asarray(ref, dtype=np.float64).reshape(-1), np.asarray(cand, dtype=np.float64).reshape(-1)
    metrics = {"mae": float(np.mean(np.abs(c - r)))}
    if labels is not None:
        truth = np.asarray(labels, dtype=np.float64).reshape(-1)
        if truth.size != c.size:
            raise AccuracyInputError(f"There are {truth.size} labels for {c.size} predictions.")
        metrics["pearson"] = _pearson(c, truth)
        metrics["label_mae"] = float(np.mean(np.abs(c - truth)))
    return metrics


def _embedding_metrics(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    r, c = _as_float_rows(ref), _as_float_rows(cand)
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, np.sum(r * c, axis=1) / norms, np.where(np.all(r == c, axis=1), 1.0, 0.0))
    cosine = np.clip(cosine, -1.0, 1.0)  # rounding can put identical rows a hair above 1
    return {"cosine_mean": float(np.mean(cosine)), "cosine_min": float(np.min(cosine))}


def compare_outputs(
    reference: list[np.ndarray],
    candidate: list[np.ndarray],
    *,
    task: str,
    labels: np.ndarray | None = None,
) -> AccuracyReport:
    """Compare a candidate's outputs with the reference's (first output carries the task).

    ``task`` is one of classification / regression / embedding, or "auto" (see ``infer_task``).
    A candidate with NaN or Inf anywhere gets ``finite=False``; its metrics are still computed
    (and are NaN where the non-finite values reach them).
    """
    _check_shapes(reference, candidate)
    if task == "auto":
        task = infer_task(reference, labels)
    if task not in TASKS:
        raise AccuracyInputError(f"Unknown task {task!r}; use one of {', '.join(TASKS)} or 'auto'.")
    finite = all(bool(np.all(np.isfinite(np.asarray(c, dtype=np.float64)))) for c in candidate)
    ref0, cand0 = reference[0], candidate[0]
    if labels is not None and len(labels) != len(cand0):
        raise AccuracyInputError(f"There are {len(labels)} labels for {len(cand0)} samples.")
    with np.errstate(invalid="ignore", over="ignore"):
        metrics = _common_metrics(reference, candidate)
        if task == "classification":
            metrics.update(_classification_metrics(ref0, cand0, labels))
        elif task == "regression":
            metrics.update(_regression_metrics(ref0, cand0, labels))
        else:
            metrics.update(_embedding_metrics(ref0, cand0))
    samples = len(cand0) if np.ndim(cand0) else 1
    return AccuracyReport(task=task, metrics=metrics, finite=finite, samples=samples)


def _fixed_batch(signature: Any) -> int | None:
    """The model's fixed first dim, or None when the batch axis is symbolic."""
    first = signature.inputs[0].shape[0] if signature.inputs and signature.inputs[0].shape else None
    return first if isinstance(first, int) and first > 0 else None


def _run_model(path: Path, arrays: dict[str, np.ndarray], rows: int, threads: int) -> list[np.ndarray]:
    from workers import ort
    from workers.formats import model_inputs, signature_from_onnx

    signature = signature_from_onnx(path)
    missing = [name for name in signature.input_names if name not in arrays]
    if missing:
        raise AccuracyInputError(
            f"The dataset has no array named {', '.join(missing)}; it has {', '.join(sorted(arrays))}."
        )
    feeds = model_inputs(arrays, signature)
    session = ort.session(path, threads=threads)
    fixed = _fixed_batch(signature)
    step = fixed or _EVAL_BATCH
    usable = rows - rows % fixed if fixed else rows  # a fixed-batch model cannot take a short tail
    if usable == 0:
        raise AccuracyInputError(f"The dataset has {rows} rows, fewer than the model's fixed batch of {fixed}.")
    chunks = [
        session.run(None, {name: value[start : min(start + step, usable)] for name, value in feeds.items()})
        for start in range(0, usable, step)
    ]
    return [np.concatenate([chunk[i] for chunk in chunks]) for i in range(len(chunks[0]))]


@dataclass(frozen=True)
class ReferenceRun:
    """The reference model's outputs on a dataset, computed once and compared with every candidate."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    rows: int
    outputs: list[np.ndarray]

    def compare(self, candidate: Path, *, task: str = "auto", threads: int = 1) -> AccuracyReport:
        """Run ``candidate`` on the same rows and compare its outputs with the reference's."""
        cand_out = _run_model(candidate, self.arrays, self.rows, threads)
        used = len(self.outputs[0])
        return compare_outputs(self.outputs, cand_out, task=task,
                               labels=None if self.labels is None else self.labels[:used])

    def itself(self, *, task: str = "auto") -> AccuracyReport:
        """The reference compared with its own outputs (its score on the labels, where there are some)."""
        used = len(self.outputs[0])
        return compare_outputs(self.outputs, self.outputs, task=task,
                               labels=None if self.labels is None else self.labels[:used])


def run_reference(reference: Path, dataset: Path, *, max_samples: int = 1024, threads: int = 1) -> ReferenceRun:
    """Run the reference ONNX file on the dataset's first ``max_samples`` rows.

    The dataset is an .npz whose arrays are named after the model inputs, plus ``labels``
    when the task has them. Each model's inputs are cast to its own signature's types, so a
    variant with float16 inputs is fed the same values.
    """
    from workers.formats import read_npz

    arrays = read_npz(dataset)
    labels = arrays.pop("labels", None)
    if not arrays:
        raise AccuracyInputError("The dataset has no input arrays.")
    rows = min(max_samples, min(len(a) for a in arrays.values()))
    return ReferenceRun(arrays=arrays, labels=labels, rows=rows, outputs=_run_model(reference, arrays, rows, threads))


def evaluate(reference: Path, candidate: Path, dataset: Path, *, task: str = "auto", max_samples: int = 1024,
             threads: int = 1) -> AccuracyReport:
    """Run both ONNX files on the dataset's first ``max_samples`` rows and compare them (one
    candidate; a job comparing several runs the reference once with ``run_reference``)."""
    run = run_reference(reference, dataset, max_samples=max_samples, threads=threads)
    return run.compare(candidate, task=task, threads=threads)
