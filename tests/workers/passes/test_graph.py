"""graph: onnxruntime offline optimization stored as a portable ONNX file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from workers import ort
from workers.formats import sha256_file
from workers.passes import graph, make_config
from workers.passes.base import MAX_IR_VERSION, PassInputError, UnsupportedModelError
from workers.samples import SampleModel

INPUTS = {"quality_mlp": "features", "digits_cnn": "image", "tiny_transformer": "input_ids"}
# Fusions reorder float operations only: the stated bound of the pass, 1e-4 x max(1, |ref|).
RELATIVE_TOLERANCE = 1e-4


@pytest.mark.parametrize("level", graph.LEVELS)
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_graph_optimizes_and_keeps_outputs(name: str, level: str, request: pytest.FixtureRequest,
                                           tmp_path: Path) -> None:
    sample: SampleModel = request.getfixturevalue(name)
    before = sha256_file(sample.onnx)
    result = graph.run(sample.onnx, tmp_path, graph.Config(level=level))

    assert sha256_file(sample.onnx) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # single file, scratch removed
    model = onnx.load(str(result.artifact))
    assert model.ir_version <= MAX_IR_VERSION
    assert result.metrics["nodes_after"] <= result.metrics["nodes_before"]
    assert result.metrics["max_abs_error"] is not None

    x = np.load(sample.validation)[INPUTS[name]]
    (reference,) = ort.session(sample.onnx, level="disable").run(None, {INPUTS[name]: x})
    (out,) = ort.session(result.artifact, level="disable").run(None, {INPUTS[name]: x})
    assert np.max(np.abs(out - reference)) <= RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(reference))))


def test_graph_extended_fuses(quality_mlp: SampleModel, tiny_transformer: SampleModel, tmp_path: Path) -> None:
    mlp = graph.run(quality_mlp.onnx, tmp_path / "mlp", graph.Config())
    assert mlp.metrics["nodes_after"] < mlp.metrics["nodes_before"]  # Gemm + Relu -> FusedGemm
    assert any("onnxruntime only" in note for note in mlp.notes)
    transformer = graph.run(tiny_transformer.onnx, tmp_path / "tt", graph.Config(level="basic"))
    assert transformer.metrics["nodes_after"] < transformer.metrics["nodes_before"]  # constant folding


def test_graph_level_all_is_refused() -> None:
    with pytest.raises(PassInputError, match="session loads"):
        graph.Config(level="all")
    with pytest.raises(PassInputError, match="'all'"):
        make_config("graph", {"level": "all"})
    with pytest.raises(PassInputError, match="Unknown graph level"):
        graph.Config(level="max")


def test_graph_refuses_torchscript(digits_cnn: SampleModel, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="export pass"):
        graph.run(digits_cnn.torchscript, tmp_path, graph.Config())
