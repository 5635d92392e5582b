"""Does server-side batching pay? Rows/s at batch 8 vs 1 beyond noise, and the batch-8 p95 within the profile."""

from __future__ import annotations

import numpy as np

from workers.evaluation import stats
from workers.evaluation.batching import batching_pays, throughput_gain
from workers.evaluation.bench import BenchReport
from workers.evaluation.readiness import ProfileSpec


def _rounds(ms: float, spread: float, rounds: int = 20, calls: int = 30, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return [list(ms * (1 + spread * rng.standard_normal(calls)).clip(0.5)) for _ in range(rounds)]


def _figures(rounds: list[list[float]]) -> dict:
    intervals = {name: stats.estimate(rounds, name).to_dict() for name in stats.STATISTICS}
    return {"p50_ms": intervals["p50"]["value"], "p95_ms": intervals["p95"]["value"],
            "p99_ms": intervals["p99"]["value"], "intervals": intervals, "rounds": rounds}


def _report(batch1_ms: float, batch8_ms: float, spread: float = 0.02, **kwargs: int) -> BenchReport:
    results = {1: _figures(_rounds(batch1_ms, spread, **kwargs)), 8: _figures(_rounds(batch8_ms, spread, seed=1, **kwargs))}
    return BenchReport(model="m.onnx", file_size_bytes=1, load_time_ms=1.0, peak_memory_mb=1.0, baseline_memory_mb=1.0,
                       memory_method="test", results=results, fingerprint={}, config={})


def test_batching_pays_when_rows_per_second_clear_the_noise_and_p95_stays_within_the_limit() -> None:
    advice = batching_pays(_report(0.10, 0.30), ProfileSpec(max_p95_ms=5.0), window_ms=2)
    assert advice.pays, advice.reason
    assert 2.4 < advice.gain["value"] < 2.9 and advice.gain["low"] > 1.1
    assert "batching pays" in advice.reason and advice.limit_ms == 5.0


def test_a_gain_within_the_noise_band_does_not_pay() -> None:
    advice = batching_pays(_report(0.10, 0.76), ProfileSpec(max_p95_ms=5.0))  # 8 × 0.10 / 0.76 ≈ 1.05
    assert not advice.pays and "not beyond noise" in advice.reason
    assert throughput_gain(_report(0.10, 0.76)).value < 1.1


def test_a_batch_8_p95_that_may_pass_the_limit_with_the_window_does_not_pay() -> None:
    advice = batching_pays(_report(1.0, 2.0), ProfileSpec(max_p95_ms=3.0), window_ms=2)
    assert not advice.pays and "beyond the profile's 3 ms" in advice.reason
    assert batching_pays(_report(1.0, 2.0), ProfileSpec(max_p95_ms=10.0), window_ms=2).pays


def test_without_a_p95_limit_the_throughput_alone_decides() -> None:
    assert batching_pays(_report(0.10, 0.30), None).pays
    assert "no p95 limit" in batching_pays(_report(0.10, 0.30), ProfileSpec()).reason


def test_a_p95_from_too_few_calls_does_not_show_the_limit_holds() -> None:
    advice = batching_pays(_report(0.10, 0.30, rounds=5, calls=10), ProfileSpec(max_p95_ms=5.0))
    assert not advice.pays and "too few" in advice.reason


def test_a_report_without_batch_8_or_raw_rounds_is_no_evidence() -> None:
    report = _report(0.10, 0.30)
    only_one = BenchReport.from_dict({**report.to_dict(), "results": {"1": report.at(1)}})
    assert not batching_pays(only_one, None).pays and "no evidence" in batching_pays(only_one, None).reason
    stripped = BenchReport.from_dict(report.to_dict())
    for batch in (1, 8):
        stripped.results[batch] = {k: v for k, v in stripped.results[batch].items() if k != "rounds"}
    assert throughput_gain(stripped) is None and not batching_pays(stripped, None).pays
