"""Accuracy metrics on constructed arrays and on real models run by onnxruntime."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.onnx_graphs import linear_onnx
from workers.evaluation.accuracy import (
    HIGHER_IS_BETTER,
    AccuracyInputError,
    AccuracyReport,
    compare_outputs,
    default_metric,
    evaluate,
    infer_task,
    run_reference,
)

rng = np.random.default_rng(0)


def test_identical_logits_agree_fully() -> None:
    logits = rng.normal(size=(50, 10)).astype(np.float32)
    report = compare_outputs([logits], [logits.copy()], task="classification")
    assert report.value("agreement") == 1.0
    assert report.value("max_abs_error") == 0.0
    assert report.value("rel_l2") == 0.0
    assert report.finite and report.samples == 50


def test_agreement_and_accuracy_count_top1() -> None:
    reference = np.eye(4, dtype=np.float32)  # predicts 0, 1, 2, 3
    candidate = reference[[0, 1, 3, 3]]  # third row now predicts 3
    report = compare_outputs([reference], [candidate], task="classification", labels=np.array([0, 1, 2, 0]))
    assert report.value("agreement") == pytest.approx(0.75)
    assert report.value("accuracy") == pytest.approx(0.5)


def test_regression_metrics_against_reference_and_labels() -> None:
    reference = np.array([[0.1], [0.5], [0.9]], dtype=np.float32)
    candidate = reference + np.array([[0.1], [-0.2], [0.0]], dtype=np.float32)
    labels = np.array([[0.0], [0.5], [1.0]], dtype=np.float32)
    report = compare_outputs([reference], [candidate], task="regression", labels=labels)
    assert report.value("mae") == pytest.approx(0.1, abs=1e-6)
    assert report.value("max_abs_error") == pytest.approx(0.2, abs=1e-6)
    assert report.value("label_mae") == pytest.approx((0.2 + 0.2 + 0.1) / 3, abs=1e-6)
    assert report.value("pearson") == pytest.approx(np.corrcoef(candidate.ravel(), labels.ravel())[0, 1])


def test_identical_embeddings_have_cosine_one_and_mae_zero() -> None:
    rows = rng.normal(size=(20, 64))
    report = compare_outputs([rows], [rows.copy()], task="embedding")
    assert report.value("cosine_mean") == pytest.approx(1.0)
    assert report.value("cosine_min") == pytest.approx(1.0)
    assert report.value("rel_l2") == 0.0


def test_cosine_min_finds_the_worst_row() -> None:
    rows = np.array([[1.0, 0.0], [0.0, 1.0]])
    candidate = np.array([[1.0, 0.0], [1.0, 1.0]])
    report = compare_outputs([rows], [candidate], task="embedding")
    assert report.value("cosine_min") == pytest.approx(math.sqrt(0.5))
    assert report.value("cosine_mean") == pytest.approx((1 + math.sqrt(0.5)) / 2)


def test_rel_l2_is_relative_to_the_reference_norm() -> None:
    reference = np.array([[3.0, 4.0]])
    report = compare_outputs([reference], [reference * 1.1], task="embedding")
    assert report.value("rel_l2") == pytest.approx(0.1)


def test_nan_in_candidate_marks_outputs_not_finite() -> None:
    logits = rng.normal(size=(4, 3))
    broken = logits.copy()
    broken[2, 1] = np.nan
    report = compare_outputs([logits], [broken], task="classification")
    assert report.finite is False
    assert report.value("agreement") == pytest.approx(0.75)  # a NaN row never agrees


def test_inf_in_any_output_marks_outputs_not_finite() -> None:
    first, second = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    report = compare_outputs([first, second], [first, np.full_like(second, np.inf)], task="classification")
    assert report.finite is False


@pytest.mark.parametrize(
    ("output", "labels", "task"),
    [
        (rng.normal(size=(8,)), None, "regression"),
        (rng.normal(size=(8, 1)), None, "regression"),
        (rng.normal(size=(8, 10)), None, "classification"),
        (rng.normal(size=(8, 100)), np.arange(8), "classification"),
        (np.full((8, 100), 0.01), None, "classification"),  # probabilities
        (rng.normal(size=(8, 100)), None, "embedding"),
        (np.eye(8, 16) * 1.0, None, "embedding"),  # unit-norm rows, narrow
        (rng.normal(size=(8, 16, 32)), None, "embedding"),
    ],
)
def test_infer_task_follows_the_documented_rule(output: np.ndarray, labels: np.ndarray | None, task: str) -> None:
    assert infer_task([output], labels) == task


def test_auto_task_is_resolved_in_the_report() -> None:
    report = compare_outputs([np.ones((3, 1))], [np.ones((3, 1))], task="auto")
    assert report.task == "regression"
    assert report.value("mae") == 0.0


def test_default_metrics_and_directions() -> None:
    assert [default_metric(t) for t in ("classification", "regression", "embedding")] == ["agreement", "mae", "cosine_min"]
    assert HIGHER_IS_BETTER["agreement"] and not HIGHER_IS_BETTER["mae"]
    with pytest.raises(AccuracyInputError, match="Unknown task"):
        default_metric("segmentation")


def test_shape_mismatch_is_refused_with_the_shapes() -> None:
    with pytest.raises(AccuracyInputError, match=r"\(2, 3\)"):
        compare_outputs([np.zeros((2, 3))], [np.zeros((2, 4))], task="classification")


def test_report_round_trips_through_strict_json_dicts() -> None:
    report = AccuracyReport(task="regression", metrics={"mae": 0.5, "pearson": math.nan}, finite=False, samples=7)
    data = report.to_dict()
    assert data["metrics"]["pearson"] is None
    back = AccuracyReport.from_dict(data)
    assert back.value("mae") == 0.5 and math.isnan(back.value("pearson")) and back.finite is False
    with pytest.raises(KeyError, match="agreement"):
        back.value("agreement")


def test_evaluate_runs_both_models_on_the_dataset(tmp_path) -> None:
    weights = rng.normal(size=(6, 4))
    noise = np.zeros_like(weights)
    noise[:, 0] = 5.0  # pushes many rows towards class 0
    reference = linear_onnx(tmp_path / "ref.onnx", weights)
    candidate = linear_onnx(tmp_path / "cand.onnx", weights + noise)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    labels = np.argmax(x @ weights, axis=1)
    np.savez(tmp_path / "val.npz", x=x, labels=labels)
    same = evaluate(reference, reference, tmp_path / "val.npz", task="classification")
    assert same.value("agreement") == 1.0 and same.value("accuracy") == pytest.approx(1.0)
    worse = evaluate(reference, candidate, tmp_path / "val.npz", task="classification", max_samples=30)
    assert worse.samples == 30
    assert worse.value("agreement") < 1.0
    assert worse.value("accuracy") == pytest.approx(worse.value("agreement"))


def test_the_reference_runs_once_and_every_candidate_is_compared_with_its_outputs(tmp_path) -> None:
    """The reference's outputs are kept from its one run: with its file gone, candidates are still
    compared with it, and its own score is the one a comparison with itself gives."""
    weights = rng.normal(size=(6, 4))
    reference = linear_onnx(tmp_path / "ref.onnx", weights)
    candidates = [linear_onnx(tmp_path / f"cand{i}.onnx", weights + i * 0.5) for i in range(2)]
    x = rng.normal(size=(40, 6)).astype(np.float32)
    np.savez(tmp_path / "val.npz", x=x, labels=np.argmax(x @ weights, axis=1))
    expected = [evaluate(reference, c, tmp_path / "val.npz", task="classification") for c in candidates]
    run = run_reference(reference, tmp_path / "val.npz")
    reference.unlink()
    assert [run.compare(c, task="classification").metrics for c in candidates] == [e.metrics for e in expected]
    assert run.itself(task="classification").value("agreement") == 1.0


def test_evaluate_feeds_a_fixed_batch_model_whole_batches_only(tmp_path) -> None:
    weights = rng.normal(size=(3, 2))
    model = linear_onnx(tmp_path / "fixed.onnx", weights, batch=4)
    np.savez(tmp_path / "val.npz", x=rng.normal(size=(10, 3)).astype(np.float32))
    assert evaluate(model, model, tmp_path / "val.npz", task="regression").samples == 8


def test_evaluate_names_a_missing_input_array(tmp_path) -> None:
    model = linear_onnx(tmp_path / "m.onnx", rng.normal(size=(3, 2)))
    np.savez(tmp_path / "val.npz", features=np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(AccuracyInputError, match="no array named x"):
        evaluate(model, model, tmp_path / "val.npz")


def test_evaluate_on_the_sample_models(quality_mlp, digits_cnn) -> None:
    regression = evaluate(quality_mlp.onnx, quality_mlp.onnx, quality_mlp.validation, max_samples=256)
    assert regression.task == "regression" and regression.value("mae") == 0.0
    assert regression.value("pearson") > 0.5
    classification = evaluate(digits_cnn.onnx, digits_cnn.onnx, digits_cnn.validation)
    assert classification.task == "classification"
    assert classification.value("agreement") == 1.0 and classification.value("accuracy") > 0.9
