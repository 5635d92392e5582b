"""Accuracy measured on the target runtime itself (pure: no Django).

A variant that loads in node or in the browser may still answer differently there than natively
(another build of the kernels, other float-to-int conversions, other math libraries), so its
validation outputs are computed in the target (``runner.outputs``) and compared with the
original's native outputs with the very metrics of the CPU path (``accuracy.compare_outputs``),
at the same rows per call (a dynamically quantized model's outputs depend on its batch mates).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.evaluation import accuracy
from workers.evaluation.accuracy import AccuracyInputError, AccuracyReport, ReferenceRun
from workers.formats import model_inputs, signature_from_onnx
from workers.targets import runner


def _feeds(reference: ReferenceRun, candidate: Path) -> dict[str, np.ndarray]:
    """The reference's rows cast to the candidate's input types; a fixed-batch model gets whole
    batches only (it cannot take a short tail)."""
    signature = signature_from_onnx(candidate)
    missing = [name for name in signature.input_names if name not in reference.arrays]
    if missing:
        raise AccuracyInputError(f"The dataset has no array named {', '.join(missing)}; it has "
                                 f"{', '.join(sorted(reference.arrays))}.")
    first = signature.inputs[0].shape[0] if signature.inputs and signature.inputs[0].shape else None
    used = len(reference.outputs[0])
    rows = used - used % first if isinstance(first, int) and first > 0 else used
    return {name: value[:rows] for name, value in model_inputs(reference.arrays, signature).items()}


def compare_on_target(reference: ReferenceRun, candidate: Path, target: str, *, task: str = "auto",
                      threads: int = 1) -> AccuracyReport:
    """Run ``candidate`` on the reference's rows in ``target`` and compare it with the reference's
    native outputs (labels and real-token positions too, where the dataset has them), at the rows
    per call the native evaluation would use (``accuracy.eval_batch``)."""
    feeds = _feeds(reference, candidate)
    rows = len(next(iter(feeds.values())))
    batch = accuracy.eval_batch(candidate, reference.batch)
    outputs = runner.outputs(target, candidate, feeds, batch, threads=threads)
    report = accuracy.compare_outputs([out[:rows] for out in reference.outputs], outputs, task=task,
                                      labels=None if reference.labels is None else reference.labels[:rows],
                                      mask=None if reference.mask is None else reference.mask[:rows])
    report.batch_size = batch
    return report
