"""Default plans per format and target, plan validation, and the ranking of candidates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workers.evaluation.bench import BenchReport, _figures
from workers.evaluation.readiness import ProfileSpec, Verdict
from workers.evaluation.stats import Estimate, claim
from workers.planner import (
    DEFAULT_SEARCH_BUDGET_S,
    SEARCH,
    Candidate,
    PlanError,
    PlanStep,
    default_plan,
    make_candidate,
    rank,
    validate_plan,
)

# The option names each pass takes (the passes' Config fields).
PASS_OPTIONS = {
    "export": {"opset", "tolerance"},
    "graph": {"level"},
    "quantize_dynamic": {"weight_type", "per_channel", "reduce_range", "op_types", "nodes_to_exclude"},
    "quantize_static": {"format", "method", "per_channel", "activation_type", "weight_type", "max_samples",
                        "max_memory_mb", "nodes_to_exclude"},
    "fp16": {"keep_io_types", "op_block_list"},
    "prune_structured": {"ratio", "criterion", "layers", "per_layer"},
    "distill": {"width", "epochs", "patience", "temperature", "alpha", "lr", "batch_size", "task", "max_time_s", "seed"},
}


def _names(steps: list[PlanStep]) -> list[str]:
    return [s.name for s in steps]


def test_the_default_plan_is_one_search_under_the_given_budget() -> None:
    """(D21) The default plan is not a fixed list: one search step from the original, with its budget."""
    steps = default_plan(target="cpu", source_format="onnx", budget_s=90)
    assert steps == [PlanStep("search", SEARCH, {"budget_s": 90.0}, "original")]
    assert default_plan(target="cpu", source_format="onnx")[0].options == {"budget_s": DEFAULT_SEARCH_BUDGET_S}


def test_a_torchscript_upload_is_exported_first_and_the_search_starts_from_the_export() -> None:
    """(D21) Every recipe works on ONNX: the search's root is the export."""
    steps = default_plan(target="cpu", source_format="torchscript")
    assert steps[0] == PlanStep("export", "export", {"opset": 17}, "original")
    assert (steps[1].pass_name, steps[1].source) == (SEARCH, "export")


@pytest.mark.parametrize(("options", "message"), [
    ({"budget_s": 0}, "budget_s must be"), ({"budget_s": "soon"}, "budget_s must be"),
    ({"budget_s": True}, "budget_s must be"), ({"budget": 5}, "no option"),
])
def test_a_search_step_with_a_bad_budget_is_refused(options: dict, message: str) -> None:
    """(D21) A plan's search options are checked before any job exists."""
    with pytest.raises(PlanError, match=message):
        validate_plan([PlanStep("search", SEARCH, options)])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"target": "tpu", "source_format": "onnx"}, "Unknown target"),
    ({"target": "cpu", "source_format": "keras"}, "keras"),
])
def test_default_plan_refuses_unknown_targets_and_formats(kwargs: dict, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        default_plan(**kwargs)


@pytest.mark.parametrize(("steps", "message"), [
    ([PlanStep("a", "graph"), PlanStep("a", "fp16")], "must be unique"),
    ([PlanStep("a", "sharpen")], "unknown pass 'sharpen'"),
    ([PlanStep("a", "graph", source="b"), PlanStep("b", "graph")], "source 'b' is not an earlier step"),
    ([PlanStep("original", "graph")], "needs a name other than"),
])
def test_validate_plan_refuses_broken_plans(steps: list[PlanStep], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        validate_plan(steps)


@pytest.mark.parametrize(("step", "message"), [
    (PlanStep("prune", "prune_structured", {"ratio": 1.5}), "ratio must be a fraction"),
    (PlanStep("int8", "quantize_dynamic", {"weight_type": "int4"}), "Unknown weight_type 'int4'"),
    (PlanStep("int8", "quantize_static", {"calibration": "minmax"}), "has no option"),
])
def test_a_step_with_options_its_pass_refuses_is_refused_before_a_job_exists(step: PlanStep, message: str) -> None:
    """(D21) Each pass's options are checked by the pass's own rules when the plan is given, so a
    form or API caller hears the reason at once, not when the step's turn comes in the job."""
    with pytest.raises(PlanError, match=message) as refused:
        validate_plan([step])
    assert f"Step 1 ({step.name!r})" in str(refused.value)
    validate_plan([PlanStep("int8", "quantize_dynamic", {"weight_type": "quint8", "per_channel": False})])


def test_plan_steps_round_trip() -> None:
    step = PlanStep("int8", "quantize_dynamic", {"per_channel": True}, "export")
    assert PlanStep.from_dict(step.to_dict()) == step


# --- ranking ----------------------------------------------------------------------------------------


def _c(name: str, latency: float, size: int, accuracy: float | None, *, parent: str | None = "original",
       passed: bool | None = True, failures: list[str] | None = None, finite: bool = True,
       interval: tuple[float, float] | None = None, depth: int | None = None, pass_name: str | None = None,
       enough: bool = True, parent_speedup: dict | None = None) -> Candidate:
    """A candidate at p50, batch 1; ``interval`` is its latency's 95 % interval (none: a point)."""
    original = name == "original"
    return Candidate(name=name, parent=None if original else parent,
                     pass_name=pass_name or ("original" if original else "graph"), size_bytes=size,
                     latency_ms=latency, accuracy=accuracy, higher_is_better=True, passed=passed,
                     failures=failures or [], finite=finite,
                     latency_low=interval[0] if interval else None, latency_high=interval[1] if interval else None,
                     latency_enough=enough, depth=(0 if original else 1) if depth is None else depth,
                     parent_speedup=parent_speedup)


def _ratio(value: float, low: float, high: float) -> dict:
    return Estimate("p50 speed-up", value, low, high, 300, True).to_dict()


def test_the_pareto_frontier_keeps_only_undominated_trade_offs() -> None:
    candidates = [
        _c("original", 10, 100, 1.0),
        _c("fast", 4, 60, 0.97),
        _c("small", 6, 25, 0.96),
        _c("dominated", 7, 70, 0.95),  # slower, larger and less accurate than "fast"
        _c("broken", 1, 1, math.nan, finite=False),
    ]
    assert rank(candidates).pareto == {"original", "fast", "small"}


def test_a_variant_with_no_gain_over_its_parent_is_rejected() -> None:
    candidates = [
        _c("original", 10, 100, 1.0),
        _c("graph", 9, 100, 1.0),
        _c("slower", 12, 100, 1.0, parent="graph"),  # slower, same size, same accuracy as its parent
        _c("slower-but-smaller", 12, 50, 0.99, parent="graph"),
        _c("as-fast", 9.3, 100, 1.0, parent="graph"),  # 3 % slower: noise, not a loss
    ]
    ranking = rank(candidates)
    assert ranking.rejected == {"slower": "no gain over parent graph"}
    assert "slower" not in ranking.ordered and "slower-but-smaller" in ranking.ordered


def test_a_variant_is_rejected_as_slower_only_when_its_paired_ratio_says_so() -> None:
    """The paired ratio against the parent decides, not the two point values."""
    candidates = [
        _c("original", 10, 100, 1.0),
        _c("slower", 10.5, 100, 1.0, parent_speedup=_ratio(0.8, 0.75, 0.85)),
        _c("unclear", 14, 100, 1.0, parent_speedup=_ratio(0.7, 0.4, 1.1)),  # the interval includes 1
    ]
    assert rank(candidates).rejected == {"slower": "no gain over parent original"}


def test_passing_candidates_are_ordered_by_priority_with_noise_ties() -> None:
    candidates = [
        _c("original", 10, 100, 1.0),
        _c("a", 5.0, 80, 0.99),
        _c("b", 5.1, 40, 0.98),  # within the noise band of a's latency: the smaller size decides
        _c("c", 2.0, 90, 0.97, passed=False, failures=["accuracy drop"]),
    ]
    ranking = rank(candidates)
    assert ranking.ordered == ["b", "a", "original"] and ranking.best == "b" and ranking.best_effort is None
    assert ranking.ties == {"b": ["a"]}
    assert rank(candidates, priority=("accuracy", "latency")).ordered == ["original", "a", "b"]
    with pytest.raises(PlanError, match="Unknown priority"):
        rank(candidates, priority=("beauty",))


def test_two_candidates_whose_intervals_overlap_are_tied_and_the_smaller_wins() -> None:
    candidates = [
        _c("original", 10, 100, 1.0, interval=(9.8, 10.2)),
        _c("int8", 6.0, 30, 0.99, interval=(5.0, 7.4)),  # 20 % apart at the point, but the intervals overlap
        _c("graph", 7.2, 90, 1.0, interval=(6.9, 7.5)),
    ]
    ranking = rank(candidates)
    assert ranking.best == "int8" and ranking.ordered[:2] == ["int8", "graph"]
    assert ranking.ties == {"int8": ["graph"]}
    # The same numbers with narrow intervals: int8 is faster beyond doubt and wins on latency alone.
    narrow = [_c("original", 10, 100, 1.0), _c("int8", 6.0, 300, 0.99), _c("graph", 7.2, 90, 1.0)]
    assert rank(narrow).ordered == ["int8", "graph", "original"] and rank(narrow).ties == {}


def test_intervals_apart_but_within_the_noise_band_are_tied() -> None:
    candidates = [_c("original", 10.0, 100, 1.0, interval=(9.99, 10.01)),
                  _c("graph", 9.7, 100, 1.0, interval=(9.69, 9.71))]  # 3 % faster, intervals apart
    ranking = rank(candidates)
    assert ranking.best == "original" and ranking.ties == {"original": ["graph"]}


def test_a_pick_names_only_the_ties_its_choice_weighed() -> None:
    """Ties are not transitive: int8 is within the band of the original but beyond it from graph,
    the leader, so it never reaches the size key and the pick does not call itself tied with it."""
    candidates = [_c("original", 10.0, 100, 1.0, interval=(9.99, 10.01)),
                  _c("graph", 9.5, 100, 1.0, interval=(9.49, 9.51)),
                  _c("int8", 10.6, 30, 1.0, interval=(10.59, 10.61))]  # 6 % slower than the original, 12 % than graph
    ranking = rank(candidates)
    assert ranking.best == "original" and ranking.ties["original"] == ["graph"]


def test_with_equal_sizes_the_candidate_with_fewer_passes_wins_a_tie() -> None:
    tied = [_c("original", 10.0, 100, 1.0, interval=(9.5, 10.5)),
            _c("graph", 9.8, 100, 1.0, interval=(9.3, 10.3))]
    assert rank(tied).best == "original"
    deeper = [_c("original", 10.0, 100, 1.0, interval=(9.5, 10.5), passed=False, failures=["size"]),
              _c("graph+int8", 9.6, 50, 1.0, interval=(9.1, 10.1), depth=2),
              _c("int8", 9.9, 50, 1.0, interval=(9.4, 10.4), depth=1)]
    assert rank(deeper).ordered == ["int8", "graph+int8"]


def test_accuracy_equal_to_four_digits_does_not_break_a_tie() -> None:
    candidates = [_c("original", 10.0, 100, 0.99991, interval=(9.5, 10.5)),
                  _c("graph", 9.8, 100, 0.99994, interval=(9.3, 10.3))]
    assert rank(candidates).best == "original"
    clearer = [_c("original", 10.0, 100, 0.9991, interval=(9.5, 10.5)),
               _c("graph", 9.8, 100, 0.9994, interval=(9.3, 10.3))]
    assert rank(clearer).best == "graph"


def test_a_clearly_faster_candidate_wins_whatever_its_size() -> None:
    candidates = [_c("original", 10.0, 100, 1.0, interval=(9.8, 10.2)),
                  _c("small", 9.9, 10, 1.0, interval=(9.6, 10.2)),
                  _c("fast", 5.0, 400, 0.99, interval=(4.9, 5.1))]
    ranking = rank(candidates)
    assert ranking.best == "fast" and "fast" not in ranking.ties
    assert ranking.ordered == ["fast", "small", "original"]


def test_a_latency_from_too_few_calls_is_not_ranked() -> None:
    candidates = [_c("original", 10.0, 100, 1.0), _c("thin", 1.0, 10, 1.0, enough=False)]
    ranking = rank(candidates)
    assert ranking.ordered == ["original"] and "thin" not in ranking.pareto


def test_unjudged_candidates_are_ordered_as_measured_but_none_is_best() -> None:
    """G1: without a profile nothing is chosen: the measured order, best None, judged False."""
    candidates = [_c("original", 10, 100, 1.0, passed=None), _c("int8", 4, 30, 0.99, passed=None),
                  _c("nan", 1, 10, math.nan, passed=False, failures=["outputs contain NaN or Inf"], finite=False)]
    ranking = rank(candidates)
    assert ranking.judged is False and ranking.best is None and ranking.best_effort is None
    assert ranking.ordered == ["int8", "original"]  # the NaN variant, failed even unjudged, is left out
    assert ranking.to_dict()["judged"] is False
    judged = [_c("original", 10, 100, 1.0, passed=False, failures=["size"]), *candidates[1:]]
    assert rank(judged).judged is True


def test_when_nothing_passes_the_best_effort_has_the_fewest_failures_and_is_finite() -> None:
    candidates = [
        _c("original", 10, 100, 1.0, passed=False, failures=["p95", "size"]),
        _c("int8", 4, 30, 0.9, passed=False, failures=["accuracy"]),
        _c("nan", 1, 10, math.nan, passed=False, failures=["outputs contain NaN or Inf"], finite=False),
    ]
    ranking = rank(candidates)
    assert ranking.best is None and ranking.best_effort == "int8"
    assert ranking.to_dict() == {"ordered": [], "pareto": ["int8", "original"], "rejected": {}, "best": None,
                                 "best_effort": "int8", "ties": {}, "statistic": "p50", "batch_size": 1,
                                 "judged": True}


def test_among_equally_failing_candidates_the_best_effort_follows_the_priorities() -> None:
    candidates = [
        _c("original", 10, 100, 1.0, passed=False, failures=["size"]),
        _c("int8", 4, 30, 0.9, passed=False, failures=["accuracy"]),
        _c("prune", 9, 20, 0.9, passed=False, failures=["accuracy"]),
    ]
    assert rank(candidates).best_effort == "int8"
    assert rank(candidates, priority=("size", "latency")).best_effort == "prune"


def test_candidates_round_trip_and_old_constructor_calls_still_work() -> None:
    old = Candidate(name="int8", parent="original", pass_name="quantize_dynamic", size_bytes=10, latency_ms=2.0,
                    accuracy=0.99, higher_is_better=True, passed=True)
    assert old.latency == Estimate("p50", 2.0, 2.0, 2.0, 0, True) and old.depth == 0 and old.statistic == "p50"
    assert Candidate.from_dict(old.to_dict()) == old


def test_a_candidate_is_made_from_the_declared_statistic_with_its_paired_speedups() -> None:
    rng = np.random.default_rng(0)
    drift = rng.lognormal(0.0, 0.1, 15)

    def report(median: float) -> BenchReport:
        rounds = [list(median * d * rng.lognormal(0.0, 0.05, 20)) for d in drift]
        return BenchReport(model="m.onnx", file_size_bytes=1000, load_time_ms=1.0, peak_memory_mb=1.0,
                           baseline_memory_mb=1.0, memory_method="test", results={1: _figures(rounds, 1, (10, True))},
                           fingerprint={}, config={})

    original, graph, int8 = report(10.0), report(8.0), report(4.0)
    candidate = make_candidate(name="int8", parent="graph", pass_name="quantize_dynamic", profile=ProfileSpec(),
                               bench=int8, accuracy=None, verdict=Verdict(passed=True), reference_bench=original,
                               parent_bench=graph, depth=2)
    assert candidate.statistic == "p50" and candidate.latency_ms == int8.p50(1)
    assert (candidate.latency_low, candidate.latency_high) == (int8.estimate("p50", 1).low, int8.estimate("p50", 1).high)
    assert candidate.latency_enough and candidate.depth == 2 and candidate.batch_size == 1
    assert candidate.speedup["value"] == pytest.approx(original.p50(1) / int8.p50(1))
    assert candidate.parent_speedup["value"] == pytest.approx(graph.p50(1) / int8.p50(1))
    assert claim(Estimate.from_dict(candidate.speedup)) == "faster"
    unmeasured = make_candidate(name="x", parent=None, pass_name="original", profile=ProfileSpec(batch_size=8),
                                bench=int8, accuracy=None, verdict=Verdict(passed=None))
    assert unmeasured.latency_ms == math.inf and not unmeasured.measurable and unmeasured.speedup is None
