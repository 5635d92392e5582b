"""Default plans per format and target, plan validation, and the ranking of candidates."""

from __future__ import annotations

import math

import pytest

from workers.planner import Candidate, PlanError, PlanStep, default_plan, rank, validate_plan

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


def test_an_onnx_classifier_on_cpu_with_data_gets_the_full_small_plan() -> None:
    steps = default_plan(target="cpu", task="classification", source_format="onnx", has_calibration=True, has_training=True)
    assert _names(steps) == ["graph", "int8-dynamic", "int8-static", "prune-structured", "distill"]
    assert {s.source for s in steps} == {"original"}
    by_name = {s.name: s for s in steps}
    assert by_name["int8-dynamic"].options == {"per_channel": True}
    assert by_name["int8-static"].options == {"format": "qdq", "method": "minmax"}
    assert by_name["prune-structured"].options == {"ratio": 0.5}
    assert by_name["distill"].options == {"width": 0.5}
    for step in steps:
        assert set(step.options) <= PASS_OPTIONS[step.pass_name], step


def test_a_torchscript_upload_is_exported_first_and_everything_starts_from_the_export() -> None:
    steps = default_plan(target="cpu", task="regression", source_format="torchscript", has_calibration=True)
    assert steps[0] == PlanStep("export", "export", {"opset": 17}, "original")
    assert all(s.source == "export" for s in steps[1:])
    assert _names(steps) == ["export", "graph", "int8-dynamic", "int8-static", "prune-structured"]


def test_a_cuda_target_gets_fp16_and_no_int8() -> None:
    steps = default_plan(target="cuda", task="regression", source_format="onnx", has_calibration=True)
    assert _names(steps) == ["graph", "fp16", "prune-structured"]
    assert steps[1].options == {"keep_io_types": True}


def test_fp16_is_only_for_cuda_and_static_int8_only_with_calibration() -> None:
    steps = default_plan(target="cpu", task="embedding", source_format="onnx", has_calibration=False)
    assert _names(steps) == ["graph", "int8-dynamic"]  # embeddings are not pruned; no data, no distill


def test_a_classifier_distills_even_without_training_data_a_regressor_does_not() -> None:
    steps = default_plan(target="cpu", task="classification", source_format="onnx", has_calibration=False)
    assert "distill" in _names(steps)
    regression = default_plan(target="cpu", task="regression", source_format="onnx", has_calibration=True)
    assert "distill" not in _names(regression)
    trained = default_plan(target="cpu", task="regression", source_format="onnx", has_calibration=True, has_training=True)
    assert "distill" in _names(trained)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"target": "tpu", "source_format": "onnx"}, "Unknown target"),
    ({"target": "cpu", "source_format": "keras"}, "keras"),
])
def test_default_plan_refuses_unknown_targets_and_formats(kwargs: dict, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        default_plan(task="regression", has_calibration=False, **kwargs)


@pytest.mark.parametrize(("steps", "message"), [
    ([PlanStep("a", "graph"), PlanStep("a", "fp16")], "must be unique"),
    ([PlanStep("a", "sharpen")], "unknown pass 'sharpen'"),
    ([PlanStep("a", "graph", source="b"), PlanStep("b", "graph")], "source 'b' is not an earlier step"),
    ([PlanStep("original", "graph")], "needs a name other than"),
])
def test_validate_plan_refuses_broken_plans(steps: list[PlanStep], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        validate_plan(steps)


def test_plan_steps_round_trip() -> None:
    step = PlanStep("int8", "quantize_dynamic", {"per_channel": True}, "export")
    assert PlanStep.from_dict(step.to_dict()) == step


# --- ranking ----------------------------------------------------------------------------------------


def _c(name: str, latency: float, size: int, accuracy: float | None, *, parent: str | None = "original",
       passed: bool = True, failures: list[str] | None = None, finite: bool = True) -> Candidate:
    return Candidate(name=name, parent=None if name == "original" else parent, pass_name="graph", size_bytes=size,
                     latency_ms=latency, accuracy=accuracy, higher_is_better=True, passed=passed,
                     failures=failures or [], finite=finite)


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


def test_passing_candidates_are_ordered_by_priority_with_noise_ties() -> None:
    candidates = [
        _c("original", 10, 100, 1.0),
        _c("a", 5.0, 80, 0.99),
        _c("b", 5.1, 40, 0.98),  # within 5 % of a's latency: the smaller size decides
        _c("c", 2.0, 90, 0.97, passed=False, failures=["accuracy drop"]),
    ]
    ranking = rank(candidates)
    assert ranking.ordered == ["b", "a", "original"] and ranking.best == "b" and ranking.best_effort is None
    assert rank(candidates, priority=("accuracy", "latency")).ordered == ["original", "a", "b"]
    with pytest.raises(PlanError, match="Unknown priority"):
        rank(candidates, priority=("beauty",))


def test_when_nothing_passes_the_best_effort_has_the_fewest_failures_and_is_finite() -> None:
    candidates = [
        _c("original", 10, 100, 1.0, passed=False, failures=["p95", "size"]),
        _c("int8", 4, 30, 0.9, passed=False, failures=["accuracy"]),
        _c("nan", 1, 10, math.nan, passed=False, failures=["outputs contain NaN or Inf"], finite=False),
    ]
    ranking = rank(candidates)
    assert ranking.best is None and ranking.best_effort == "int8"
    assert ranking.to_dict() == {"ordered": [], "pareto": ["int8", "original"], "rejected": {}, "best": None,
                                 "best_effort": "int8"}
