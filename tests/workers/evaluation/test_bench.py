"""The benchmark measures each model in a process of its own, several models together in interleaved
rounds, and turns every failure into a BenchError that names it.

Timings are never asserted against numbers here (bench/ prints tables); only their sanity is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.onnx_graphs import linear_onnx
from workers.child import MEASURING_ENV, THREAD_ENV
from workers.evaluation import bench
from workers.evaluation.bench import (
    BenchConfig,
    BenchError,
    BenchReport,
    Child,
    ToMeasure,
    benchmark,
    benchmark_many,
    hardware_fingerprint,
)
from workers.evaluation.bench_child import rows
from workers.formats import signature_from_onnx

QUICK = BenchConfig(batch_sizes=(1, 8), warmup_min=5, warmup_max=40, iterations=30, rounds=3, time_budget_s=0.2)
TINY = BenchConfig(batch_sizes=(1,), warmup_min=2, warmup_max=10, iterations=12, rounds=4, time_budget_s=0.1)
FINGERPRINT_KEYS = {"cpu_model", "cores", "isa", "onnxruntime", "torch", "provider", "threads"}
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 10 MB linear model (1280 -> 2048) and a validation set for it: quick to build, heavy enough
    for its weights to show in the memory figure."""
    root = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(0)
    model = linear_onnx(root / "wide.onnx", rng.standard_normal((1280, 2048)).astype(np.float32))
    np.savez(root / "validation.npz", x=rng.standard_normal((20, 1280)).astype(np.float32))
    return model, root / "validation.npz"


def _item(key: str, model: Path, signature_of: Path | None = None) -> ToMeasure:
    return ToMeasure(key=key, model=model, signature=signature_from_onnx(signature_of or model))


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


# --- one model --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_it_measures_a_model_sanely(wide) -> None:
    model, validation = wide
    report = benchmark(model, signature_from_onnx(model), QUICK, data=validation)
    for batch in (1, 8):
        figures = report.at(batch)
        assert 0 < report.p50(batch) <= report.p95(batch) <= report.p99(batch) <= figures["max_ms"]
        assert figures["min_ms"] <= report.p50(batch)
        assert figures["throughput"] > 0
        assert 3 <= figures["iterations"] <= 30  # at least one timed call per round
        assert 5 <= figures["warmup_iterations"] <= 40
        assert figures["iterations"] == sum(len(r) for r in report.rounds(batch))
        for statistic in ("p50", "p95", "p99"):
            value = report.estimate(statistic, batch)
            assert value.low <= value.value <= value.high
            assert value.value == figures[f"{statistic}_ms"] and value.calls == figures["iterations"]
        assert report.estimate("p99", batch).enough is False  # 30 calls cannot carry a p99
    assert report.batch_sizes == [1, 8]
    assert report.peak_memory_mb > 0  # 10 MB of weights must show up
    assert report.load_time_ms > 0
    assert report.file_size_bytes == model.stat().st_size
    assert FINGERPRINT_KEYS <= set(report.fingerprint)
    assert report.fingerprint["provider"] == "CPUExecutionProvider" and report.fingerprint["threads"] == 1
    assert report.run["models"] == [model.name] and report.run["rounds"] == 3
    assert BenchReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


@pytest.mark.slow
def test_it_synthesizes_token_ids_when_no_data_is_given(tiny_transformer) -> None:
    config = BenchConfig(batch_sizes=(2,), warmup_min=2, warmup_max=5, iterations=5, rounds=2, time_budget_s=0.1)
    report = benchmark(tiny_transformer.onnx, signature_from_onnx(tiny_transformer.onnx), config)
    assert report.p50(2) > 0


def test_a_missing_batch_size_is_named(wide) -> None:
    report = benchmark(wide[0], signature_from_onnx(wide[0]),
                       BenchConfig(batch_sizes=(1,), warmup_min=1, warmup_max=2, iterations=5, rounds=2,
                                   time_budget_s=0.05))
    with pytest.raises(KeyError, match="Batch size 32 was not measured"):
        report.p95(32)


def test_a_corrupt_model_file_gives_a_bench_error(tmp_path, wide) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(BenchError, match="could not load the model"):
        benchmark(corrupt, signature_from_onnx(wide[0]), QUICK)


def test_cuda_without_a_cuda_build_is_refused(wide) -> None:
    config = BenchConfig(batch_sizes=(1,), provider="cuda")
    with pytest.raises(BenchError, match="CUDAExecutionProvider is not available"):
        benchmark(wide[0], signature_from_onnx(wide[0]), config)


def test_a_dataset_without_the_input_is_named(tmp_path) -> None:
    model = linear_onnx(tmp_path / "m.onnx", np.ones((3, 2)))
    np.savez(tmp_path / "data.npz", other=np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(BenchError, match="no array named 'x'"):
        benchmark(model, signature_from_onnx(model), TINY, data=tmp_path / "data.npz")


def test_a_fixed_batch_model_is_measured_at_its_batch_only(tmp_path) -> None:
    model = linear_onnx(tmp_path / "m.onnx", np.ones((3, 2)), batch=4)
    report = benchmark(model, signature_from_onnx(model), QUICK)
    assert sorted(report.results) == [4]
    assert "fixed at 4" in report.notes[0]


def test_a_missing_model_file_is_named(tmp_path, wide) -> None:
    with pytest.raises(BenchError, match="There is no model file"):
        benchmark(tmp_path / "gone.onnx", signature_from_onnx(wide[0]), TINY)


# --- several models in one interleaved run ------------------------------------------------------------


@pytest.mark.slow
def test_the_same_model_loaded_twice_is_measured_in_rotated_rounds_of_equal_count(tmp_path) -> None:
    model = linear_onnx(tmp_path / "m.onnx", np.ones((64, 8)))
    run = benchmark_many([_item("a", model), _item("b", model)], TINY)
    assert run.errors == {}
    assert set(run.reports) == {"a", "b"}
    a, b = run.reports["a"], run.reports["b"]
    assert a.run == b.run
    assert a.run["models"] == ["a", "b"] and a.run["order"] == "rotated each round"
    assert a.run["rounds"] == len(a.rounds(1)) == len(b.rounds(1)) >= 3
    assert a.run["calls_per_round"] == TINY.calls_per_round == 3
    assert all(1 <= len(r) <= 3 for r in a.rounds(1) + b.rounds(1))


@pytest.mark.slow
def test_the_order_of_the_models_rotates_from_round_to_round(tmp_path, monkeypatch) -> None:
    """Drift of a shared machine must hit every model alike: A B C, then B C A, then C A B."""
    model = linear_onnx(tmp_path / "m.onnx", np.ones((16, 4)))
    asked: list[tuple[int, str]] = []

    class Logged(Child):
        made = 0

        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.index, Logged.made = Logged.made, Logged.made + 1

        def ask(self, request: dict) -> dict:
            asked.append((self.index, request["op"]))
            return super().ask(request)

    monkeypatch.setattr(bench, "Child", Logged)
    config = BenchConfig(batch_sizes=(1,), warmup_min=2, warmup_max=5, iterations=3, rounds=3, time_budget_s=0.05,
                         processes=1)
    run = benchmark_many([_item(key, model) for key in "abc"], config)
    assert run.errors == {} and run.reports["a"].run["rounds"] == 3
    order = [index for index, op in asked if op == "round"]
    assert order == [0, 1, 2, 1, 2, 0, 2, 0, 1]
    assert [op for _, op in asked] == ["load"] * 3 + ["round"] * 9 + ["finish"] * 3


def test_a_models_processes_take_turns_round_by_round(tmp_path, monkeypatch) -> None:
    """One process's luck (its memory layout, the core it landed on) must show in the interval, not
    move the result: a model's rounds alternate between its processes, and each is finished."""
    model = linear_onnx(tmp_path / "m.onnx", np.ones((16, 4)))
    asked: list[tuple[int, str]] = []
    made: list[int] = []

    class Logged(Child):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.index = len(made)
            made.append(self.index)

        def ask(self, request: dict) -> dict:
            asked.append((self.index, request["op"]))
            return super().ask(request)

    monkeypatch.setattr(bench, "Child", Logged)
    config = BenchConfig(batch_sizes=(1,), warmup_min=2, warmup_max=5, iterations=8, rounds=4, time_budget_s=0.05,
                         processes=2)
    run = benchmark_many([_item("a", model)], config)
    assert run.reports["a"].run["processes"] == 2 and len(run.reports["a"].rounds(1)) == 4
    assert [index for index, op in asked if op == "round"] == [0, 1, 0, 1]
    assert sorted(index for index, op in asked if op == "finish") == [0, 1]


@pytest.mark.slow
def test_one_corrupt_model_among_good_ones_is_left_out_and_the_others_are_measured(tmp_path) -> None:
    """A variant that fails to load costs only itself its measurement."""
    good = linear_onnx(tmp_path / "good.onnx", np.ones((16, 4)))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    run = benchmark_many([_item("first", good), _item("corrupt", corrupt, signature_of=good), _item("last", good)],
                         TINY)
    assert set(run.errors) == {"corrupt"} and "could not load the model" in str(run.errors["corrupt"])
    assert set(run.reports) == {"first", "last"}
    assert run.reports["first"].run["models"] == ["first", "last"]
    assert run.reports["last"].p50(1) > 0


def test_a_model_whose_child_crashes_mid_run_is_left_out_with_its_signal(tmp_path, monkeypatch) -> None:
    """A9: the second child answers its load, then dies of SIGSEGV on its first round; the run
    goes on without it and the others are measured."""
    good = linear_onnx(tmp_path / "good.onnx", np.ones((16, 4)))
    crashing = _python("""
        import json, os, signal, sys
        sys.stdin.readline()
        loaded = {"load_time_ms": 1.0, "batches": [1], "notes": [], "warmup": {"1": [1, True]}, "fingerprint": {}}
        print(json.dumps({"ok": loaded}), flush=True)
        sys.stdin.readline()
        os.kill(os.getpid(), signal.SIGSEGV)
    """)
    made: list[int] = []

    def child(**kwargs):
        made.append(1)
        return Child(**kwargs, argv=crashing if len(made) == 2 else None)

    monkeypatch.setattr(bench, "Child", child)
    run = benchmark_many([_item("a", good), _item("b", good), _item("c", good)],
                         dataclasses.replace(TINY, processes=1))
    assert set(run.reports) == {"a", "c"}
    assert "signal 11 (SIGSEGV)" in str(run.errors["b"])
    assert run.reports["a"].run["models"] == ["a", "c"]
    assert len(run.reports["a"].rounds(1)) == len(run.reports["c"].rounds(1))


# --- the child process ----------------------------------------------------------------------------------


def test_a_crashing_child_is_reported_with_its_signal() -> None:
    """A9: a runtime crash takes down only the measuring child; the caller gets the signal's name."""
    child = Child(timeout_s=30, threads=1, argv=_python("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"))
    with pytest.raises(BenchError, match=r"signal 11 \(SIGSEGV\)"):
        child.ask({"op": "load"})


def test_a_child_that_exits_without_an_answer_is_reported_with_its_last_stderr_line() -> None:
    child = Child(timeout_s=30, threads=1,
                  argv=_python("import sys; print('noise', file=sys.stderr); print('boom', file=sys.stderr); sys.exit(3)"))
    with pytest.raises(BenchError, match="exited with status 3: boom$"):
        child.ask({"op": "load"})


def test_a_child_past_its_timeout_is_stopped() -> None:
    child = Child(timeout_s=1, threads=1, argv=_python("import time; time.sleep(30)"))
    with pytest.raises(BenchError, match="longer than 1 s"):
        child.ask({"op": "load"})
    assert child.process.returncode is not None  # killed, not left behind


@pytest.mark.slow
def test_the_deadline_is_per_answer_not_per_child_lifetime() -> None:
    """A child of a long run waits through other models' loads and rounds: each answer has its own
    deadline, so three answers of 0.6 s each pass under a 1 s timeout."""
    slow_echo = _python("""
        import sys, time
        for line in sys.stdin:
            time.sleep(0.6)
            print('{"ok": 1}', flush=True)
    """)
    child = Child(timeout_s=1, threads=1, argv=slow_echo)
    try:
        assert [child.ask({"op": "round"}) for _ in range(3)] == [1, 1, 1]
    finally:
        child.close()


def test_an_error_answer_becomes_a_bench_error_with_its_message() -> None:
    child = Child(timeout_s=30, threads=1,
                  argv=_python("import sys; sys.stdin.readline(); print('{\"error\": \"no such op\"}', flush=True)"))
    with pytest.raises(BenchError, match="^no such op$"):
        child.ask({"op": "dance"})


def test_the_child_does_not_inherit_the_workers_secrets(monkeypatch) -> None:
    """A3: the measuring child gets only what Python and onnxruntime need, never the worker's secrets."""
    monkeypatch.setenv("MODELHUB_TEST_SECRET", "hunter2")
    monkeypatch.setenv("DATABASE_URL", "postgres://user:hunter2@db/modelhub")
    printenv = _python("import json, os, sys; sys.stdin.readline(); print(json.dumps({'ok': dict(os.environ)}), flush=True)")
    child = Child(timeout_s=30, threads=3, argv=printenv)
    try:
        env = child.ask({"op": "env"})
    finally:
        child.close()
    assert "MODELHUB_TEST_SECRET" not in env and "DATABASE_URL" not in env
    assert "hunter2" not in json.dumps(env)
    assert env["OMP_NUM_THREADS"] == "3" and env["PYTHONPATH"] == str(ROOT)
    assert set(env) <= set(MEASURING_ENV) | set(THREAD_ENV) | {"PYTHONPATH"}
    assert os.environ["MODELHUB_TEST_SECRET"] == "hunter2"  # the parent's own environment is untouched


def test_what_the_child_prints_cannot_pose_as_an_answer() -> None:
    """Whatever is printed while the child serves, by Python or by native code on fd 1, goes to
    stderr: the protocol's stdout carries answers only."""
    code = textwrap.dedent("""
        import os, sys
        from workers.evaluation import bench_child

        class Noisy:
            def __iter__(self):
                os.write(1, b"native noise\\n")
                print("python noise")
                yield '{"op": "round"}\\n'

        sys.stdin = Noisy()
        raise SystemExit(bench_child.main())
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2
    assert done.stdout.splitlines() == ['{"error": "The benchmark child got \'round\' before a model was loaded."}']
    assert "native noise" in done.stderr and "python noise" in done.stderr


# --- pieces ------------------------------------------------------------------------------------------------


def test_dataset_rows_are_tiled_to_the_batch_size() -> None:
    values = np.arange(3)
    assert rows(values, 2).tolist() == [0, 1]
    assert rows(values, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(BenchError, match="empty array"):
        rows(np.zeros((0, 2)), 1)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(BenchError, match="Unknown provider"):
        BenchConfig(provider="tpu")
    with pytest.raises(BenchError, match="Batch sizes"):
        BenchConfig(batch_sizes=(0,))
    with pytest.raises(BenchError, match="rounds and processes must be >= 1"):
        BenchConfig(rounds=0)
    with pytest.raises(BenchError, match="processes must be >= 1"):
        BenchConfig(processes=0)
    assert BenchConfig.from_dict(QUICK.to_dict()) == QUICK
    assert BenchConfig.from_dict({**QUICK.to_dict(), "retired_option": 1}) == QUICK  # old stored configs load
    assert BenchConfig().calls_per_round == 200 and QUICK.calls_per_round == 10


def test_a_report_stored_before_intervals_gives_point_values_that_claim_nothing() -> None:
    figures = {"mean_ms": 2.0, "p50_ms": 2.0, "p95_ms": 3.0, "p99_ms": 4.0, "max_ms": 4.0, "min_ms": 1.0, "std_ms": 0.1,
               "throughput": 500.0, "iterations": 250, "warmup_iterations": 10, "warmup_stable": True}
    old = BenchReport.from_dict({"model": "m.onnx", "file_size_bytes": 1, "load_time_ms": 1.0, "peak_memory_mb": 1.0,
                                 "baseline_memory_mb": 1.0, "memory_method": "test", "results": {"1": figures},
                                 "fingerprint": {}, "config": {}})
    p95 = old.estimate("p95", 1)
    assert (p95.value, p95.low, p95.high, p95.calls, p95.enough) == (3.0, 3.0, 3.0, 250, True)
    assert old.estimate("p99", 1).enough is False and old.rounds(1) == []
    faster = BenchReport.from_dict({**old.to_dict(), "results": {"1": {**figures, "p50_ms": 1.0}}})
    ratio = faster.speedup(old, "p50", 1)
    assert ratio.value == 2.0 and ratio.enough is False


def test_the_fingerprint_reads_the_cpu_without_importing_torch() -> None:
    fingerprint = hardware_fingerprint("cpu", 2)
    assert FINGERPRINT_KEYS <= set(fingerprint)
    assert set(fingerprint["isa"]) == {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx"}
    assert fingerprint["threads"] == 2 and fingerprint["cores"] >= 1
    probe = "import sys; from workers.evaluation.bench import hardware_fingerprint as f; f('cpu', 1); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "False"
