"""Safe intake of models and datasets: the accepted formats and the dataset rules.

Hostile uploads (RELIABILITY.md A1-A14) are in test_formats_hostile.py. Every file is built in
tmp_path, its models by tests/onnx_graphs.py; the helpers below are shared with that module.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.onnx_graphs import WEIGHTS, add_model, external_model_dir, make_zip, one_node_model, write_model
from workers import formats
from workers.formats import FormatError, Inspection, Signature, TensorSpec, sniffing
from workers.samples import SampleModel

MB = 1 << 20


# --- helpers shared with test_formats_hostile.py -------------------------------------------------


def refusal(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(FormatError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


DIGITS_SIGNATURE = Signature(
    inputs=(TensorSpec("image", "float32", ("batch", 1, 8, 8)),),
    outputs=(TensorSpec("logits", "float32", ("batch", 10)),),
)


def save_npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


# --- sniff --------------------------------------------------------------------------------------


def test_sniff_names_onnx_torchscript_and_archive(digits_cnn: SampleModel, tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "model.zip", {"model.onnx": digits_cnn.onnx.read_bytes()})
    assert formats.sniff(digits_cnn.onnx, "model.onnx") == "onnx"
    assert formats.sniff(digits_cnn.torchscript, "model.pt") == "torchscript"
    assert formats.sniff(archive, "model.zip") == "archive"


def test_sniff_decides_by_content_not_by_the_file_name(digits_cnn: SampleModel) -> None:
    assert formats.sniff(digits_cnn.onnx, "weights.pt") == "onnx"
    assert formats.sniff(digits_cnn.torchscript, "model.onnx") == "torchscript"


def test_sniff_refuses_a_numpy_dataset_uploaded_as_a_model(digits_cnn: SampleModel) -> None:
    assert "dataset" in refusal(formats.sniff, digits_cnn.validation, "model.zip")


def test_the_sniff_field_table_matches_onnx_model_proto() -> None:
    import onnx

    wire = {3: 0, 9: 2, 11: 2}  # protobuf field types int64, string, message -> wire types
    expected = {f.number: wire[f.type] for f in onnx.ModelProto.DESCRIPTOR.fields}
    assert sniffing._MODEL_FIELDS == expected


# --- ONNX inspection ----------------------------------------------------------------------------


def test_an_onnx_sample_passes_with_its_signature_opset_and_files(digits_cnn: SampleModel) -> None:
    inspection = formats.inspect_model(digits_cnn.onnx, max_bytes=10 * MB)
    assert inspection.format == "onnx"
    assert inspection.signature.inputs == (TensorSpec("image", "float32", ("batch", 1, 8, 8)),)
    assert inspection.signature.outputs == (TensorSpec("logits", "float32", ("batch", 10)),)
    assert (inspection.opset, inspection.ir_version, inspection.op_domains) == (17, 8, ["ai.onnx"])
    sha = hashlib.sha256(digits_cnn.onnx.read_bytes()).hexdigest()
    assert inspection.files == [("model.onnx", sha, digits_cnn.onnx.stat().st_size)]
    assert (inspection.sha256, inspection.primary) == (sha, "model.onnx")
    assert inspection.total_size == digits_cnn.onnx.stat().st_size


def test_an_inspection_round_trips_through_json(tiny_transformer: SampleModel) -> None:
    inspection = formats.inspect_model(tiny_transformer.onnx, max_bytes=10 * MB)
    again = Inspection.from_dict(json.loads(json.dumps(inspection.to_dict())))
    assert again == inspection
    assert again.signature.inputs[0] == TensorSpec("input_ids", "int64", ("batch", 16))


def test_external_data_beside_the_model_passes_and_every_file_is_listed(tmp_path: Path) -> None:
    root = external_model_dir(tmp_path)
    inspection = formats.inspect_model(root / "model.onnx", max_bytes=MB)
    assert [entry.path for entry in inspection.files] == ["model.onnx", "weights.bin"]
    assert inspection.files[1].sha256 == hashlib.sha256(WEIGHTS.tobytes()).hexdigest()
    assert inspection.total_size == sum(entry.size for entry in inspection.files)


def test_an_archive_of_model_and_external_data_is_extracted_and_inspected(tmp_path: Path) -> None:
    root = external_model_dir(tmp_path / "src")
    archive = make_zip(tmp_path / "upload.zip", {
        "model.onnx": (root / "model.onnx").read_bytes(), "weights.bin": (root / "weights.bin").read_bytes(),
    }, deflate=True)
    inspection = formats.inspect_model(archive, max_bytes=MB, workdir=tmp_path / "work")
    assert inspection.format == "archive"
    assert inspection.root == str(tmp_path / "work")
    assert sorted(entry.path for entry in inspection.files) == ["model.onnx", "weights.bin"]
    assert (tmp_path / "work" / "weights.bin").read_bytes() == WEIGHTS.tobytes()


def test_extract_archive_returns_the_single_onnx_inside(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"sub/": b"", "sub/m.onnx": add_model().SerializeToString()})
    assert formats.extract_archive(archive, tmp_path / "out", max_bytes=MB) == tmp_path / "out" / "sub" / "m.onnx"


def test_a_com_microsoft_contrib_op_is_allowed(tmp_path: Path) -> None:
    path = write_model(one_node_model("Gelu", "com.microsoft"), tmp_path / "gelu.onnx")
    assert formats.inspect_model(path, max_bytes=MB).op_domains == ["com.microsoft"]


def test_a_function_defined_inside_the_model_may_use_its_own_domain(tmp_path: Path) -> None:
    from onnx import helper

    body = [helper.make_node("Relu", ["a"], ["b"])]
    function = helper.make_function("my.fn", "MyRelu", ["a"], ["b"], body, [helper.make_opsetid("", 17)])
    path = write_model(one_node_model("MyRelu", "my.fn", functions=(function,)), tmp_path / "fn.onnx")
    assert formats.inspect_model(path, max_bytes=MB).op_domains == ["ai.onnx", "my.fn"]


def test_runtime_limits_are_probed_from_the_installed_onnxruntime() -> None:
    limits = formats.runtime_limits()
    assert limits.probed
    assert limits.max_ir_version == formats.FALLBACK_MAX_IR_VERSION == 13
    assert limits.max_opsets == formats.FALLBACK_MAX_OPSETS


def test_sha256_file_streams_in_chunks_and_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * (5 * MB // 256 + 7))
    assert formats.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# --- the sandboxed child ------------------------------------------------------------------------


@pytest.mark.slow
def test_an_onnx_sample_is_inspected_in_a_child_process(quality_mlp: SampleModel) -> None:
    inspection = formats.inspect_in_subprocess(quality_mlp.onnx, max_bytes=100 * MB)
    assert inspection == formats.inspect_model(quality_mlp.onnx, max_bytes=100 * MB)


@pytest.mark.slow
def test_the_torchscript_sample_gives_the_schema_input_names(digits_cnn: SampleModel, tiny_transformer: SampleModel) -> None:
    digits = formats.inspect_in_subprocess(digits_cnn.torchscript, max_bytes=10 * MB)
    assert digits.format == "torchscript"
    assert digits.signature.inputs == (TensorSpec("image", "float32", ("batch", "?")),)  # forward(self, image)
    assert digits.signature.outputs == (TensorSpec("output", "float32", ("batch", "?")),)
    assert any("dataset" in note for note in digits.notes)
    assert digits.files == [("model.pt", formats.sha256_file(digits_cnn.torchscript), digits_cnn.torchscript.stat().st_size)]
    transformer = formats.inspect_in_subprocess(tiny_transformer.torchscript, max_bytes=10 * MB)
    assert transformer.signature.inputs == (TensorSpec("input_ids", "int64", ("batch", "?")),)  # feeds an embedding


def test_torchscript_is_never_loaded_in_the_calling_process(digits_cnn: SampleModel) -> None:
    with pytest.raises(RuntimeError, match="inspect_in_subprocess"):
        formats.inspect_model(digits_cnn.torchscript, max_bytes=10 * MB)


@pytest.mark.slow
def test_an_archive_inspected_in_the_child_is_kept_in_the_callers_workdir(tmp_path: Path) -> None:
    root = external_model_dir(tmp_path / "src")
    archive = make_zip(tmp_path / "upload.zip", {
        "m/model.onnx": (root / "model.onnx").read_bytes(), "m/weights.bin": (root / "weights.bin").read_bytes(),
    })
    inspection = formats.inspect_in_subprocess(archive, max_bytes=MB, workdir=tmp_path / "work")
    assert inspection.primary == "m/model.onnx"
    assert all((Path(inspection.root) / entry.path).is_file() for entry in inspection.files)


# --- datasets -----------------------------------------------------------------------------------


def test_the_sample_datasets_fit_their_models(digits_cnn: SampleModel, tiny_transformer: SampleModel) -> None:
    info = formats.check_dataset(digits_cnn.validation, DIGITS_SIGNATURE, max_bytes=10 * MB)
    assert (info.sample_count, info.has_labels) == (500, True)
    assert info.arrays == {"image": {"dtype": "float32", "shape": [500, 1, 8, 8]}, "labels": {"dtype": "int64", "shape": [500]}}
    assert info.sha256 == formats.sha256_file(digits_cnn.validation)
    assert formats.DatasetInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    signature = formats.inspect_model(tiny_transformer.onnx, max_bytes=10 * MB).signature
    calibration = formats.check_dataset(tiny_transformer.calibration, signature, max_bytes=MB, purpose="calibration")
    assert (calibration.sample_count, calibration.has_labels) == (128, False)


def test_a_dataset_missing_an_input_names_it_and_what_the_file_holds(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", pixels=np.zeros((3, 1, 8, 8), np.float32))
    message = refusal(formats.check_dataset, path, DIGITS_SIGNATURE, max_bytes=MB)
    assert "'image'" in message and "'pixels'" in message


def test_a_dataset_with_a_wrong_trailing_shape_is_refused(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", image=np.zeros((3, 1, 8, 7), np.float32))
    message = refusal(formats.check_dataset, path, DIGITS_SIGNATURE, max_bytes=MB)
    assert "'image'" in message and "dimension 3" in message


def test_a_dataset_with_a_wrong_rank_is_refused(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", image=np.zeros((3, 64), np.float32))
    assert "'image'" in refusal(formats.check_dataset, path, DIGITS_SIGNATURE, max_bytes=MB)


def test_a_dataset_of_python_objects_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", image=np.array([{"a": 1}, None], dtype=object))
    message = refusal(formats.check_dataset, path, DIGITS_SIGNATURE, max_bytes=MB)
    assert "'image'" in message and "pickle" in message


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_dataset_with_nan_or_infinite_inputs_is_refused(tmp_path: Path, bad: float) -> None:
    image = np.zeros((3, 1, 8, 8), np.float32)
    image[1, 0, 2, 2] = bad
    path = save_npz(tmp_path / "d.npz", image=image)
    message = refusal(formats.check_dataset, path, DIGITS_SIGNATURE, max_bytes=MB)
    assert "'image'" in message and "NaN" in message


def test_a_dataset_whose_labels_count_differs_is_refused(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", image=np.zeros((3, 1, 8, 8), np.float32), labels=np.zeros(4, np.int64))
    message = refusal(formats.check_dataset, path, DIGITS_SIGNATURE, max_bytes=MB)
    assert "'labels': 4" in message and "'image': 3" in message


def test_unknown_extra_arrays_are_refused_with_a_hint(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", image=np.zeros((3, 1, 8, 8), np.float32), lables=np.zeros(3, np.int64))
    message = refusal(formats.check_dataset, path, DIGITS_SIGNATURE, max_bytes=MB)
    assert "'lables'" in message and "did you mean 'labels'" in message


def test_integer_inputs_refuse_floats_and_out_of_range_values(tmp_path: Path) -> None:
    signature = Signature(inputs=(TensorSpec("ids", "int32", ("batch", 2)),), outputs=())
    floats = save_npz(tmp_path / "f.npz", ids=np.zeros((2, 2), np.float32))
    assert "takes integers" in refusal(formats.check_dataset, floats, signature, max_bytes=MB)
    huge = save_npz(tmp_path / "h.npz", ids=np.full((2, 2), 2**40, np.int64))
    assert "outside the range of int32" in refusal(formats.check_dataset, huge, signature, max_bytes=MB)
    fine = save_npz(tmp_path / "ok.npz", ids=np.ones((2, 2), np.int64))
    assert formats.check_dataset(fine, signature, max_bytes=MB).sample_count == 2


def test_float_inputs_accept_integers(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", image=np.ones((2, 1, 8, 8), np.uint8))
    assert formats.check_dataset(path, DIGITS_SIGNATURE, max_bytes=MB).sample_count == 2


def test_a_torchscript_signature_accepts_any_trailing_shape(tmp_path: Path) -> None:
    signature = Signature(inputs=(TensorSpec("input", "float32", ("batch", "?")),), outputs=())
    path = save_npz(tmp_path / "d.npz", input=np.zeros((5, 3, 7, 2), np.float32))
    assert formats.check_dataset(path, signature, max_bytes=MB).sample_count == 5


def test_a_dataset_without_samples_or_over_the_cap_is_refused(tmp_path: Path) -> None:
    empty = save_npz(tmp_path / "e.npz", image=np.zeros((0, 1, 8, 8), np.float32))
    assert "no samples" in refusal(formats.check_dataset, empty, DIGITS_SIGNATURE, max_bytes=MB)
    big = save_npz(tmp_path / "b.npz", image=np.zeros((100, 1, 8, 8), np.float32))
    assert "over the limit" in refusal(formats.check_dataset, big, DIGITS_SIGNATURE, max_bytes=1000)


def test_a_file_that_is_not_an_npz_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    path.write_text("image,label\n0,1\n")
    assert ".npz" in refusal(formats.check_dataset, path, DIGITS_SIGNATURE, max_bytes=MB)
