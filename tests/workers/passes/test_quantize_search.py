"""quantize_search: accuracy-aware INT8 on the real sample models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers import ort
from workers.formats import sha256_file
from workers.passes import make_config, quantize_search
from workers.passes.base import PassInputError
from workers.samples import SampleModel


def _config(sample: SampleModel, **options: object) -> quantize_search.Config:
    return quantize_search.Config(validation_data=sample.validation, calibration_data=sample.calibration,
                                  **options)  # type: ignore[arg-type]


def test_loose_bound_passes_with_best_candidate(quality_mlp: SampleModel, tmp_path: Path) -> None:
    before = sha256_file(quality_mlp.onnx)
    # Scores in [0, 1]: an MAE of 0.01 against the float model is loose; every recipe measured
    # 0.0008-0.009, so the search must pass and then pick the lowest MAE, not the first pass.
    result = quantize_search.run(quality_mlp.onnx, tmp_path, _config(quality_mlp, metric="mae", max_drop=0.01))
    metrics = result.metrics

    assert sha256_file(quality_mlp.onnx) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert metrics["passed"] is True
    assert metrics["task"] == "regression" and metrics["metric"] == "mae"
    names = [c["name"] for c in metrics["candidates"]]
    assert names[:5] == ["dynamic-per-tensor", "dynamic-per-channel", "static-qdq-minmax",
                         "static-qdq-entropy", "static-qdq-percentile"]
    passing = [c for c in metrics["candidates"] if c["passed"]]
    assert len(passing) >= 2
    best = min(passing, key=lambda c: c["value"])
    assert metrics["chosen"] == best["name"]
    assert metrics["value"] == pytest.approx(best["value"])
    assert metrics["size_ratio"] <= 0.3

    # The kept file is the chosen candidate: its MAE on the validation data is the reported one.
    # Fed in the search's batches of 64: dynamic quantization scales activations per batch, so its
    # outputs depend (slightly) on which rows share a batch.
    x = np.load(quality_mlp.validation)["features"]
    reference_session, candidate_session = ort.session(quality_mlp.onnx), ort.session(result.artifact)
    reference = np.concatenate([reference_session.run(None, {"features": x[i:i + 64]})[0] for i in range(0, len(x), 64)])
    candidate = np.concatenate([candidate_session.run(None, {"features": x[i:i + 64]})[0] for i in range(0, len(x), 64)])
    assert float(np.mean(np.abs(candidate - reference))) == pytest.approx(metrics["value"], rel=1e-3)


def test_auto_metric_on_classifier(digits_cnn: SampleModel, tmp_path: Path) -> None:
    result = quantize_search.run(digits_cnn.onnx, tmp_path, _config(digits_cnn))
    assert result.metrics["task"] == "classification"
    assert result.metrics["metric"] == "agreement"
    assert result.metrics["passed"] is True
    assert result.metrics["value"] >= 0.99  # default bound: max_drop 0.01 of agreement
    assert any("max_drop=0.01" in note for note in result.notes)


def test_min_value_on_labels(digits_cnn: SampleModel, tmp_path: Path) -> None:
    result = quantize_search.run(digits_cnn.onnx, tmp_path, _config(digits_cnn, metric="accuracy", min_value=0.9))
    assert result.metrics["passed"] is True
    assert result.metrics["threshold"] == pytest.approx(0.9)
    assert result.metrics["value"] >= 0.9


@pytest.mark.slow
def test_impossible_bound_keeps_best_effort(quality_mlp: SampleModel, tmp_path: Path) -> None:
    # INT8 cannot reproduce float outputs exactly: MAE 0 is impossible.
    result = quantize_search.run(quality_mlp.onnx, tmp_path,
                                 _config(quality_mlp, metric="mae", max_drop=0.0, time_budget_s=60))
    metrics = result.metrics
    assert metrics["passed"] is False
    assert not any(c["passed"] for c in metrics["candidates"])
    assert any("No candidate met mae <= 0" in note for note in result.notes)
    built = [c for c in metrics["candidates"] if c["value"] is not None]
    assert metrics["value"] == pytest.approx(min(c["value"] for c in built))
    # It went on to keep sensitive layers in float, ranked by exclude-one.
    assert any("-exclude-" in c["name"] for c in metrics["candidates"])
    ort.session(result.artifact)  # the best effort is a loadable model


def test_time_budget_stops_the_search(tiny_transformer: SampleModel, tmp_path: Path) -> None:
    result = quantize_search.run(tiny_transformer.onnx, tmp_path, _config(tiny_transformer, time_budget_s=0.001))
    assert len(result.metrics["candidates"]) == 1  # the first candidate always runs
    assert any("Time budget" in note for note in result.notes)
    assert result.metrics["task"] == "embedding" and result.metrics["metric"] == "cosine_min"


def test_without_calibration_only_dynamic(tiny_transformer: SampleModel, tmp_path: Path) -> None:
    config = quantize_search.Config(validation_data=tiny_transformer.validation, max_drop=0.01)
    result = quantize_search.run(tiny_transformer.onnx, tmp_path, config)
    assert [c["name"] for c in result.metrics["candidates"]] == ["dynamic-per-tensor", "dynamic-per-channel"]
    assert any("static (calibrated) candidates were skipped" in note for note in result.notes)
    assert result.metrics["passed"] is True


def test_bad_inputs_raise_typed_errors(tiny_transformer: SampleModel, tmp_path: Path) -> None:
    with pytest.raises(PassInputError, match="validation dataset"):
        quantize_search.run(tiny_transformer.onnx, tmp_path, quantize_search.Config())
    with pytest.raises(PassInputError, match="needs labels"):
        quantize_search.run(tiny_transformer.onnx, tmp_path, _config(tiny_transformer, metric="accuracy"))
    with pytest.raises(PassInputError, match="Unknown metric"):
        quantize_search.Config(metric="f1")
    with pytest.raises(PassInputError, match="max_drop"):
        make_config("quantize_search", {"max_drop": -1})
