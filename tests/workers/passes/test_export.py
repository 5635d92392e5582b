"""export: TorchScript -> ONNX on the real sample models, checked against torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers import ort
from workers.formats import sha256_file
from workers.passes import export, make_config
from workers.passes.base import AccuracyError, PassInputError
from workers.samples import SampleModel

INPUTS = {"quality_mlp": "features", "digits_cnn": "image", "tiny_transformer": "input_ids"}
# The exporter translates these models op for op; only float summation order differs between torch
# and onnxruntime (measured <= 1.2e-7), so 1e-5 x max(1, |ref|) leaves room without hiding a bug.
EXPORT_TOLERANCE = 1e-5


def _torch_reference(sample: SampleModel, x: np.ndarray) -> np.ndarray:
    import torch

    module = torch.jit.load(str(sample.torchscript), map_location="cpu").eval()
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_export_matches_torchscript(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    sample: SampleModel = request.getfixturevalue(name)
    before = sha256_file(sample.torchscript)
    result = export.run(sample.torchscript, tmp_path, export.Config(validation_data=sample.validation))

    assert result.artifact == tmp_path / "model.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # one file, no .onnx.data
    assert sha256_file(sample.torchscript) == before
    assert result.metrics["opset"] == 17
    assert result.metrics["size_bytes"] == result.artifact.stat().st_size
    assert result.metrics["max_abs_error"] <= 1e-4

    session = ort.session(result.artifact)
    assert [i.name for i in session.get_inputs()] == [INPUTS[name]]  # named after the dataset's array
    x = np.load(sample.validation)[INPUTS[name]]
    for rows in (1, 7, len(x)):  # the batch axis is dynamic
        reference = _torch_reference(sample, x[:rows])
        (out,) = session.run(None, {INPUTS[name]: x[:rows]})
        assert out.shape == reference.shape
        assert np.max(np.abs(out - reference)) <= EXPORT_TOLERANCE * max(1.0, float(np.max(np.abs(reference))))


def test_export_digits_predictions_equal_torch(digits_cnn: SampleModel, tmp_path: Path) -> None:
    result = export.run(digits_cnn.torchscript, tmp_path, export.Config(validation_data=digits_cnn.validation))
    data = np.load(digits_cnn.validation)
    (logits,) = ort.session(result.artifact).run(None, {"image": data["image"]})
    reference = _torch_reference(digits_cnn, data["image"])
    assert np.array_equal(np.argmax(logits, axis=1), np.argmax(reference, axis=1))
    assert np.mean(np.argmax(logits, axis=1) == data["labels"]) > 0.9  # the trained CNN, not noise


def test_export_names_inputs_after_the_dataset_when_forward_names_differ(tmp_path: Path) -> None:
    import torch

    source = tmp_path / "linear.pt"
    torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 2))).save(str(source))  # forward(self, input)
    data = tmp_path / "validation.npz"
    np.savez(data, features=np.ones((3, 4), np.float32), labels=np.zeros(3))
    result = export.run(source, tmp_path / "out", export.Config(validation_data=data))
    assert result.metrics["inputs"] == ["features"]
    assert any("matched the dataset's features by position" in note for note in result.notes)
    assert [i.name for i in ort.session(result.artifact).get_inputs()] == ["features"]


def test_export_refuses_onnx_source(digits_cnn: SampleModel, tmp_path: Path) -> None:
    with pytest.raises(PassInputError, match="already an ONNX model"):
        export.run(digits_cnn.onnx, tmp_path, export.Config(validation_data=digits_cnn.validation))


def test_export_needs_validation_data(digits_cnn: SampleModel, tmp_path: Path) -> None:
    with pytest.raises(PassInputError, match="validation dataset"):
        export.run(digits_cnn.torchscript, tmp_path, export.Config())


def test_export_refuses_non_torchscript(digits_cnn: SampleModel, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(PassInputError, match="not a TorchScript archive"):
        export.run(junk, tmp_path / "out", export.Config(validation_data=digits_cnn.validation))


def test_export_dataset_without_matching_arrays(digits_cnn: SampleModel, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, a=np.zeros((2, 1, 8, 8), np.float32), b=np.zeros((2, 3), np.float32))
    with pytest.raises(PassInputError, match="one array per forward"):
        export.run(digits_cnn.torchscript, tmp_path / "out", export.Config(validation_data=bad))


def test_export_out_of_tolerance_raises_and_leaves_no_model(tmp_path: Path) -> None:
    import torch

    class Noisy(torch.nn.Module):
        """Adds fresh noise on every call: torch and onnxruntime draw different numbers."""

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return features + torch.rand_like(features)

    source = tmp_path / "noisy.pt"
    torch.jit.script(Noisy()).save(str(source))
    data = tmp_path / "validation.npz"
    np.savez(data, features=np.zeros((16, 8), np.float32))
    with pytest.raises(AccuracyError, match=r"differs from TorchScript by .* tolerance 0\.0001"):
        export.run(source, tmp_path / "out", export.Config(validation_data=data))
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_export_config_validation(digits_cnn: SampleModel) -> None:
    with pytest.raises(PassInputError, match="opset"):
        export.Config(opset=99)
    with pytest.raises(PassInputError, match="no option"):
        make_config("export", {"opset_version": 17})
    config = make_config("export", {"opset": 16}, validation_data=digits_cnn.validation)
    assert config.opset == 16 and config.validation_data == digits_cnn.validation
