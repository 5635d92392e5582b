"""The benchmark measures in a fresh process and turns every failure into a BenchError.

Timings are never asserted against numbers here (bench/ prints tables); only their sanity is.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.workers.evaluation.factories import linear_onnx
from workers.evaluation.bench import (
    BenchConfig,
    BenchError,
    BenchReport,
    _rows,
    _run_child,
    benchmark,
    hardware_fingerprint,
)
from workers.formats import signature_from_onnx

QUICK = BenchConfig(batch_sizes=(1, 8), warmup_min=5, warmup_max=40, iterations=30, time_budget_s=0.2)
FINGERPRINT_KEYS = {"cpu_model", "cores", "isa", "onnxruntime", "torch", "provider", "threads"}


def test_it_measures_the_quality_mlp_sanely(quality_mlp) -> None:
    report = benchmark(quality_mlp.onnx, signature_from_onnx(quality_mlp.onnx), QUICK, data=quality_mlp.validation)
    for batch in (1, 8):
        figures = report.at(batch)
        assert 0 < report.p50(batch) <= report.p95(batch) <= report.p99(batch) <= figures["max_ms"]
        assert figures["throughput"] > 0
        assert 5 <= figures["iterations"] <= 30
        assert 5 <= figures["warmup_iterations"] <= 40
    assert report.batch_sizes == [1, 8]
    assert report.peak_memory_mb > 0  # 10 MB of weights must show up
    assert report.load_time_ms > 0
    assert report.file_size_bytes == quality_mlp.onnx.stat().st_size
    assert FINGERPRINT_KEYS <= set(report.fingerprint)
    assert report.fingerprint["provider"] == "CPUExecutionProvider" and report.fingerprint["threads"] == 1
    assert BenchReport.from_dict(report.to_dict()) == report


def test_it_synthesizes_token_ids_when_no_data_is_given(tiny_transformer) -> None:
    config = BenchConfig(batch_sizes=(2,), warmup_min=2, warmup_max=5, iterations=5, time_budget_s=0.1)
    report = benchmark(tiny_transformer.onnx, signature_from_onnx(tiny_transformer.onnx), config)
    assert report.p50(2) > 0


def test_a_missing_batch_size_is_named(quality_mlp) -> None:
    report = benchmark(quality_mlp.onnx, signature_from_onnx(quality_mlp.onnx),
                       BenchConfig(batch_sizes=(1,), warmup_min=1, warmup_max=2, iterations=5, time_budget_s=0.05))
    with pytest.raises(KeyError, match="Batch size 32 was not measured"):
        report.p95(32)


def test_a_corrupt_model_file_gives_a_bench_error(tmp_path, quality_mlp) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(BenchError, match="could not load the model"):
        benchmark(corrupt, signature_from_onnx(quality_mlp.onnx), QUICK)


def test_a_crashing_child_is_reported_with_its_signal() -> None:
    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    with pytest.raises(BenchError, match=r"signal 11 \(SIGSEGV\)"):
        _run_child({}, timeout_s=30, threads=1, argv=crash)


def test_a_child_that_exits_without_an_answer_is_reported() -> None:
    failing = [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(BenchError, match="status 3: boom"):
        _run_child({}, timeout_s=30, threads=1, argv=failing)


def test_a_child_past_its_timeout_is_stopped() -> None:
    slow = [sys.executable, "-c", "import time; time.sleep(30)"]
    with pytest.raises(BenchError, match="longer than 1 s"):
        _run_child({}, timeout_s=1, threads=1, argv=slow)


def test_cuda_without_a_cuda_build_is_refused(quality_mlp) -> None:
    config = BenchConfig(batch_sizes=(1,), provider="cuda")
    with pytest.raises(BenchError, match="CUDAExecutionProvider is not available"):
        benchmark(quality_mlp.onnx, signature_from_onnx(quality_mlp.onnx), config)


def test_a_dataset_without_the_input_is_named(tmp_path) -> None:
    model = linear_onnx(tmp_path / "m.onnx", np.ones((3, 2)))
    np.savez(tmp_path / "data.npz", other=np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(BenchError, match="no array named 'x'"):
        benchmark(model, signature_from_onnx(model), QUICK, data=tmp_path / "data.npz")


def test_a_fixed_batch_model_is_measured_at_its_batch_only(tmp_path) -> None:
    model = linear_onnx(tmp_path / "m.onnx", np.ones((3, 2)), batch=4)
    report = benchmark(model, signature_from_onnx(model), QUICK)
    assert sorted(report.results) == [4]
    assert "fixed at 4" in report.notes[0]


def test_dataset_rows_are_tiled_to_the_batch_size() -> None:
    rows = np.arange(3)
    assert _rows(rows, 2).tolist() == [0, 1]
    assert _rows(rows, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_bad_configs_are_refused() -> None:
    with pytest.raises(BenchError, match="Unknown provider"):
        BenchConfig(provider="tpu")
    with pytest.raises(BenchError, match="Batch sizes"):
        BenchConfig(batch_sizes=(0,))
    assert BenchConfig.from_dict(QUICK.to_dict()) == QUICK


def test_the_fingerprint_reads_the_cpu_without_importing_torch() -> None:
    fingerprint = hardware_fingerprint("cpu", 2)
    assert FINGERPRINT_KEYS <= set(fingerprint)
    assert set(fingerprint["isa"]) == {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx"}
    assert fingerprint["threads"] == 2 and fingerprint["cores"] >= 1
    probe = "import sys; from workers.evaluation.bench import hardware_fingerprint as f; f('cpu', 1); print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=root)
    assert done.stdout.strip() == "False"
