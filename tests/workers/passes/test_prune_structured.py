"""prune_structured: remove whole neurons and channels so that the model really shrinks."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from workers import ort
from workers.formats import sha256_file, signature_from_onnx
from workers.passes import make_config, prune_structured
from workers.passes.base import MAX_IR_VERSION, PassInputError, UnsupportedModelError
from workers.samples import SampleModel


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    return {t.name: tuple(t.dims) for t in onnx.load(str(path)).graph.initializer}


def _layers(path: Path) -> list[tuple[str, str, str]]:
    """(node name, weight, bias) of each Gemm / Conv of a sample, in graph order."""
    return [(n.name, n.input[1], n.input[2]) for n in onnx.load(str(path)).graph.node if n.op_type in ("Gemm", "Conv")]


def _weight_shapes(src: Path, pruned: Path) -> list[tuple[int, ...]]:
    """The pruned model's weight shape of each layer of ``src``."""
    shapes = _shapes(pruned)
    return [shapes[weight] for _, weight, _ in _layers(src)]


def _export(model: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, as the samples use
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    onnx.save_model(proto, str(path))
    return path


def _kill(weight: torch.Tensor, bias: torch.Tensor | None, units: list[int]) -> None:
    """Make units dead (all-zero weights and bias): the weakest by any norm, and removable exactly."""
    with torch.no_grad():
        weight[units] = 0
        if bias is not None:
            bias[units] = 0


def test_half_the_units_of_the_mlp_leave_under_six_tenths_of_its_parameters(quality_mlp: SampleModel, tmp_path: Path) -> None:
    before = sha256_file(quality_mlp.onnx)
    config = prune_structured.Config(ratio=0.5, validation_data=quality_mlp.validation)
    result = prune_structured.run(quality_mlp.onnx, tmp_path, config)

    assert sha256_file(quality_mlp.onnx) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert onnx.load(str(result.artifact)).ir_version <= MAX_IR_VERSION
    # The contract: ratio 0.5 gives at most 0.6x the parameters (measured 0.44x: 2.76 M -> 1.22 M).
    assert result.metrics["param_ratio"] <= 0.6
    assert result.metrics["params_after"] <= 0.6 * result.metrics["params_before"]
    assert result.artifact.stat().st_size <= 0.6 * quality_mlp.onnx.stat().st_size
    layers = _layers(quality_mlp.onnx)
    assert _weight_shapes(quality_mlp.onnx, result.artifact) == [(512, 2056), (256, 512), (128, 256), (1, 128)]
    assert [_shapes(result.artifact)[bias] for _, _, bias in layers] == [(512,), (256,), (128,), (1,)]
    assert [row["layer"] for row in result.metrics["pruned_layers"]] == [name for name, _, _ in layers[:3]]
    assert any(layers[3][0] in note and "output" in note for note in result.notes)


def test_the_pruned_mlp_keeps_its_signature_and_reports_its_error(quality_mlp: SampleModel, tmp_path: Path) -> None:
    config = prune_structured.Config(ratio=0.5, validation_data=quality_mlp.validation)
    result = prune_structured.run(quality_mlp.onnx, tmp_path, config)

    assert signature_from_onnx(result.artifact) == signature_from_onnx(quality_mlp.onnx)
    x = np.load(quality_mlp.validation)["features"]
    reference = ort.session(quality_mlp.onnx).run(None, {"features": x})[0]
    pruned = ort.session(result.artifact).run(None, {"features": x})[0]
    assert pruned.shape == reference.shape
    # No fine-tuning: the outputs move (measured MAE 0.11 on sigmoid scores) and the metrics say by how much.
    assert result.metrics["mean_abs_error"] == pytest.approx(float(np.mean(np.abs(pruned - reference))), rel=1e-4)
    assert result.metrics["max_abs_error"] == pytest.approx(float(np.max(np.abs(pruned - reference))), rel=1e-4)
    assert result.metrics["label_mae_before"] < result.metrics["label_mae"]
    assert any("No fine-tuning" in note for note in result.notes)


def test_the_cnn_loses_channels_through_maxpool_and_flatten(digits_cnn: SampleModel, tmp_path: Path) -> None:
    config = prune_structured.Config(ratio=0.5, criterion="l2", validation_data=digits_cnn.validation)
    result = prune_structured.run(digits_cnn.onnx, tmp_path, config)

    # 16 channels x 4x4 features after the pool feed the first Gemm.
    assert _weight_shapes(digits_cnn.onnx, result.artifact) == [(8, 1, 3, 3), (16, 8, 3, 3), (32, 16 * 4 * 4), (10, 32)]
    images = np.load(digits_cnn.validation)["image"]
    assert ort.session(result.artifact).run(None, {"image": images[:3]})[0].shape == (3, 10)
    # Measured without fine-tuning: accuracy 0.99 -> 0.93 (l2), 0.90 (l1).
    assert result.metrics["accuracy"] >= 0.8
    assert result.metrics["accuracy_before"] >= 0.95


def test_removing_dead_channels_is_exact_through_batchnorm_pool_and_flatten(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.BatchNorm2d(6), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3),
    )
    _kill(model[0].weight, model[0].bias, [1, 4])
    with torch.no_grad():  # a dead channel stays 0 through BatchNorm only when its shift is 0
        model[2].running_mean.uniform_(0.1, 0.5)
        model[2].running_var.uniform_(0.5, 2.0)
        model[2].bias.uniform_(-0.5, 0.5)
        model[2].running_mean[[1, 4]] = 0
        model[2].bias[[1, 4]] = 0
    _kill(model[5].weight, model[5].bias, [0, 3, 7])
    src = _export(model, torch.randn(2, 2, 8, 8), tmp_path / "cnn.onnx")
    per_layer = (("/0/Conv", 2 / 6), ("/5/Gemm", 3 / 8))
    result = prune_structured.run(src, tmp_path / "out", prune_structured.Config(per_layer=per_layer))

    shapes = _shapes(result.artifact)
    assert shapes["0.weight"] == (4, 2, 3, 3)
    assert shapes["2.running_mean"] == (4,)
    assert shapes["5.weight"] == (5, 4 * 16)
    assert shapes["7.weight"] == (3, 5)
    x = np.random.default_rng(0).normal(size=(16, 2, 8, 8)).astype(np.float32)
    reference = ort.session(src).run(None, {"x": x})[0]
    pruned = ort.session(result.artifact).run(None, {"x": x})[0]
    # Only dead units were removed: a wrong channel-to-feature mapping would change the outputs.
    np.testing.assert_allclose(pruned, reference, atol=1e-5)
    assert "synthetic" in result.metrics["error_data"]


def test_removing_dead_units_of_a_matmul_add_chain_is_exact(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 12), torch.nn.LeakyReLU(0.1), torch.nn.Linear(12, 4))
    _kill(model[0].weight, model[0].bias, [2, 5, 6, 11])
    src = _export(model, torch.randn(2, 5, 16), tmp_path / "mlp.onnx")  # 3-D input: MatMul + Add
    assert {n.op_type for n in onnx.load(str(src)).graph.node} >= {"MatMul", "Add"}
    result = prune_structured.run(src, tmp_path / "out", prune_structured.Config(ratio=1 / 3))

    assert result.metrics["pruned_layers"][0]["units_after"] == 8
    x = np.random.default_rng(1).normal(size=(3, 5, 16)).astype(np.float32)
    np.testing.assert_allclose(ort.session(result.artifact).run(None, {"x": x})[0],
                               ort.session(src).run(None, {"x": x})[0], atol=1e-5)


def test_layers_and_per_layer_choose_what_is_pruned(quality_mlp: SampleModel, tmp_path: Path) -> None:
    (first, _, _), (_, second_weight, _), (third, _, _), _ = _layers(quality_mlp.onnx)
    # A layer is named by its node or by its weight initializer.
    config = prune_structured.Config(layers=(second_weight,))
    only_second = prune_structured.run(quality_mlp.onnx, tmp_path / "a", config)
    assert _weight_shapes(quality_mlp.onnx, only_second.artifact)[:3] == [(1024, 2056), (256, 1024), (256, 256)]

    config = make_config("prune_structured", {"per_layer": [[first, 0.25]], "layers": [third], "ratio": 0.75})
    mixed = prune_structured.run(quality_mlp.onnx, tmp_path / "b", config)
    assert _weight_shapes(quality_mlp.onnx, mixed.artifact)[:3] == [(768, 2056), (512, 768), (64, 512)]


def test_it_refuses_layers_it_cannot_prune(quality_mlp: SampleModel, tmp_path: Path) -> None:
    names = [name for name, _, _ in _layers(quality_mlp.onnx)]
    with pytest.raises(PassInputError, match="produces the model output"):
        prune_structured.run(quality_mlp.onnx, tmp_path / "a", prune_structured.Config(layers=(names[3],)))
    with pytest.raises(PassInputError, match="Nothing to prune"):
        prune_structured.run(quality_mlp.onnx, tmp_path / "c", prune_structured.Config(per_layer=((names[0], 0.0),)))
    with pytest.raises(PassInputError, match=re.escape(f"Prunable layers: {', '.join(names[:3])}")):
        prune_structured.run(quality_mlp.onnx, tmp_path / "b", prune_structured.Config(layers=("fc9",)))


def test_the_transformer_is_refused_with_what_is_supported(tiny_transformer: SampleModel, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError) as caught:
        prune_structured.run(tiny_transformer.onnx, tmp_path, prune_structured.Config())
    message = str(caught.value)
    assert "MLP and CNN layer chains" in message
    assert "residual connections" in message and "tiny_transformer" in message
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize(
    "options",
    [{"ratio": 0}, {"ratio": 1}, {"ratio": 1.2}, {"criterion": "l3"}, {"per_layer": [["/0/Gemm", 1.0]]},
     {"per_layer": ["/0/Gemm"]}, {"layers": "/0/Gemm"}, {"width": 0.5}],
)
def test_bad_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(PassInputError):
        make_config("prune_structured", options)
