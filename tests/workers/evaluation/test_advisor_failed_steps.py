"""The advisor never recommends a step that failed: "prefer int8-static" names a passing int8-static
variant of the job, or the pass when the job did not try it, and never one whose step failed."""

from __future__ import annotations

from workers.evaluation.advisor import advise
from workers.planner import Candidate

MB = 1024 * 1024


def _c(name: str, pass_name: str, latency: float, agreement: float, *, passed: bool = True,
       failures: tuple[str, ...] = ()) -> Candidate:
    original = name == "original"
    return Candidate(name=name, parent=None if original else "original", pass_name=pass_name,
                     size_bytes=(10 if original else 3) * MB, latency_ms=latency, accuracy=agreement,
                     higher_is_better=True, passed=passed, failures=list(failures), finite=True, metric="agreement",
                     accuracy_limit=0.99, options={}, statistic="p50", batch_size=1, depth=0 if original else 1)


ORIGINAL = _c("original", "original", 13.0, 1.0)
SLOW_DYNAMIC = _c("int8-dynamic", "quantize_dynamic", 68.0, 0.995, passed=False, failures=("p95 68 ms > 20 ms",))


def test_a_failed_static_step_is_never_recommended() -> None:
    """G1: dynamic INT8 5x slower and the int8-static step failed: no line says "prefer int8-static"."""
    lines = advise([ORIGINAL, SLOW_DYNAMIC], failed={"int8-static": "quantize_static"})
    assert not any("prefer int8-static" in line for line in lines)
    assert any(line.endswith("costs more than int8 saves here; drop it (int8-static failed in this job too)")
               for line in lines)


def test_a_static_variant_that_fails_the_profile_is_not_recommended_either() -> None:
    """G1: an int8-static variant measured but failing the profile is no alternative to point at."""
    failing = _c("int8-static", "quantize_static", 10.0, 0.91, passed=False, failures=("agreement 0.91 < 0.99",))
    lines = advise([ORIGINAL, SLOW_DYNAMIC, failing])
    assert not any("prefer int8-static" in line for line in lines)
    assert any("drop it (int8-static fails the profile too)" in line for line in lines)


def test_a_passing_static_variant_is_named_when_dynamic_is_slow() -> None:
    """G1: when an int8-static variant passed, the slow dynamic one points at it by its own name."""
    static = _c("int8-static-entropy", "quantize_static", 10.0, 0.995)
    lines = advise([ORIGINAL, SLOW_DYNAMIC, static], failed={"int8-static": "quantize_static"})
    assert any(line.endswith("saves here; prefer int8-static-entropy") for line in lines)


def test_a_failed_quantize_search_is_not_suggested_for_an_inaccurate_int8() -> None:
    """G1: INT8 that misses accuracy is sent to quantize_search only when that step did not fail."""
    inaccurate = _c("int8-dynamic", "quantize_dynamic", 13.0, 0.95, passed=False, failures=("agreement 0.95 < 0.99",))
    assert any("try quantize_search" in line for line in advise([ORIGINAL, inaccurate]))
    lines = advise([ORIGINAL, inaccurate], failed={"int8-search": "quantize_search"})
    assert not any("try quantize_search" in line for line in lines)
    assert "int8-dynamic: int8 misses accuracy by 4.0 points (quantize_search failed in this job): keep float" in lines
