"""Readiness verdicts state every failed rule with its numbers; compatibility names breaking changes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.workers.evaluation.reports import accuracy_report, bench_report
from workers.evaluation.bench import BenchReport, _figures
from workers.evaluation.readiness import ProfileSpec, Verdict, compatibility, unjudged, verdict
from workers.evaluation.stats import Estimate, min_calls
from workers.formats import Signature, TensorSpec
from workers.planner import make_candidate, rank

ROUNDS = 15


def measured(*, p95: float, p50: float | None = None, p99: float | None = None, calls: int = 1200,
             spread: float = 0.02, batch: int = 1, **kwargs: object) -> BenchReport:
    """A report as a run of ``ROUNDS`` rounds gives it: the factory's figures, each statistic with a
    ±``spread`` interval over ``calls`` calls, and rounds whose pooled median is exactly p50."""
    report = bench_report(p95=p95, p50=p50, p99=p99, batch=batch, **kwargs)
    figures = report.results[batch]
    figures["iterations"] = calls
    figures["intervals"] = {
        name: Estimate(name, figures[f"{name}_ms"], figures[f"{name}_ms"] * (1 - spread),
                       figures[f"{name}_ms"] * (1 + spread), calls, calls >= min_calls(name)).to_dict()
        for name in ("p50", "p95", "p99")
    }
    shape = 1 + spread * np.linspace(-1, 1, calls // ROUNDS)
    figures["rounds"] = [list(figures["p50_ms"] * shape) for _ in range(ROUNDS)]
    return report


def test_a_variant_within_every_bound_passes_and_lists_its_checks() -> None:
    profile = ProfileSpec(max_size_mb=4, max_p95_ms=15, max_p99_ms=20, max_peak_memory_mb=100, max_accuracy_drop=0.01)
    result = verdict(profile, bench=measured(p95=10, size_mb=3), accuracy=accuracy_report(agreement=0.995))
    assert result.passed and result.failures == []
    assert {c["rule"] for c in result.checks} == {"target", "size_mb", "p95_ms", "p99_ms", "peak_memory_mb", "accuracy_drop"}
    assert all(c["passed"] for c in result.checks)


def test_each_failed_rule_is_a_sentence_with_measured_value_and_limit() -> None:
    profile = ProfileSpec(max_size_mb=4, max_p95_ms=15, max_accuracy_drop=0.01, min_speedup=1.5)
    result = verdict(
        profile,
        bench=measured(p95=18.2, p50=10.0, size_mb=10.5),
        accuracy=accuracy_report(agreement=0.959),
        parent_bench=measured(p95=20.0, p50=11.0),
    )
    assert not result.passed
    assert result.failures == [
        "size 10.5 MB > 4 MB",
        "p95 18.2 ms > 15 ms at batch 1",
        "accuracy drop 0.041 > 0.01 (agreement)",
        "speed-up 1.1x < 1.5x over parent (p50 at batch 1)",
    ]
    drop = next(c for c in result.checks if c["rule"] == "accuracy_drop")
    assert drop["measured"] == pytest.approx(0.041) and drop["limit"] == 0.01 and drop["passed"] is False


def test_numbers_that_round_alike_are_shown_with_enough_digits() -> None:
    result = verdict(ProfileSpec(max_p95_ms=0.116), bench=measured(p95=0.1163), accuracy=None)
    assert result.failures == ["p95 0.1163 ms > 0.116 ms at batch 1"]


def test_a_variant_with_nan_outputs_always_fails() -> None:
    result = verdict(ProfileSpec(), bench=measured(p95=1), accuracy=accuracy_report(finite=False, agreement=1.0))
    assert not result.passed
    assert result.failures == ["outputs contain NaN or Inf"]


def test_label_accuracy_drop_is_measured_against_the_reference_model() -> None:
    profile = ProfileSpec(accuracy_metric="accuracy", max_accuracy_drop=0.02)
    reference = accuracy_report(accuracy=0.95, agreement=1.0)
    ok = verdict(profile, bench=measured(p95=1), accuracy=accuracy_report(accuracy=0.94), reference_accuracy=reference)
    bad = verdict(profile, bench=measured(p95=1), accuracy=accuracy_report(accuracy=0.90), reference_accuracy=reference)
    assert ok.passed
    assert bad.failures == ["accuracy drop 0.05 > 0.02 (accuracy)"]
    unknown = verdict(profile, bench=measured(p95=1), accuracy=accuracy_report(accuracy=0.94))
    assert unknown.failures == ["no reference accuracy to measure a drop against"]


def test_lower_is_better_metrics_bound_from_above() -> None:
    profile = ProfileSpec(accuracy_metric="mae", min_accuracy=0.01, max_accuracy_drop=0.005)
    result = verdict(profile, bench=measured(p95=1), accuracy=accuracy_report("regression", mae=0.02))
    assert result.failures == ["mae 0.02 > 0.01", "accuracy drop 0.02 > 0.005 (mae)"]
    assert verdict(profile, bench=measured(p95=1), accuracy=accuracy_report("regression", mae=0.004)).passed


def test_the_task_default_metric_is_used_when_the_profile_names_none() -> None:
    profile = ProfileSpec(min_accuracy=0.99)
    result = verdict(profile, bench=measured(p95=1), accuracy=accuracy_report("embedding", cosine_min=0.97, cosine_mean=1))
    assert result.failures == ["cosine_min 0.97 < 0.99"]


def test_accuracy_rules_without_a_measurement_fail_loudly() -> None:
    result = verdict(ProfileSpec(min_accuracy=0.9), bench=measured(p95=1), accuracy=None)
    assert result.failures == ["accuracy was not measured (no validation dataset)"]


def test_latency_at_an_unmeasured_batch_size_fails() -> None:
    result = verdict(ProfileSpec(max_p95_ms=5, batch_size=8), bench=measured(p95=1, batch=1), accuracy=None)
    assert result.failures == ["latency was not measured at batch 8"]


def test_a_measurement_on_another_target_or_thread_count_fails() -> None:
    result = verdict(ProfileSpec(threads=4), bench=measured(p95=1, threads=1), accuracy=None)
    assert result.failures == ["measured on CPUExecutionProvider with 1 threads, but the profile is for CPUExecutionProvider with 4"]


def test_peak_memory_and_explicit_size_are_checked() -> None:
    result = verdict(ProfileSpec(max_size_mb=1, max_peak_memory_mb=50), bench=measured(p95=1, memory_mb=80),
                     accuracy=None, size_bytes=3 * 1024 * 1024)
    assert result.failures == ["size 3 MB > 1 MB", "peak memory 80 MB > 50 MB"]


def test_profiles_and_verdicts_round_trip() -> None:
    profile = ProfileSpec(max_p95_ms=3.5, accuracy_metric="accuracy", min_accuracy=0.9, threads=2)
    assert ProfileSpec.from_dict(profile.to_dict()) == profile
    result = verdict(profile, bench=measured(p95=5, threads=2), accuracy=accuracy_report(accuracy=0.8))
    assert Verdict.from_dict(result.to_dict()) == result
    with pytest.raises(ValueError, match="Unknown accuracy metric"):
        ProfileSpec(accuracy_metric="f1")


def test_percentile_limit_checks_record_their_interval_and_calls() -> None:
    profile = ProfileSpec(max_p95_ms=15, max_p99_ms=20)
    result = verdict(profile, bench=measured(p95=10, p99=12, calls=1200, spread=0.05), accuracy=None)
    p95, p99 = (next(c for c in result.checks if c["rule"] == rule) for rule in ("p95_ms", "p99_ms"))
    assert p95 == {"rule": "p95_ms", "measured": 10, "limit": 15, "passed": True, "statistic": "p95",
                   "interval": [pytest.approx(9.5), pytest.approx(10.5)], "calls": 1200}
    assert p99["statistic"] == "p99" and p99["interval"] == [pytest.approx(11.4), pytest.approx(12.6)]
    assert p99["calls"] == 1200 and p99["passed"] is True


def test_a_p99_limit_from_too_few_calls_fails_as_too_few_to_judge() -> None:
    """A p99 of 300 calls is three samples beyond it: the rule fails with that reason, whatever the number."""
    result = verdict(ProfileSpec(max_p95_ms=15, max_p99_ms=20), bench=measured(p95=10, p99=12, calls=300),
                     accuracy=None)
    assert result.passed is False
    assert result.failures == ["p99 at batch 1 rests on 300 calls, too few to judge (it needs 1000): measure longer"]
    p99 = next(c for c in result.checks if c["rule"] == "p99_ms")
    assert p99["measured"] is None and p99["calls"] == 300 and p99["passed"] is False
    p95 = next(c for c in result.checks if c["rule"] == "p95_ms")
    assert p95["passed"] is True  # 300 calls are enough for a p95


def test_a_report_stored_before_intervals_is_judged_on_its_call_count() -> None:
    old = bench_report(p95=10)  # 100 iterations, no intervals, no rounds
    assert verdict(ProfileSpec(max_p95_ms=15), bench=old, accuracy=None).failures == [
        "p95 at batch 1 rests on 100 calls, too few to judge (it needs 200): measure longer"]
    assert verdict(ProfileSpec(max_size_mb=4), bench=old, accuracy=None).passed is True


def _from_rounds(rounds: list[list[float]]) -> BenchReport:
    """A report at batch 1 whose figures come from ``rounds`` as a run computes them."""
    report = bench_report(p95=1)
    report.results = {1: _figures(rounds, 1, (10, True))}
    return report


def test_the_speedup_rule_is_the_paired_ratio_of_the_declared_statistic() -> None:
    """The parent's calls have the heavier tail: 1.1x at p50, 1.6x at p95; each profile reads its own."""
    rng = np.random.default_rng(0)
    drift = rng.lognormal(0.0, 0.05, ROUNDS)
    parent = _from_rounds([list(10 * d * rng.lognormal(0.0, 0.3, 80)) for d in drift])
    variant = _from_rounds([list(9 * d * rng.lognormal(0.0, 0.05, 80)) for d in drift])
    at_p95 = verdict(ProfileSpec(min_speedup=1.4, statistic="p95"), bench=variant, accuracy=None, parent_bench=parent)
    check = next(c for c in at_p95.checks if c["rule"] == "speedup")
    assert check["measured"] == pytest.approx(parent.p95(1) / variant.p95(1)) and check["measured"] > 1.4
    assert check["statistic"] == "p95 speed-up" and check["calls"] == 1200 and check["passed"] is True
    assert check["interval"][0] <= check["measured"] <= check["interval"][1]
    at_p50 = verdict(ProfileSpec(min_speedup=1.4), bench=variant, accuracy=None, parent_bench=parent)
    assert at_p50.failures == [f"speed-up {parent.p50(1) / variant.p50(1):.3g}x < 1.4x over parent (p50 at batch 1)"]


def test_an_unmeasured_speedup_batch_fails_and_the_original_has_no_speedup_rule() -> None:
    profile = ProfileSpec(min_speedup=1.2, batch_size=8)
    result = verdict(profile, bench=measured(p95=1, batch=8), accuracy=None, parent_bench=measured(p95=2, batch=1))
    assert result.failures == ["speed-up was not measured at batch 8"]
    assert verdict(profile, bench=measured(p95=1, batch=8), accuracy=None).passed is True


def test_without_a_profile_a_measurement_is_not_judged() -> None:
    """G1: a run with no profile says "measured, not judged": passed is None, never True."""
    result = unjudged(accuracy_report(agreement=0.5))
    assert result.passed is None and result.judged is False and result.failures == [] and result.checks == []
    assert result.to_dict() == {"passed": None, "judged": False, "failures": [], "checks": []}
    assert Verdict.from_dict(result.to_dict()) == result
    assert unjudged(None).passed is None


def test_without_a_profile_non_finite_outputs_still_fail() -> None:
    """C4: a model that emits NaN fails even where nothing else is judged."""
    result = unjudged(accuracy_report(finite=False, agreement=1.0))
    assert result.passed is False and result.judged is True
    assert result.failures == ["outputs contain NaN or Inf"]
    assert result.checks == [{"rule": "finite", "measured": False, "limit": True, "passed": False}]


def test_the_accuracy_limit_is_the_tighter_of_the_bound_and_the_allowed_drop() -> None:
    both = ProfileSpec(min_accuracy=0.9, max_accuracy_drop=0.02)
    assert both.accuracy_limit("accuracy", 0.95) == pytest.approx(0.93)
    assert both.accuracy_limit("accuracy", 0.91) == pytest.approx(0.9)
    assert both.accuracy_limit("accuracy", None) == 0.9  # no reference: the bound alone
    lower = ProfileSpec(accuracy_metric="mae", min_accuracy=0.01, max_accuracy_drop=0.005)
    assert lower.accuracy_limit("mae", 0.002) == pytest.approx(0.007)
    assert lower.accuracy_limit("mae", 0.008) == pytest.approx(0.01)
    assert ProfileSpec(max_accuracy_drop=0.01).accuracy_limit("agreement", None) is None
    assert ProfileSpec().accuracy_limit("agreement", 1.0) is None


def test_a_profile_asks_for_the_calls_its_statistics_need() -> None:
    assert ProfileSpec().min_calls == 20
    assert ProfileSpec(statistic="p95").min_calls == 200
    assert ProfileSpec(max_p95_ms=5).min_calls == 200
    assert ProfileSpec(max_p95_ms=5, max_p99_ms=8).min_calls == 1000


def test_an_unknown_statistic_is_refused() -> None:
    """G15: a profile naming a statistic that does not exist is refused, not silently read as p50."""
    with pytest.raises(ValueError, match="Unknown statistic 'p90'"):
        ProfileSpec(statistic="p90")


# --- verdicts feed the choice ---------------------------------------------------------------------


def _candidates(profile: ProfileSpec, variants: dict[str, tuple]) -> list:
    """variants: name -> (pass, p95 ms, size MB, agreement); the original is the parent of all."""
    reference = accuracy_report(agreement=1.0, accuracy=0.97)
    benches = {name: measured(p95=p95, size_mb=size) for name, (_, p95, size, _) in variants.items()}
    out = []
    for name, (pass_name, _, _, agreement) in variants.items():
        accuracy = accuracy_report(agreement=agreement)
        parent = None if name == "original" else "original"
        result = verdict(profile, bench=benches[name], accuracy=accuracy, reference_accuracy=reference,
                         parent_bench=benches.get(parent) if parent else None)
        out.append(make_candidate(name=name, parent=parent, pass_name=pass_name, profile=profile, bench=benches[name],
                                  accuracy=accuracy, verdict=result, reference_accuracy=reference))
    return out


VARIANTS = {
    "original": ("original", 10.0, 10.5, 1.0),
    "int8-dynamic": ("quantize_dynamic", 4.0, 2.8, 0.995),
    "fp16": ("fp16", 11.0, 5.3, 1.0),
    "prune-structured": ("prune_structured", 5.0, 2.7, 0.93),
}


def test_a_profile_that_only_the_int8_variant_meets_picks_int8() -> None:
    profile = ProfileSpec(max_size_mb=4, max_p95_ms=6, max_accuracy_drop=0.01)
    candidates = _candidates(profile, VARIANTS)
    assert [c.name for c in candidates if c.passed] == ["int8-dynamic"]
    ranking = rank(candidates)
    assert ranking.best == "int8-dynamic" and ranking.ordered == ["int8-dynamic"]


def test_an_impossible_accuracy_bound_fails_every_variant_with_reasons_and_keeps_a_best_effort() -> None:
    profile = ProfileSpec(max_p95_ms=6, accuracy_metric="agreement", min_accuracy=1.01)
    candidates = _candidates(profile, VARIANTS)
    assert not any(c.passed for c in candidates)
    for candidate in candidates:
        assert any(f.startswith("agreement ") and f.endswith("< 1.01") for f in candidate.failures), candidate.failures
    ranking = rank(candidates)
    assert ranking.best is None
    # int8 and prune fail only the accuracy rule; int8 is faster, so it is the best effort.
    assert ranking.best_effort == "int8-dynamic"


# --- signature compatibility ----------------------------------------------------------------------


def _signature(inputs: list[tuple], outputs: list[tuple] | None = None) -> Signature:
    specs = lambda rows: tuple(TensorSpec(n, d, tuple(s)) for n, d, s in rows)  # noqa: E731
    return Signature(inputs=specs(inputs), outputs=specs(outputs if outputs is not None else [("y", "float32", ["batch", 1])]))


PRODUCTION = _signature([("features", "float32", ["batch", 2056])])


def test_an_identical_signature_is_compatible() -> None:
    assert compatibility(PRODUCTION, PRODUCTION) == []


def test_the_compatibility_check_catches_a_renamed_input() -> None:
    renamed = _signature([("x", "float32", ["batch", 2056])])
    assert compatibility(renamed, PRODUCTION) == ["input 'features' renamed to 'x'"]


@pytest.mark.parametrize(
    ("candidate", "change"),
    [
        (_signature([("features", "float16", ["batch", 2056])]), "input 'features' dtype changed float32 -> float16"),
        (_signature([("features", "float32", ["batch", 1024])]), "input 'features' dim 1 changed 2056 -> 1024"),
        (_signature([("features", "float32", [1, 2056])]), "input 'features' dim 0 changed batch -> 1"),
        (_signature([("features", "float32", ["batch", 2056, 1])]), "input 'features' rank changed 2 -> 3"),
        (_signature([("features", "float32", ["batch", 2056]), ("mask", "bool", ["batch"])]), "input 'mask' added"),
        (_signature([("features", "float32", ["batch", 2056])], []), "output 'y' removed"),
        (_signature([("features", "float32", ["batch", 2056])], [("score", "float32", ["batch", 1])]),
         "output 'y' renamed to 'score'"),
    ],
)
def test_breaking_changes_are_named(candidate: Signature, change: str) -> None:
    assert compatibility(candidate, PRODUCTION) == [change]


def test_relaxing_a_fixed_dim_or_adding_an_output_is_compatible() -> None:
    production = _signature([("features", "float32", [1, 2056])])
    relaxed = _signature([("features", "float32", ["batch", 2056])],
                         [("y", "float32", ["batch", 1]), ("extra", "float32", ["batch", 4])])
    assert compatibility(relaxed, production) == []
