"""graph level 'transformer': onnxruntime's transformer fusions for models with attention, checked on
validation rows, the fused ops named; models without attention keep the ORT levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.workers import encoders
from workers import ort
from workers.passes import graph, quantize_dynamic
from workers.passes.base import UnsupportedModelError
from workers.samples import SampleModel


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small BERT-like encoder, exported once for this module."""
    return encoders.bert_like_onnx(tmp_path_factory.mktemp("encoder") / "model.onnx")


def test_has_attention_tells_transformers_from_other_models(encoder: Path, tiny_transformer: SampleModel,
                                                            quality_mlp: SampleModel, tmp_path: Path) -> None:
    """G13: MatMul -> Softmax -> MatMul (through scale and mask) is attention; an MLP and a CNN have none."""
    assert graph.has_attention(encoder) and graph.has_attention(tiny_transformer.onnx)
    assert not graph.has_attention(quality_mlp.onnx)
    assert not graph.has_attention(encoders.cnn_opset12(tmp_path / "cnn.onnx"))


def test_transformer_fusions_keep_outputs_and_name_the_fused_ops(encoder: Path, tmp_path: Path) -> None:
    """G13: the BERT-like encoder gets fused attention and skip-LayerNorm; outputs equal the source's on
    validation rows padded to 64, and the note counts each fused op."""
    data = tmp_path / "v.npz"
    np.savez(data, **encoders.padded(encoders.sentences(12), 64))
    result = graph.run(encoder, tmp_path / "out", graph.Config(level="transformer", check_data=data))

    fused = result.metrics["fused_ops"]
    assert fused["Attention"] == encoders.LAYERS and fused["SkipLayerNormalization"] >= encoders.LAYERS
    assert any(note.startswith("Transformer fusions: Attention x2") for note in result.notes)
    assert result.metrics["nodes_after"] < result.metrics["nodes_before"]
    feeds = dict(np.load(data))
    for ref, out in zip(ort.session(encoder).run(None, feeds), ort.session(result.artifact).run(None, feeds),
                        strict=True):
        assert np.max(np.abs(out - ref)) <= graph.RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(ref))))


def test_a_fused_transformer_still_quantizes(encoder: Path, tmp_path: Path) -> None:
    """G13: the fused graph feeds INT8 (graph -> int8): dynamic quantization turns fused Attention into
    QAttention and the model runs."""
    fused = graph.run(encoder, tmp_path / "fused", graph.Config(level="transformer")).artifact
    int8 = quantize_dynamic.run(fused, tmp_path / "int8", quantize_dynamic.Config())
    assert int8.metrics["quantized_nodes"] > 0 and np.isfinite(int8.metrics["max_abs_error"])


def test_the_transformer_level_is_refused_for_a_model_without_attention(quality_mlp: SampleModel,
                                                                        tmp_path: Path) -> None:
    """G15: level 'transformer' on an MLP is refused with the level to use, and leaves no model."""
    with pytest.raises(UnsupportedModelError, match="Use 'extended'"):
        graph.run(quality_mlp.onnx, tmp_path, graph.Config(level="transformer"))
    assert not (tmp_path / "model.onnx").exists()
    assert graph.Config().level == "extended"  # the pass's default is the same for every model
