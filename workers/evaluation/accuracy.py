"""How far a variant's outputs are from the original's, and from the labels (pure: no Django).

``compare_outputs`` works on arrays already computed; ``evaluate`` runs two ONNX files on a
validation dataset and compares them. Metrics by task:

- every task: ``max_abs_error`` and ``rel_l2`` (||candidate - reference|| / ||reference|| over all
  outputs) and ``finite`` (False when any candidate output holds NaN or Inf);
- classification: ``agreement`` (top-1 equal to the reference's) and, with labels, ``accuracy``;
- regression: ``mae`` vs the reference and, with labels, ``pearson`` r and ``label_mae`` vs labels;
- embedding: ``cosine_mean`` and ``cosine_min`` of each row against the reference row.

Padding is never compared: when the dataset tells the real positions of its rows (the model's
attention mask, or a ``lengths`` array; see ``workers.formats.datasets.real_positions``), a
token-level output (``[batch, seq, ...]`` whose first two dims are the mask's) is compared at real
tokens only (cosine per real token, then the usual aggregates; the common metrics likewise), while
a pooled output (``[batch, hidden]``) is compared as it is.

Batch: a model whose outputs depend on the other rows of its batch (dynamic quantization computes
activation scales per call) is run at the batch size the profile judges latency at; any other
model gives the same outputs at any batch, so it runs at ``_EVAL_BATCH`` rows per call. The report
says which batch was used (``batch_size``).
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
# Ops that compute activation scales from the whole batch at run time: outputs depend on batch mates.
BATCH_DEPENDENT_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
                                 "QAttention", "MatMulIntegerToFloat"})


class AccuracyInputError(EngineError, ValueError):
    """Outputs or a dataset that cannot be compared; the message says what is wrong."""


@dataclass
class AccuracyReport:
    """Metrics of one candidate against the reference (and labels when the dataset has them)."""

    task: str
    metrics: dict[str, float] = field(default_factory=dict)
    finite: bool = True
    samples: int = 0
    batch_size: int | None = None  # rows per call the candidate was run at (None: arrays given)
    real_positions_only: bool = False  # a token-level output compared at real tokens only

    def value(self, metric: str) -> float:
        """One metric by name; a metric the report lacks is an error that names those it has."""
        if metric not in self.metrics:
            raise KeyError(f"No {metric!r} in this {self.task} report; it has {', '.join(sorted(self.metrics))}.")
        return self.metrics[metric]

    def to_dict(self) -> dict[str, Any]:
        """As stored in JSON; NaN / Inf become None so that the dict is strict JSON."""
        metrics = {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()}
        return {"task": self.task, "metrics": metrics, "finite": self.finite, "samples": self.samples,
                "batch_size": self.batch_size, "real_positions_only": self.real_positions_only}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccuracyReport:
        """From ``to_dict``'s form (older rows lack the batch and positions keys)."""
        metrics = {k: (math.nan if v is None else float(v)) for k, v in data.get("metrics", {}).items()}
        batch = data.get("batch_size")
        return cls(task=data["task"], metrics=metrics, finite=bool(data.get("finite", True)),
                   samples=int(data.get("samples", 0)), batch_size=None if batch is None else int(batch),
                   real_positions_only=bool(data.get("real_positions_only", False)))


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


def is_token_level(output: np.ndarray, mask: np.ndarray | None) -> bool:
    """Whether an output has the mask's [batch, seq] as its first two dims (and features after)."""
    return mask is not None and np.ndim(output) >= 3 and tuple(np.shape(output)[:2]) == tuple(mask.shape)


def real_tokens(outputs: list[np.ndarray], mask: np.ndarray | None) -> list[np.ndarray]:
    """Each token-level output reduced to its real positions ([real tokens, ...]); others as they are."""
    return [np.asarray(out)[mask] if is_token_level(out, mask) else out for out in outputs]


def compare_outputs(
    reference: list[np.ndarray],
    candidate: list[np.ndarray],
    *,
    task: str,
    labels: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> AccuracyReport:
    """Compare a candidate's outputs with the reference's (first output carries the task).

    ``task`` is one of classification / regression / embedding, or "auto" (see ``infer_task``).
    A candidate with NaN or Inf anywhere gets ``finite=False``; its metrics are still computed
    (and are NaN where the non-finite values reach them). ``mask`` ([samples, seq] booleans, True
    at real tokens): token-level outputs are compared at real positions only.
    """
    _check_shapes(reference, candidate)
    if task == "auto":
        task = infer_task(reference, labels)
    if task not in TASKS:
        raise AccuracyInputError(f"Unknown task {task!r}; use one of {', '.join(TASKS)} or 'auto'.")
    if mask is not None and len(mask) != len(reference[0]):
        raise AccuracyInputError(f"The mask has {len(mask)} rows for {len(reference[0])} samples.")
    samples = len(candidate[0]) if np.ndim(candidate[0]) else 1
    masked = is_token_level(reference[0], mask)
    reference, candidate = real_tokens(reference, mask), real_tokens(candidate, mask)
    finite = all(bool(np.all(np.isfinite(np.asarray(c, dtype=np.float64)))) for c in candidate)
    ref0, cand0 = reference[0], candidate[0]
    if labels is not None and len(labels) != samples:
        raise AccuracyInputError(f"There are {len(labels)} labels for {samples} samples.")
    with np.errstate(invalid="ignore", over="ignore"):
        metrics = _common_metrics(reference, candidate)
        if task == "classification":
            metrics.update(_classification_metrics(ref0, cand0, labels))
        elif task == "regression":
            metrics.update(_regression_metrics(ref0, cand0, labels))
        else:
            metrics.update(_embedding_metrics(ref0, cand0))
    return AccuracyReport(task=task, metrics=metrics, finite=finite, samples=samples, real_positions_only=masked)


def _fixed_batch(signature: Any) -> int | None:
    """The model's fixed first dim, or None when the batch axis is symbolic."""
    first = signature.inputs[0].shape[0] if signature.inputs and signature.inputs[0].shape else None
    return first if isinstance(first, int) and first > 0 else None


def batch_dependent(path: Path) -> bool:
    """Whether a model's outputs for a row depend on the other rows of its batch (see BATCH_DEPENDENT_OPS)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in BATCH_DEPENDENT_OPS for node in graph.node)


def eval_batch(path: Path, profile_batch: int) -> int:
    """Rows per call for evaluating ``path``: its fixed batch if it has one, else the profile's batch
    where outputs depend on it, else _EVAL_BATCH."""
    from workers.formats import signature_from_onnx

    fixed = _fixed_batch(signature_from_onnx(path))
    return fixed or (profile_batch if batch_dependent(path) else _EVAL_BATCH)


def _run_model(path: Path, arrays: dict[str, np.ndarray], rows: int, threads: int,
               batch: int = _EVAL_BATCH) -> list[np.ndarray]:
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
    step = fixed or batch
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
    mask: np.ndarray | None = None  # [rows, seq] True at real tokens, when the dataset tells them
    batch: int = 1  # the profile's batch size: where a model's outputs depend on its batch mates
    reference_batch: int = _EVAL_BATCH  # rows per call the reference itself ran at

    def _compare(self, outputs: list[np.ndarray], task: str, batch: int) -> AccuracyReport:
        used = len(self.outputs[0])
        report = compare_outputs(self.outputs, outputs, task=task, mask=None if self.mask is None else self.mask[:used],
                                 labels=None if self.labels is None else self.labels[:used])
        report.batch_size = batch
        return report

    def compare(self, candidate: Path, *, task: str = "auto", threads: int = 1) -> AccuracyReport:
        """Run ``candidate`` on the same rows (at the profile's batch where its outputs depend on the batch)
        and compare its outputs with the reference's."""
        batch = eval_batch(candidate, self.batch)
        return self._compare(_run_model(candidate, self.arrays, self.rows, threads, batch), task, batch)

    def itself(self, *, task: str = "auto") -> AccuracyReport:
        """The reference compared with its own outputs (its score on the labels, where there are some)."""
        return self._compare(self.outputs, task, self.reference_batch)


def _real_positions(arrays: dict[str, np.ndarray], reference: Path) -> np.ndarray | None:
    from workers.formats import FormatError, signature_from_onnx
    from workers.formats.datasets import real_positions

    try:
        return real_positions(arrays, signature_from_onnx(reference).input_names)
    except FormatError as exc:
        raise AccuracyInputError(str(exc)) from exc


def run_reference(reference: Path, dataset: Path, *, max_samples: int = 1024, threads: int = 1,
                  batch: int = 1) -> ReferenceRun:
    """Run the reference ONNX file on the dataset's first ``max_samples`` rows.

    The dataset is an .npz whose arrays are named after the model inputs, plus ``labels``
    when the task has them and ``lengths`` when its rows are padded sequences. Each model's inputs
    are cast to its own signature's types, so a variant with float16 inputs is fed the same values.
    ``batch``: the batch size the profile judges at, used for models whose outputs depend on it.
    """
    from workers.formats import read_npz
    from workers.formats.datasets import LENGTHS

    arrays = read_npz(dataset)
    mask = _real_positions(arrays, reference)
    labels = arrays.pop("labels", None)
    arrays.pop(LENGTHS, None)
    if not arrays:
        raise AccuracyInputError("The dataset has no input arrays.")
    rows = min(max_samples, min(len(a) for a in arrays.values()))
    own = eval_batch(reference, batch)
    return ReferenceRun(arrays=arrays, labels=labels, rows=rows, batch=batch, reference_batch=own,
                        mask=None if mask is None else mask[:rows],
                        outputs=_run_model(reference, arrays, rows, threads, own))


def evaluate(reference: Path, candidate: Path, dataset: Path, *, task: str = "auto", max_samples: int = 1024,
             threads: int = 1, batch: int = 1) -> AccuracyReport:
    """Run both ONNX files on the dataset's first ``max_samples`` rows and compare them (one
    candidate; a job comparing several runs the reference once with ``run_reference``)."""
    run = run_reference(reference, dataset, max_samples=max_samples, threads=threads, batch=batch)
    return run.compare(candidate, task=task, threads=threads)
