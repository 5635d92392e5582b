"""Unstructured magnitude pruning: zero the smallest-|w| weights of Gemm, MatMul and Conv layers.

Each weight initializer of the chosen op types is pruned to the target sparsity on its own (layer-wise,
so that a small layer is not wiped out by a large one's scale). Biases are left alone.

Zeros alone do not make the dense ONNX file smaller or dense kernels faster: the file keeps every
value. They compress well (the metrics say how well) and prepare the model for sparse kernels or
for a later structured pass.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workers.passes import onnx_chain
from workers.passes.base import PassInputError, PassResult, UnsupportedModelError, data_field
from workers.passes.frame import PassRun

PASS_NAME = "prune_magnitude"
OP_TYPES = ("Gemm", "MatMul", "Conv")
EVAL_SAMPLES = 512


@dataclass(frozen=True)
class Config:
    """Zero ``sparsity`` of the weights (smallest magnitudes first) of every ``op_types`` node."""

    sparsity: float = 0.5
    op_types: tuple[str, ...] = OP_TYPES
    validation_data: Path | None = data_field()

    def __post_init__(self) -> None:
        if isinstance(self.op_types, str):
            raise PassInputError("op_types must be a list of op names, not one string.")
        object.__setattr__(self, "op_types", tuple(self.op_types))
        if self.validation_data is not None:
            object.__setattr__(self, "validation_data", Path(self.validation_data))
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)) or not 0 < self.sparsity < 1:
            raise PassInputError(f"sparsity must be strictly between 0 and 1; got {self.sparsity!r}.")
        unknown = sorted(set(self.op_types) - set(OP_TYPES))
        if unknown or not self.op_types:
            raise PassInputError(f"op_types must be a non-empty subset of {', '.join(OP_TYPES)}; got {list(self.op_types)}.")


def run(src: Path, dst: Path, config: Config) -> PassResult:
    """Zero the smallest weights to the target sparsity and measure how far the outputs move."""
    with PassRun(PASS_NAME, src, dst, config) as job:
        model = job.load()
        graph = onnx_chain.Graph(model)
        weights = prunable_weights(graph, config.op_types)
        if not weights:
            raise UnsupportedModelError(
                f"{job.src.name} has no {'/'.join(config.op_types)} node whose weight is an initializer; "
                "magnitude pruning only touches weights stored in the model." + onnx_chain.fused_hint(model)
            )
        arrays = {name: zero_smallest(graph.array(name), config.sparsity) for name in weights}
        out = job.save(onnx_chain.with_initializers(graph.model, arrays))
        change = onnx_chain.pruning_change(model, job.src, out, config.validation_data, max_samples=EVAL_SAMPLES)
        metrics = _metrics(job, model, graph, arrays, change)
        return job.result(metrics, _notes(metrics, config, len(arrays)))


def _metrics(job: PassRun, model: Any, graph: onnx_chain.Graph, arrays: dict[str, np.ndarray],
             change: dict[str, Any]) -> dict[str, Any]:
    pruned_params = sum(a.size for a in arrays.values())
    zeros = sum(int((a == 0).sum()) for a in arrays.values())
    zeros_before = sum(int((graph.array(n) == 0).sum()) for n in arrays)
    total = onnx_chain.count_params(model)
    return {
        "sparsity": zeros / pruned_params,
        "model_sparsity": zeros / total if total else 0.0,
        "params": total,
        "pruned_params": pruned_params,
        "zeroed": zeros - zeros_before,
        "weights_pruned": len(arrays),
        **job.sizes(),
        "compressed_size_before": _compressed_size(job.src),
        "compressed_size_after": _compressed_size(job.out),
        **change,
    }


def _notes(metrics: dict[str, Any], config: Config, weights: int) -> list[str]:
    return [
        f"Zeroed {metrics['zeroed']} of {metrics['pruned_params']} weights in {weights} {'/'.join(config.op_types)} "
        f"initializer(s) (sparsity {metrics['sparsity']:.2f}); biases are untouched.",
        "Zeros alone do not shrink the dense ONNX file or speed up dense kernels: the file still stores every "
        f"value ({metrics['size_before']} -> {metrics['size_after']} bytes). They compress well (zlib: "
        f"{metrics['compressed_size_before']} -> {metrics['compressed_size_after']} bytes) and prepare the "
        "model for sparse kernels or structured pruning.",
        f"Output error measured on {metrics['error_data']}; no fine-tuning was done.",
    ]


def prunable_weights(graph: onnx_chain.Graph, op_types: tuple[str, ...]) -> list[str]:
    """Names of the weight initializers (rank >= 2, float) of the nodes of ``op_types``, in graph order."""
    names: list[str] = []
    for node in graph.nodes:
        if node.op_type not in op_types:
            continue
        candidates = node.input[:2] if node.op_type == "MatMul" else node.input[1:2]
        for name in candidates:
            if graph.is_initializer(name) and name not in names:
                array = graph.array(name)
                if array.ndim >= 2 and np.issubdtype(array.dtype, np.floating):
                    names.append(name)
    return names


def zero_smallest(weight: np.ndarray, sparsity: float) -> np.ndarray:
    """A copy of ``weight`` with its ``round(sparsity * size)`` smallest-magnitude entries set to 0."""
    count = int(round(sparsity * weight.size))
    out = weight.copy()
    if count > 0:
        flat = out.reshape(-1)
        flat[np.argpartition(np.abs(flat), count - 1)[:count]] = 0
    return out


def _compressed_size(path: Path) -> int:
    return len(zlib.compress(path.read_bytes(), 6))
