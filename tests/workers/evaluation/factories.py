"""Small things the evaluation tests build: tiny ONNX models and reports made from numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.evaluation.accuracy import AccuracyReport
from workers.evaluation.bench import BenchReport


def linear_onnx(path: Path, weights: np.ndarray, *, batch: int | str = "batch", input_name: str = "x") -> Path:
    """y = x @ weights as an ONNX file (opset 17, IR 10) with the given batch dimension."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rows, cols = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", [input_name, "w"], ["y"])],
        "linear",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, cols])],
        [numpy_helper.from_array(weights.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save_model(model, str(path))
    return path


def bench_report(
    *,
    p95: float,
    p50: float | None = None,
    p99: float | None = None,
    size_mb: float = 1.0,
    memory_mb: float = 10.0,
    batch: int = 1,
    provider: str = "CPUExecutionProvider",
    threads: int = 1,
) -> BenchReport:
    """A BenchReport with the given figures at one batch size, as if measured."""
    p50 = p50 if p50 is not None else p95 * 0.9
    p99 = p99 if p99 is not None else p95 * 1.1
    result = {
        "mean_ms": p50, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
        "max_ms": p99, "min_ms": p50, "std_ms": 0.0,
        "throughput": batch * 1000.0 / p50, "iterations": 100, "warmup_iterations": 10, "warmup_stable": True,
    }
    return BenchReport(
        model="model.onnx", file_size_bytes=int(size_mb * 1024 * 1024), load_time_ms=5.0, peak_memory_mb=memory_mb,
        baseline_memory_mb=50.0, memory_method="test", results={batch: result},
        fingerprint={"provider": provider, "threads": threads}, config={}, notes=[],
    )


def accuracy_report(task: str = "classification", *, finite: bool = True, **metrics: float) -> AccuracyReport:
    return AccuracyReport(task=task, metrics=dict(metrics), finite=finite, samples=100)
