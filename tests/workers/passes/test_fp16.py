"""fp16: float16 weights with float32 inputs/outputs on the real sample models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers import ort
from workers.formats import sha256_file
from workers.passes import fp16, make_config
from workers.passes.base import PassInputError, UnsupportedModelError
from workers.samples import SampleModel

INPUTS = {"quality_mlp": "features", "digits_cnn": "image", "tiny_transformer": "input_ids"}
# float16 keeps 11 significant bits (relative rounding 4.9e-4 per op). Measured on the validation
# data: MLP 1.5e-5, digits logits 6.4e-3 (|logits| up to ~24, i.e. 2.7e-4 relative), transformer
# 1.3e-4. 2e-3 x max(1, |ref|) is ~4x above the worst relative error.
FP16_RELATIVE_TOLERANCE = 2e-3


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_fp16_halves_and_stays_close(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    sample: SampleModel = request.getfixturevalue(name)
    before = sha256_file(sample.onnx)
    result = fp16.run(sample.onnx, tmp_path, fp16.Config())
    assert sha256_file(sample.onnx) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert result.metrics["size_ratio"] <= 0.56  # weights halve; graph structure is a fixed cost
    assert any("float32 speed" in note for note in result.notes)

    session = ort.session(result.artifact)
    assert session.get_outputs()[0].type == "tensor(float)"  # keep_io_types
    x = np.load(sample.validation)[INPUTS[name]]
    (reference,) = ort.session(sample.onnx).run(None, {INPUTS[name]: x})
    (out,) = session.run(None, {INPUTS[name]: x})
    assert out.dtype == np.float32
    assert np.max(np.abs(out - reference)) <= FP16_RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(reference))))


def test_fp16_without_io_types(digits_cnn: SampleModel, tmp_path: Path) -> None:
    result = fp16.run(digits_cnn.onnx, tmp_path, fp16.Config(keep_io_types=False))
    session = ort.session(result.artifact)
    assert session.get_inputs()[0].type == "tensor(float16)"
    data = np.load(digits_cnn.validation)
    (logits,) = session.run(None, {"image": data["image"].astype(np.float16)})
    (reference,) = ort.session(digits_cnn.onnx).run(None, {"image": data["image"]})
    assert np.mean(np.argmax(logits, 1) == np.argmax(reference, 1)) >= 0.99


def test_fp16_op_block_list_keeps_ops_in_float32(quality_mlp: SampleModel, tmp_path: Path) -> None:
    import onnx

    result = fp16.run(quality_mlp.onnx, tmp_path, fp16.Config(op_block_list=("Gemm",)))
    model = onnx.load(str(result.artifact))
    assert result.metrics["size_ratio"] > 0.9  # every weight belongs to a blocked Gemm
    assert all(init.data_type == onnx.TensorProto.FLOAT for init in model.graph.initializer if len(init.dims) == 2)


def test_fp16_bad_inputs(quality_mlp: SampleModel, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="TorchScript"):
        fp16.run(quality_mlp.torchscript, tmp_path, fp16.Config())
    with pytest.raises(PassInputError, match="op_block_list"):
        fp16.Config(op_block_list="Gemm")  # type: ignore[arg-type]
    with pytest.raises(PassInputError, match="no option"):
        make_config("fp16", {"keep_io": True})
