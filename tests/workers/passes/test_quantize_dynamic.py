"""quantize_dynamic: INT8 weights on the real sample models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from workers import ort
from workers.formats import sha256_file
from workers.passes import graph, make_config, quantize_dynamic
from workers.passes.base import MAX_IR_VERSION, PassInputError, UnsupportedModelError
from workers.samples import SampleModel


def _outputs(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    return ort.session(path).run(None, {name: x})[0]


def test_int8_mlp_is_small_and_close(quality_mlp: SampleModel, tmp_path: Path) -> None:
    before = sha256_file(quality_mlp.onnx)
    result = quantize_dynamic.run(quality_mlp.onnx, tmp_path, quantize_dynamic.Config())

    assert sha256_file(quality_mlp.onnx) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert onnx.load(str(result.artifact)).ir_version <= MAX_IR_VERSION
    # The contract: INT8 of the MLP is at most 0.3x the fp32 file (int8 weights are 1/4 + scales).
    assert result.artifact.stat().st_size <= 0.3 * quality_mlp.onnx.stat().st_size
    assert result.metrics["size_ratio"] <= 0.3
    assert result.metrics["quantized_nodes"] == 4  # the four Linear layers
    assert result.metrics["size_before"] == quality_mlp.onnx.stat().st_size

    x = np.load(quality_mlp.validation)["features"]
    reference, candidate = _outputs(quality_mlp.onnx, "features", x), _outputs(result.artifact, "features", x)
    # Outputs are sigmoid scores in [0, 1]; measured MAE 0.0009 and max error 0.004 on the 512
    # validation rows. Bounds at ~5x leave room for kernel differences while catching a broken
    # scale (which shifts scores by >= 0.05).
    assert float(np.mean(np.abs(candidate - reference))) <= 0.005
    assert float(np.max(np.abs(candidate - reference))) <= 0.02


def test_int8_digits_keeps_predictions(digits_cnn: SampleModel, tmp_path: Path) -> None:
    result = quantize_dynamic.run(digits_cnn.onnx, tmp_path, quantize_dynamic.Config(weight_type="quint8"))
    data = np.load(digits_cnn.validation)
    reference, candidate = _outputs(digits_cnn.onnx, "image", data["image"]), _outputs(result.artifact, "image", data["image"])
    # Measured: every one of the 500 top-1 predictions is unchanged. Allow 2 % for borderline digits.
    assert np.mean(np.argmax(candidate, 1) == np.argmax(reference, 1)) >= 0.98
    assert np.mean(np.argmax(candidate, 1) == data["labels"]) >= np.mean(np.argmax(reference, 1) == data["labels"]) - 0.02


@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_transformer_embeddings(tiny_transformer: SampleModel, tmp_path: Path, per_channel: bool) -> None:
    result = quantize_dynamic.run(tiny_transformer.onnx, tmp_path, quantize_dynamic.Config(per_channel=per_channel))
    x = np.load(tiny_transformer.validation)["input_ids"]
    reference, candidate = _outputs(tiny_transformer.onnx, "input_ids", x), _outputs(result.artifact, "input_ids", x)
    cosine = np.sum(reference * candidate, 1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1))
    # Measured cosine_min 0.9999 on a CPU with VNNI, 0.988 on an AVX2-only one (its u8 x s8 kernel
    # sums pairs in int16, which saturates); 0.98 is a usable-embedding floor on both.
    assert float(np.min(cosine)) >= 0.98
    assert result.metrics["size_ratio"] <= 0.4
    assert any("per_channel" in n for n in result.notes) == (not per_channel)


def test_excluding_a_gemm_keeps_it_float(quality_mlp: SampleModel, tmp_path: Path) -> None:
    # The dynamic quantizer renames Gemm to "<name>_MatMul"; the pass maps the exclusion.
    first = next(n.name for n in onnx.load(str(quality_mlp.onnx)).graph.node if n.op_type == "Gemm")
    result = quantize_dynamic.run(quality_mlp.onnx, tmp_path, quantize_dynamic.Config(nodes_to_exclude=(first,)))
    assert result.metrics["quantized_nodes"] == 3
    assert not any("names no node" in note for note in result.notes)
    assert result.metrics["size_ratio"] > 0.7  # the 2056x1024 first layer is most of the file


def test_an_unknown_excluded_node_is_reported(digits_cnn: SampleModel, tmp_path: Path) -> None:
    result = quantize_dynamic.run(digits_cnn.onnx, tmp_path, quantize_dynamic.Config(nodes_to_exclude=("nope",)))
    assert "nodes_to_exclude names no node of the graph: nope." in result.notes


def test_bad_inputs_raise_typed_errors(quality_mlp: SampleModel, tmp_path: Path) -> None:
    with pytest.raises(PassInputError, match="weight_type"):
        quantize_dynamic.Config(weight_type="int4")
    with pytest.raises(PassInputError, match="weight_type"):
        make_config("quantize_dynamic", {"weight_type": "float8"})
    with pytest.raises(UnsupportedModelError, match="TorchScript"):
        quantize_dynamic.run(quality_mlp.torchscript, tmp_path / "a", quantize_dynamic.Config())
    first = quantize_dynamic.run(quality_mlp.onnx, tmp_path / "b", quantize_dynamic.Config())
    with pytest.raises(UnsupportedModelError, match="already quantized"):
        quantize_dynamic.run(first.artifact, tmp_path / "c", quantize_dynamic.Config())


def test_graph_fused_model_is_explained(quality_mlp: SampleModel, tmp_path: Path) -> None:
    # graph 'extended' turns every Gemm+Relu of the MLP into FusedGemm, which onnxruntime's
    # quantizer does not handle: the error says to quantize before the graph pass.
    fused = graph.run(quality_mlp.onnx, tmp_path / "g", graph.Config(level="extended"))
    with pytest.raises(UnsupportedModelError, match="before the graph pass"):
        quantize_dynamic.run(fused.artifact, tmp_path / "q", quantize_dynamic.Config())
    assert not (tmp_path / "q" / "model.onnx").exists()


def test_graph_extended_transformer_then_quantize(tiny_transformer: SampleModel, tmp_path: Path) -> None:
    optimized = graph.run(tiny_transformer.onnx, tmp_path / "g", graph.Config(level="extended"))
    result = quantize_dynamic.run(optimized.artifact, tmp_path / "q", quantize_dynamic.Config())
    assert result.metrics["quantized_nodes"] >= 6  # DefaultTensorType lets fused transformer graphs quantize
