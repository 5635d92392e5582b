"""prune_magnitude: zero the smallest weights of Gemm/MatMul/Conv on the real sample models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from workers import ort
from workers.formats import sha256_file, signature_from_onnx
from workers.passes import make_config, prune_magnitude
from workers.passes.base import MAX_IR_VERSION, PassInputError, UnsupportedModelError
from workers.samples import SampleModel


def _weights(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _layers(path: Path) -> list[tuple[str, str, str]]:
    """(node name, weight, bias) of each Gemm / Conv of a sample, in graph order."""
    return [(n.name, n.input[1], n.input[2]) for n in onnx.load(str(path)).graph.node if n.op_type in ("Gemm", "Conv")]


def test_it_zeroes_half_of_every_mlp_weight_and_leaves_biases(quality_mlp: SampleModel, tmp_path: Path) -> None:
    before = sha256_file(quality_mlp.onnx)
    config = prune_magnitude.Config(sparsity=0.5, validation_data=quality_mlp.validation)
    result = prune_magnitude.run(quality_mlp.onnx, tmp_path, config)

    assert sha256_file(quality_mlp.onnx) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert onnx.load(str(result.artifact)).ir_version <= MAX_IR_VERSION
    original, pruned = _weights(quality_mlp.onnx), _weights(result.artifact)
    layers = _layers(quality_mlp.onnx)
    assert len(layers) == 4
    for _, name, _ in layers:
        assert abs(float(np.mean(pruned[name] == 0)) - 0.5) < 0.01
        kept = pruned[name] != 0
        # The survivors are untouched and every zeroed weight was no larger than any survivor.
        assert np.array_equal(pruned[name][kept], original[name][kept])
        assert np.abs(original[name][~kept]).max() <= np.abs(original[name][kept]).min()
    for _, _, name in layers:
        assert np.array_equal(pruned[name], original[name])
    assert result.metrics["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert result.metrics["params"] == 2_762_753
    assert result.metrics["zeroed"] == pytest.approx(0.5 * result.metrics["pruned_params"], rel=1e-3)


def test_it_says_zeros_do_not_shrink_the_dense_file(quality_mlp: SampleModel, tmp_path: Path) -> None:
    result = prune_magnitude.run(quality_mlp.onnx, tmp_path, prune_magnitude.Config(validation_data=quality_mlp.validation))

    assert result.metrics["size_after"] == pytest.approx(result.metrics["size_before"], rel=0.01)
    # Measured: zlib size 10.2 MB -> 5.9 MB at 50 % sparsity.
    assert result.metrics["compressed_size_after"] < 0.7 * result.metrics["compressed_size_before"]
    assert any("do not shrink the dense ONNX file" in note for note in result.notes)
    # Measured on the 512 validation rows: MAE 0.032, max 0.089 on sigmoid scores in [0, 1].
    assert result.metrics["mean_abs_error"] < 0.08
    assert result.metrics["max_abs_error"] < 0.25
    assert result.metrics["error_data"].startswith("the validation data")


def test_the_pruned_cnn_runs_with_the_same_signature(digits_cnn: SampleModel, tmp_path: Path) -> None:
    result = prune_magnitude.run(digits_cnn.onnx, tmp_path, prune_magnitude.Config(sparsity=0.5))

    assert signature_from_onnx(result.artifact) == signature_from_onnx(digits_cnn.onnx)
    images = np.load(digits_cnn.validation)["image"]
    logits = ort.session(result.artifact).run(None, {"image": images[:7]})[0]
    assert logits.shape == (7, 10)
    # No validation data was given: the error is measured on synthetic inputs and says so.
    assert "synthetic" in result.metrics["error_data"]
    assert np.isfinite(result.metrics["max_abs_error"])


def test_op_types_limit_which_weights_are_pruned(digits_cnn: SampleModel, tmp_path: Path) -> None:
    result = prune_magnitude.run(digits_cnn.onnx, tmp_path, prune_magnitude.Config(sparsity=0.75, op_types=("Conv",)))

    original, pruned = _weights(digits_cnn.onnx), _weights(result.artifact)
    _, (_, conv2, _), (_, fc1, _), (_, fc2, _) = _layers(digits_cnn.onnx)
    assert abs(float(np.mean(pruned[conv2] == 0)) - 0.75) < 0.01
    assert np.array_equal(pruned[fc1], original[fc1]) and np.array_equal(pruned[fc2], original[fc2])
    assert result.metrics["weights_pruned"] == 2


def test_validation_accuracy_is_reported(digits_cnn: SampleModel, tmp_path: Path) -> None:
    config = prune_magnitude.Config(sparsity=0.5, validation_data=digits_cnn.validation)
    result = prune_magnitude.run(digits_cnn.onnx, tmp_path, config)

    # Measured: accuracy 0.99 -> 0.972, agreement 0.978 without fine-tuning.
    assert result.metrics["accuracy_before"] >= 0.95
    assert result.metrics["accuracy"] >= result.metrics["accuracy_before"] - 0.06
    assert result.metrics["agreement"] >= 0.9


@pytest.mark.parametrize("sparsity", [0, 1, 1.5, -0.1, True, "half"])
def test_it_refuses_a_sparsity_outside_zero_one(sparsity: object) -> None:
    with pytest.raises(PassInputError, match="sparsity"):
        prune_magnitude.Config(sparsity=sparsity)  # type: ignore[arg-type]


def test_it_refuses_bad_op_types_and_takes_json_lists() -> None:
    with pytest.raises(PassInputError, match="op_types"):
        prune_magnitude.Config(op_types=("Relu",))
    with pytest.raises(PassInputError, match="op_types"):
        prune_magnitude.Config(op_types="Gemm")  # type: ignore[arg-type]
    with pytest.raises(PassInputError, match="sparsity"):
        make_config("prune_magnitude", {"sparsity": 2})
    config = make_config("prune_magnitude", {"op_types": ["Gemm", "Conv"]}, validation_data=Path("v.npz"))
    assert config.op_types == ("Gemm", "Conv")


def test_it_refuses_torchscript(quality_mlp: SampleModel, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="TorchScript"):
        prune_magnitude.run(quality_mlp.torchscript, tmp_path, prune_magnitude.Config())
