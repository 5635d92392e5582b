"""Reports the evaluation tests make from numbers, as if measured (their tiny ONNX models are in
tests/onnx_graphs.py)."""

from __future__ import annotations

from workers.evaluation.accuracy import AccuracyReport
from workers.evaluation.bench import BenchReport


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
