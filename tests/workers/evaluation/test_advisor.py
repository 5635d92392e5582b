"""The advisor's sentences follow from the candidates' numbers."""

from __future__ import annotations

from workers.evaluation.advisor import advise
from workers.planner import Candidate, rank

MB = 1024 * 1024


def _c(name: str, pass_name: str, latency: float, size_mb: float, agreement: float, *, passed: bool = True,
       failures: list[str] | None = None, parent: str = "original", limit: float | None = 0.99,
       options: dict | None = None, finite: bool = True) -> Candidate:
    return Candidate(name=name, parent=None if name == "original" else parent, pass_name=pass_name,
                     size_bytes=int(size_mb * MB), latency_ms=latency, accuracy=agreement, higher_is_better=True,
                     passed=passed, failures=failures or [], finite=finite, metric="agreement",
                     accuracy_limit=limit, options=options or {})


ORIGINAL = _c("original", "original", 12.0, 10.0, 1.0)


def test_the_best_variant_is_recommended_with_its_gains() -> None:
    candidates = [ORIGINAL, _c("int8-static", "quantize_static", 5.0, 2.6, 0.997),
                  _c("graph", "graph", 11.5, 10.0, 1.0)]
    lines = advise(candidates)
    assert lines[0] == "int8-static: 2.4x faster, 3.8x smaller, −0.3 % agreement, recommended"
    assert "graph: +0.0 % agreement, passes" in lines


def test_fp16_on_a_cpu_that_is_not_faster_points_to_cuda() -> None:
    lines = advise([ORIGINAL, _c("fp16", "fp16", 12.5, 5.0, 1.0)], target="cpu")
    assert "fp16: fp16 on this CPU is no faster (0.96x): use it on CUDA targets" in lines
    assert not any("no faster" in line for line in advise([ORIGINAL, _c("fp16", "fp16", 12.5, 5.0, 1.0)], target="cuda"))


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
                               finite=False), _c("graph", "graph", 13.0, 10.0, 1.0)]
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
    assert ("int8-dynamic: 5.0x slower than original: per-call activation quantization costs more than int8 "
            "saves here; prefer int8-static") in lines
    assert not any("slower than" in line for line in advise([ORIGINAL, _c("int8-dynamic", "quantize_dynamic", 5.0, 2.6, 1.0)]))
