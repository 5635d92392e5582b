"""A model below the opset a quantizer needs is converted first and checked for equal outputs:
an opset-12 CNN gets a working per-channel static INT8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.workers import encoders
from workers import ort
from workers.evaluation import accuracy
from workers.passes import opset, quantize_static


@pytest.fixture
def cnn(tmp_path: Path) -> tuple[Path, Path]:
    """The opset-12 CNN and a calibration set of 64 images."""
    data = tmp_path / "images.npz"
    np.savez(data, image=encoders.images(64))
    return encoders.cnn_opset12(tmp_path / "cnn12.onnx"), data


def test_an_opset_12_cnn_gets_a_working_per_channel_static_int8(cnn: tuple[Path, Path], tmp_path: Path) -> None:
    """G13: per-channel QDQ at opset 12 writes a graph onnxruntime refuses (DequantizeLinear has no axis
    there); the pass converts the CNN to opset 13 first, says so, and the INT8 model runs and stays
    close to the original's probability map."""
    model, data = cnn
    result = quantize_static.run(model, tmp_path / "int8", quantize_static.Config(calibration_data=data, check_data=data))

    assert any(note.startswith("Converted from opset 12 to 13") for note in result.notes)
    assert opset.default_opset(onnx.load(str(result.artifact))) >= 13
    assert result.metrics["quantized_nodes"] >= 3
    images = {"image": np.load(data)["image"][:1]}
    report = accuracy.compare_outputs(ort.session(model).run(None, images), ort.session(result.artifact).run(None, images),
                                      task="embedding")
    assert report.value("cosine_min") > 0.99
    assert sorted(p.name for p in (tmp_path / "int8").iterdir()) == ["model.onnx"]  # scratch removed


def test_a_model_already_at_opset_13_is_used_as_it_is(tmp_path: Path) -> None:
    """G13: conversion happens only below opset 13: a newer model is quantized from its own file."""
    model = encoders.bert_like_onnx(tmp_path / "bert.onnx")
    feeds = encoders.padded(encoders.sentences(2))
    assert opset.ensure_opset(model, tmp_path, feeds) == (model, None)
    assert list(tmp_path.glob("opset*.onnx")) == []


def test_the_conversion_is_checked_on_the_check_rows(cnn: tuple[Path, Path], tmp_path: Path) -> None:
    """G13: the converted model is compared with the source on the rows given and its note counts them."""
    model, data = cnn
    converted, note = opset.ensure_opset(model, tmp_path, {"image": np.load(data)["image"][:1]})
    assert converted.parent == tmp_path and opset.default_opset(onnx.load(str(converted))) == 13
    assert "outputs equal on 1 check row (max abs error" in note
