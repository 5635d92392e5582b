"""prune_advice: per-layer sensitivity and a per-layer proposal that prune_structured accepts."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from workers.evaluation.prune_advice import DEFAULT_ERROR_FRACTION, advise_sparsity
from workers.passes import make_config, prune_structured
from workers.passes.base import PassInputError, UnsupportedModelError
from workers.samples import SampleModel


def _hidden_layers(path: Path) -> list[str]:
    """Node names of a sample's Gemm / Conv layers, the output layer left out."""
    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Gemm", "Conv")][:-1]


def test_it_measures_every_layer_at_every_candidate(digits_cnn: SampleModel) -> None:
    advice = advise_sparsity(digits_cnn.onnx, digits_cnn.validation)

    layers = _hidden_layers(digits_cnn.onnx)
    assert len(layers) == 3  # conv, conv, hidden Gemm
    assert [(row.layer, row.ratio) for row in advice.rows] == [(layer, r) for layer in layers for r in (0.25, 0.5, 0.75)]
    for layer in layers:
        errors = [row.error for row in advice.rows if row.layer == layer]
        assert errors[-1] >= errors[0]  # removing three quarters costs at least what a quarter does
    assert advice.samples == 128
    assert advice.max_error == pytest.approx(DEFAULT_ERROR_FRACTION * advice.output_scale)
    assert set(advice.proposal) == set(layers)
    assert advice.combined_error <= advice.max_error
    assert json.loads(json.dumps(advice.to_dict()))["proposal"] == advice.proposal


def test_its_proposal_feeds_prune_structured(digits_cnn: SampleModel, tmp_path: Path) -> None:
    advice = advise_sparsity(digits_cnn.onnx, digits_cnn.validation)
    # Measured: half of the 64 hidden units of /6/Gemm never fire, so removing them costs nothing
    # (proposal 0.5), while a quarter of either conv's channels moves the logits by more than the bound.
    assert advice.proposal[_hidden_layers(digits_cnn.onnx)[2]] >= 0.5

    config = make_config("prune_structured", {"per_layer": advice.to_dict()["per_layer"]},
                         validation_data=digits_cnn.validation)
    result = prune_structured.run(digits_cnn.onnx, tmp_path, config)
    assert result.metrics["mean_abs_error"] <= advice.max_error
    assert result.metrics["param_ratio"] < 0.6
    assert result.metrics["accuracy"] >= result.metrics["accuracy_before"] - 0.01


def test_the_joint_error_stays_under_the_bound(quality_mlp: SampleModel) -> None:
    advice = advise_sparsity(quality_mlp.onnx, quality_mlp.validation, candidates=(0.1, 0.25, 0.5))
    assert advice.combined_error <= advice.max_error
    assert any(ratio > 0 for ratio in advice.proposal.values())

    strict = advise_sparsity(quality_mlp.onnx, quality_mlp.validation, max_error=1e-6, max_samples=32)
    assert strict.proposal == dict.fromkeys(_hidden_layers(quality_mlp.onnx), 0.0)
    assert strict.per_layer == ()
    loose = advise_sparsity(quality_mlp.onnx, quality_mlp.validation, max_error=10.0, max_samples=32)
    assert set(loose.proposal.values()) == {0.75}


def test_the_transformer_is_refused(tiny_transformer: SampleModel) -> None:
    with pytest.raises(UnsupportedModelError, match="not supported"):
        advise_sparsity(tiny_transformer.onnx, tiny_transformer.validation)


@pytest.mark.parametrize("kwargs", [{"candidates": (0.5, 1.0)}, {"candidates": ()}, {"max_error": -1.0},
                                    {"max_samples": 0}, {"criterion": "l0"}])
def test_bad_arguments_are_refused(quality_mlp: SampleModel, kwargs: dict[str, object]) -> None:
    with pytest.raises(PassInputError):
        advise_sparsity(quality_mlp.onnx, quality_mlp.validation, **kwargs)  # type: ignore[arg-type]
