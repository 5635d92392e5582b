"""The advisor's sentences follow from the candidates' numbers, and its speed words from their intervals."""

from __future__ import annotations

import re

from workers.evaluation.advisor import advise, speed_words
from workers.evaluation.stats import Estimate
from workers.planner import Candidate, rank

MB = 1024 * 1024
SPEED = re.compile(r"faster|slower|same speed")


def _c(name: str, pass_name: str, latency: float, size_mb: float, agreement: float, *, passed: bool | None = True,
       failures: list[str] | None = None, parent: str = "original", limit: float | None = 0.99,
       options: dict | None = None, finite: bool = True, interval: tuple[float, float] | None = None,
       speedup: dict | None = None, parent_speedup: dict | None = None, statistic: str = "p50",
       batch: int = 1) -> Candidate:
    original = name == "original"
    return Candidate(name=name, parent=None if original else parent, pass_name=pass_name,
                     size_bytes=int(size_mb * MB), latency_ms=latency, accuracy=agreement, higher_is_better=True,
                     passed=passed, failures=failures or [], finite=finite, metric="agreement",
                     accuracy_limit=limit, options=options or {},
                     latency_low=interval[0] if interval else None, latency_high=interval[1] if interval else None,
                     statistic=statistic, batch_size=batch, depth=0 if original else 1, speedup=speedup,
                     parent_speedup=parent_speedup)


def _ratio(value: float, low: float, high: float, statistic: str = "p50", calls: int = 300) -> dict:
    return Estimate(f"{statistic} speed-up", value, low, high, calls, calls >= 20).to_dict()


ORIGINAL = _c("original", "original", 12.0, 10.0, 1.0)


def test_the_best_variant_is_recommended_with_its_gains() -> None:
    candidates = [ORIGINAL, _c("int8-static", "quantize_static", 5.0, 2.6, 0.997),
                  _c("graph", "graph", 11.5, 10.0, 1.0)]
    lines = advise(candidates)
    assert lines[0] == "int8-static: 2.4x faster (p50 at batch 1), 3.8x smaller, −0.3 % agreement, recommended"
    assert "graph: same speed (within noise) (p50 at batch 1), +0.0 % agreement, passes" in lines


def test_a_paired_speedup_is_stated_with_its_interval() -> None:
    int8 = _c("int8-static", "quantize_static", 5.0, 2.6, 0.997, speedup=_ratio(2.4, 2.2, 2.6))
    lines = advise([ORIGINAL, int8])
    assert lines[0] == ("int8-static: 2.4x faster (p50 at batch 1, 95 % interval 2.20–2.60x), 3.8x smaller, "
                        "−0.3 % agreement, recommended")


def test_advice_never_calls_a_variant_faster_when_the_ratios_interval_includes_one() -> None:
    """A 1.3x point ratio whose 95 % interval is 0.9–1.8 could be a slowdown: no claim is made."""
    noisy = _c("graph", "graph", 9.2, 10.0, 1.0, speedup=_ratio(1.3, 0.9, 1.8))
    lines = advise([ORIGINAL, noisy])
    assert "graph: same speed (within noise) (p50 at batch 1), +0.0 % agreement, recommended" in lines
    assert not any("faster" in line for line in lines)
    assert speed_words(noisy, ORIGINAL, noisy.speedup) == "same speed (within noise) (p50 at batch 1)"


def test_unpaired_latencies_whose_intervals_overlap_are_the_same_speed() -> None:
    reference = _c("original", "original", 12.0, 10.0, 1.0, interval=(9.0, 15.0))
    variant = _c("graph", "graph", 8.0, 10.0, 1.0, interval=(6.0, 10.0))  # 1.5x at the points
    assert speed_words(variant, reference) == "same speed (within noise) (p50 at batch 1)"
    apart = _c("int8", "quantize_static", 4.0, 2.6, 1.0, interval=(3.9, 4.1))
    assert speed_words(apart, reference) == "3.0x faster (p50 at batch 1, 95 % interval 2.20–3.85x)"


def test_a_ratio_from_too_few_calls_claims_nothing() -> None:
    variant = _c("graph", "graph", 4.0, 10.0, 1.0, speedup=_ratio(3.0, 2.9, 3.1, calls=10))
    assert speed_words(variant, ORIGINAL, variant.speedup) == "same speed (within noise) (p50 at batch 1)"


def test_every_speed_claim_names_its_statistic_and_batch() -> None:
    at = {"statistic": "p95", "batch": 8}
    reference = _c("original", "original", 12.0, 10.0, 1.0, **at)
    candidates = [
        reference,
        _c("int8-static", "quantize_static", 5.0, 2.6, 0.997, speedup=_ratio(2.4, 2.2, 2.6, "p95"), **at),
        _c("graph", "graph", 11.5, 10.0, 1.0, **at),
        _c("fp16", "fp16", 12.5, 5.0, 1.0, **at),
        _c("int8-dynamic", "quantize_dynamic", 30.0, 2.6, 1.0, passed=False, failures=["p95 30 ms > 18 ms at batch 8"],
           parent_speedup=_ratio(0.4, 0.35, 0.45, "p95"), **at),
    ]
    lines = advise(candidates, target="cpu")
    claims = [line for line in lines if SPEED.search(line)]
    assert len(claims) >= 4, lines
    for line in claims:
        assert "p95 at batch 8" in line, line
    assert "fp16: fp16 on this CPU is no faster (0.96x, p95 at batch 8): use it on CUDA targets" in lines


def test_fp16_on_a_cpu_that_is_not_faster_points_to_cuda() -> None:
    lines = advise([ORIGINAL, _c("fp16", "fp16", 12.5, 5.0, 1.0)], target="cpu")
    assert "fp16: fp16 on this CPU is no faster (0.96x, p50 at batch 1): use it on CUDA targets" in lines
    assert not any("no faster" in line for line in advise([ORIGINAL, _c("fp16", "fp16", 12.5, 5.0, 1.0)], target="cuda"))
    faster = _c("fp16", "fp16", 6.0, 5.0, 1.0, parent_speedup=_ratio(2.0, 1.8, 2.2))
    assert not any("no faster" in line for line in advise([ORIGINAL, faster], target="cpu"))


def test_a_distilled_student_that_misses_accuracy_is_told_to_grow() -> None:
    student = _c("distill", "distill", 3.0, 2.5, 0.949, passed=False, failures=["accuracy drop 0.051 > 0.01 (agreement)"],
                 limit=0.99, options={"width": 0.5})
    lines = advise([ORIGINAL, student])
    assert "distill: distilled student misses accuracy by 4.1 points: try width 0.75" in lines


def test_a_pruned_variant_that_fails_accuracy_is_told_to_prune_less() -> None:
    pruned = _c("prune-structured", "prune_structured", 7.0, 5.2, 0.9, passed=False, failures=["agreement 0.9 < 0.99"],
                options={"ratio": 0.5})
    assert "prune-structured: 1.9x smaller but fails accuracy: try a lower ratio (0.25)" in advise([ORIGINAL, pruned])


def test_no_passing_variant_names_the_best_effort_and_its_failures() -> None:
    failing = Candidate(**{**ORIGINAL.to_dict(), "passed": False, "failures": ["p95 12 ms > 5 ms at batch 1"]})
    int8 = _c("int8-dynamic", "quantize_dynamic", 4.0, 2.6, 0.97, passed=False, failures=["agreement 0.97 < 0.99"])
    lines = advise([failing, int8])
    assert lines[-1] == "no variant passes the profile; best effort is int8-dynamic (fails: agreement 0.97 < 0.99)"
    assert "int8-dynamic: int8 misses accuracy by 2.0 points: try quantize_search, which keeps the most sensitive " \
           "layers in float" in lines


def test_non_finite_and_no_gain_variants_are_called_out() -> None:
    candidates = [ORIGINAL, _c("nan", "fp16", 1.0, 5.0, 0.0, passed=False, failures=["outputs contain NaN or Inf"],
                               finite=False), _c("graph", "graph", 14.0, 10.0, 1.0)]
    lines = advise(candidates, ranking=rank(candidates))
    assert "nan: outputs contain NaN or Inf: never deploy it" in lines
    assert "graph: no gain over parent original (slower, not smaller, not more accurate): drop it" in lines
    assert lines[-1] == "the original model is the best that passes: no variant beats it under this profile"


def test_a_cpu_without_vnni_is_mentioned_for_int8() -> None:
    candidates = [ORIGINAL, _c("int8-dynamic", "quantize_dynamic", 8.0, 2.6, 0.995)]
    no_vnni = {"isa": {"avx2": True, "avx512_vnni": False, "avx_vnni": False}}
    assert any("no VNNI" in line for line in advise(candidates, fingerprint=no_vnni))
    assert not any("no VNNI" in line for line in advise(candidates, fingerprint={"isa": {"avx512_vnni": True}}))


def test_a_dynamic_int8_variant_slower_than_its_parent_points_to_static_int8() -> None:
    slow = _c("int8-dynamic", "quantize_dynamic", 60.0, 2.6, 1.0, passed=False, failures=["p95 60 ms > 18 ms at batch 1"])
    lines = advise([ORIGINAL, slow])
    assert ("int8-dynamic: 5.0x slower (p50 at batch 1) than original: per-call activation quantization costs more "
            "than int8 saves here; prefer int8-static") in lines
    assert not any("slower" in line for line in advise([ORIGINAL, _c("int8-dynamic", "quantize_dynamic", 5.0, 2.6, 1.0)]))
    unclear = _c("int8-dynamic", "quantize_dynamic", 14.0, 2.6, 1.0, parent_speedup=_ratio(0.85, 0.6, 1.2))
    assert not any("prefer int8-static" in line for line in advise([ORIGINAL, unclear]))


def test_a_best_pick_tied_with_others_says_so_and_why_it_won() -> None:
    candidates = [_c("original", "original", 12.0, 10.0, 1.0, interval=(11.0, 13.0)),
                  _c("int8-static", "quantize_static", 11.0, 2.6, 0.999, interval=(10.0, 12.5)),
                  _c("graph", "graph", 11.5, 10.0, 1.0, interval=(10.5, 12.5))]
    ranking = rank(candidates)
    assert ranking.best == "int8-static"
    lines = advise(candidates, ranking=ranking)
    assert ("int8-static is tied on p50 latency at batch 1 with original, graph (their speed ratio is within noise): chosen by size, "
            "then accuracy, then fewest passes") in lines
    assert not any("is tied" in line for line in advise([ORIGINAL, _c("int8-static", "quantize_static", 5.0, 2.6, 1.0)]))


def test_without_a_profile_variants_are_measured_not_judged() -> None:
    """G1: a run with no profile recommends nothing."""
    candidates = [_c("original", "original", 12.0, 10.0, 1.0, passed=None),
                  _c("int8-static", "quantize_static", 5.0, 2.6, 0.997, passed=None)]
    lines = advise(candidates)
    assert lines[0] == "int8-static: 2.4x faster (p50 at batch 1), 3.8x smaller, −0.3 % agreement, measured, not judged " \
                       "(no profile)"
    assert lines[-1] == ("no profile: variants were measured, not judged; run under the model's governing profile to "
                         "choose one")
    assert not any("recommended" in line for line in lines)
