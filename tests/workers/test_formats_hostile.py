"""Hostile uploads (RELIABILITY.md A1-A12): each is refused with a message a person can act on,
nothing it names is read, nothing it carries runs, and the calling process lives on."""

from __future__ import annotations

import io
import os
import pickle
import signal
import stat
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.onnx_graphs import (
    WEIGHTS,
    add_model,
    external_model_dir,
    externalize,
    make_zip,
    one_node_model,
    patch_declared_size,
    write_model,
)
from tests.workers.test_formats import DIGITS_SIGNATURE, MB, refusal
from workers import formats
from workers.samples import SampleModel

SECRET = b"TOP-SECRET-TARGET-BYTES-4242"


class _Canary:
    """A pickle payload: unpickling it writes the canary file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.path)!r}, 'w').write('pwned')",))


def _refused_everywhere(path: Path, *, name: str) -> list[str]:
    """Run sniff, inspect_model and the sandboxed child on a file; all three must refuse it."""
    messages = [refusal(formats.sniff, path, name), refusal(formats.inspect_model, path, max_bytes=MB)]
    messages.append(refusal(formats.inspect_in_subprocess, path, max_bytes=MB))
    return messages


# --- A1 / A12: pickles never run -----------------------------------------------------------------


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
@pytest.mark.parametrize("name", ["model.pt", "model.onnx"])
def test_a_raw_pickle_is_refused_and_its_payload_never_runs(tmp_path: Path, protocol: int, name: str) -> None:
    canary = tmp_path / "canary"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_Canary(canary), protocol=protocol))
    for message in _refused_everywhere(path, name=name):
        assert "pickle" in message and "torch.onnx.export" in message
    assert not canary.exists()


def test_a_torch_save_state_dict_is_refused_as_a_checkpoint(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    for message in _refused_everywhere(path, name="model.pth"):
        assert message == formats.CHECKPOINT_MESSAGE


def test_a_legacy_torch_save_checkpoint_is_refused(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "model.bin"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    assert "pickle" in refusal(formats.sniff, path, "model.bin")


def test_a_checkpoint_zip_whose_pickle_writes_a_canary_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    path = make_zip(tmp_path / "model.pt", {"archive/data.pkl": pickle.dumps(_Canary(canary)), "archive/version": b"3\n"})
    for message in _refused_everywhere(path, name="model.pt"):
        assert "torch.save" in message
    assert not canary.exists()


@pytest.mark.slow
def test_a_fake_torchscript_archive_with_a_hostile_pickle_fails_in_the_child_only(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    path = make_zip(tmp_path / "model.pt", {
        "archive/data.pkl": pickle.dumps(_Canary(canary), protocol=2),
        "archive/constants.pkl": pickle.dumps((), protocol=2),
        "archive/code/__torch__.py": b"",
        "archive/version": b"3\n",
    })
    assert formats.sniff(path, "model.pt") == "torchscript"  # it looks like one; only the sandbox loads it
    assert "torch.jit.load cannot load" in refusal(formats.inspect_in_subprocess, path, max_bytes=MB)
    assert not canary.exists()


def test_a_dataset_whose_object_array_writes_a_canary_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    path = tmp_path / "d.npz"
    np.savez(path, image=np.array([_Canary(canary)], dtype=object))
    assert "pickle" in refusal(formats.check_dataset, path, DIGITS_SIGNATURE, max_bytes=MB)
    assert not canary.exists()


# --- A14 and friends: what is not a model --------------------------------------------------------


@pytest.mark.parametrize(("content", "name", "says"), [
    (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "x.onnx", "HTML"),
    (b"\x89PNG\r\n\x1a\n<html>", "x.onnx.html", "not a format modelhub knows"),
    (b"just some notes\n", "model.onnx", "text"),
    (struct.pack("<Q", 20) + b'{"w":{"dtype":"F32"}}', "model.safetensors", "safetensors"),
    (b"", "model.onnx", "empty"),
])
def test_files_that_are_not_models_are_refused_naming_what_is_accepted(tmp_path: Path, content: bytes, name: str, says: str) -> None:
    path = tmp_path / "upload"
    path.write_bytes(content)
    message = refusal(formats.sniff, path, name)
    assert says in message
    if content:
        assert "TorchScript" in message and "ONNX" in message


def test_a_truncated_onnx_file_is_refused(digits_cnn: SampleModel, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(digits_cnn.onnx.read_bytes()[:50_000])
    assert "truncated" in refusal(formats.sniff, path, "model.onnx")
    assert "truncated" in refusal(formats.inspect_model, path, max_bytes=MB)


def test_a_truncated_zip_is_refused(digits_cnn: SampleModel, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(digits_cnn.torchscript.read_bytes()[:60_000])
    assert "truncated" in refusal(formats.sniff, path, "model.pt")


def test_a_file_over_the_cap_is_refused(digits_cnn: SampleModel) -> None:
    message = refusal(formats.inspect_model, digits_cnn.onnx, max_bytes=100_000)
    assert "over the upload limit of 100,000 bytes" in message


def test_a_single_protobuf_over_2_gb_is_refused_before_parsing(tmp_path: Path) -> None:
    size = 2**31 + 16
    path = tmp_path / "huge.onnx"
    graph_length = size - 8  # 3 bytes of tags and ir_version, 5 of varint length
    varint = bytes([0x80 | (graph_length >> shift) & 0x7F for shift in (0, 7, 14, 21)]) + bytes([graph_length >> 28])
    with open(path, "wb") as handle:  # sparse: ir_version, then one graph field running to the end
        handle.write(b"\x08\x08\x3a" + varint)
        handle.truncate(size)
    assert formats.sniff(path, "huge.onnx") == "onnx"
    assert "external data" in refusal(formats.inspect_model, path, max_bytes=2**32)


# --- ONNX content --------------------------------------------------------------------------------


def test_a_model_failing_the_checker_is_refused(tmp_path: Path) -> None:
    model = add_model()
    model.graph.node[0].input[1] = "not_defined_anywhere"
    path = write_model(model, tmp_path / "m.onnx")
    assert "ONNX checker refused" in refusal(formats.inspect_model, path, max_bytes=MB)


def test_an_ir_version_newer_than_onnxruntime_loads_is_refused(tmp_path: Path) -> None:
    path = write_model(add_model(ir_version=14), tmp_path / "m.onnx")
    message = refusal(formats.inspect_model, path, max_bytes=MB)
    assert "IR version 14" in message and "13 or older" in message


def test_an_opset_newer_than_onnxruntime_supports_is_refused(tmp_path: Path) -> None:
    path = write_model(add_model(opset=27, ir_version=10), tmp_path / "m.onnx")
    message = refusal(formats.inspect_model, path, max_bytes=MB)
    assert "opset 27" in message and "up to opset 26" in message


@pytest.mark.parametrize(("op_type", "domain"), [("Evil", "evil.domain"), ("PyOp", "com.microsoft"), ("EPContext", "com.microsoft")])
def test_custom_domains_and_code_running_ops_are_refused(tmp_path: Path, op_type: str, domain: str) -> None:
    path = write_model(one_node_model(op_type, domain), tmp_path / "m.onnx")
    assert op_type in refusal(formats.inspect_model, path, max_bytes=MB)


# --- A4 / A10: external data ---------------------------------------------------------------------


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    """A file outside the model's directory that no refusal may leak."""
    path = tmp_path / "outside.bin"
    path.write_bytes(SECRET * 4)
    return path


@pytest.mark.parametrize(("location", "says"), [
    ("../outside.bin", "not a plain relative path"),
    ("/etc/passwd", "absolute path"),
    ("sub/../../outside.bin", "not a plain relative path"),
    ("./weights.bin", "not a plain relative path"),
    ("..\\outside.bin", "backslash"),
    ("C:/outside.bin", "absolute path"),
    ("*/_ORT_MEM_ADDR_/*", "in-memory marker"),
])
def test_external_data_outside_the_model_directory_is_refused(tmp_path: Path, secret_file: Path, location: str, says: str) -> None:
    path = write_model(externalize(add_model(), location.replace("/etc/passwd", str(secret_file))), tmp_path / "m" / "m.onnx")
    message = refusal(formats.inspect_model, path, max_bytes=MB)
    assert says in message
    assert SECRET.decode() not in message


@pytest.mark.parametrize("link", ["symlink", "hardlink", "symlinked_dir"])
def test_external_data_reached_through_a_link_is_refused(tmp_path: Path, secret_file: Path, link: str) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    location = "sub/weights.bin" if link == "symlinked_dir" else "weights.bin"
    if link == "symlink":
        os.symlink(secret_file, model_dir / "weights.bin")
    elif link == "hardlink":
        os.link(secret_file, model_dir / "weights.bin")
    else:
        os.symlink(tmp_path, model_dir / "sub")
        os.link(secret_file, tmp_path / "weights.bin")
    path = write_model(externalize(add_model(), location), model_dir / "m.onnx")
    message = refusal(formats.inspect_model, path, max_bytes=MB)
    assert ("symbolic link" if link != "hardlink" else "hard-linked") in message
    assert SECRET.decode() not in message


def test_a_missing_external_data_file_is_refused(tmp_path: Path) -> None:
    path = write_model(externalize(add_model(), "weights.bin"), tmp_path / "m.onnx")
    message = refusal(formats.inspect_model, path, max_bytes=MB)
    assert "'weights.bin'" in message and "missing" in message


def test_external_data_reading_past_the_end_of_its_file_is_refused(tmp_path: Path) -> None:
    path = write_model(externalize(add_model(), "weights.bin", offset=8), tmp_path / "m.onnx")
    (tmp_path / "weights.bin").write_bytes(WEIGHTS.tobytes())
    assert "truncated" in refusal(formats.inspect_model, path, max_bytes=MB)


def test_a_tensor_declaring_a_trillion_elements_is_refused_from_its_header(tmp_path: Path) -> None:
    model = externalize(add_model(), "weights.bin", length=None)
    model.graph.initializer[0].dims[:] = [10**12]
    path = write_model(model, tmp_path / "m.onnx")
    (tmp_path / "weights.bin").write_bytes(WEIGHTS.tobytes())
    assert "1,000,000,000,000 elements" in refusal(formats.inspect_model, path, max_bytes=MB)


def test_an_archive_missing_the_external_data_file_is_refused(tmp_path: Path) -> None:
    root = external_model_dir(tmp_path / "src")
    archive = make_zip(tmp_path / "upload.zip", {"model.onnx": (root / "model.onnx").read_bytes()})
    assert "missing" in refusal(formats.inspect_model, archive, max_bytes=MB)


def test_an_archive_with_files_the_model_does_not_use_is_refused(tmp_path: Path) -> None:
    root = external_model_dir(tmp_path / "src")
    archive = make_zip(tmp_path / "upload.zip", {
        "model.onnx": (root / "model.onnx").read_bytes(), "weights.bin": WEIGHTS.tobytes(), "notes.txt": b"hi",
    })
    assert "'notes.txt'" in refusal(formats.inspect_model, archive, max_bytes=MB)


# --- A7 / A8: archives ---------------------------------------------------------------------------


def _zip_with(tmp_path: Path, info: zipfile.ZipInfo, data: bytes) -> Path:
    path = tmp_path / "upload.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.onnx", add_model().SerializeToString())
        archive.writestr(info, data)
    return path


@pytest.mark.parametrize(("name", "says"), [
    ("../evil.bin", "climbs out"),
    ("sub/../../evil.bin", "climbs out"),
    ("/tmp/evil.bin", "absolute path"),
    ("C:\\evil.bin", "absolute path"),
])
def test_archive_members_escaping_the_destination_are_refused(tmp_path: Path, name: str, says: str) -> None:
    archive = _zip_with(tmp_path, zipfile.ZipInfo(name), b"x")
    assert says in refusal(formats.extract_archive, archive, tmp_path / "out", max_bytes=MB)
    assert not (tmp_path / "evil.bin").exists() and not (tmp_path / "out").exists()


def test_a_symlink_member_is_refused(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("weights.bin")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip_with(tmp_path, info, b"/etc/passwd")
    assert "symbolic link" in refusal(formats.extract_archive, archive, tmp_path / "out", max_bytes=MB)


def test_a_zip_bomb_is_refused_from_its_metadata(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bomb.zip", {"model.onnx": add_model().SerializeToString(), "w.bin": bytes(30 * MB)}, deflate=True)
    assert archive.stat().st_size < MB
    assert "zip bomb" in refusal(formats.extract_archive, archive, tmp_path / "out", max_bytes=100 * MB)
    assert not (tmp_path / "out").exists()


def test_a_member_declaring_a_huge_size_is_refused_before_unpacking(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"model.onnx": add_model().SerializeToString(), "w.bin": b"x" * 100})
    patch_declared_size(archive, "w.bin", 0xF0000000)
    assert "refused before unpacking" in refusal(formats.extract_archive, archive, tmp_path / "out", max_bytes=MB)


def test_a_member_larger_than_it_declares_is_stopped_while_streaming(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"model.onnx": add_model().SerializeToString(), "w.bin": b"x" * 5000})
    patch_declared_size(archive, "w.bin", 10)
    refusal(formats.extract_archive, archive, tmp_path / "out", max_bytes=MB)
    assert not (tmp_path / "out").exists()


def test_archives_need_exactly_one_model_and_few_members(tmp_path: Path) -> None:
    blob = add_model().SerializeToString()
    two = make_zip(tmp_path / "two.zip", {"a.onnx": blob, "b.onnx": blob})
    assert "2 .onnx" in refusal(formats.sniff, two, "two.zip")
    many = make_zip(tmp_path / "many.zip", {"model.onnx": blob, **{f"w{i}.bin": b"" for i in range(70)}})
    assert "at most 64" in refusal(formats.extract_archive, many, tmp_path / "out", max_bytes=MB)


# --- A9: the child process -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_loader_crash_is_reported_with_its_signal_and_the_caller_lives_on(digits_cnn: SampleModel) -> None:
    message = refusal(formats.inspect_in_subprocess, digits_cnn.onnx, max_bytes=MB, _test_hook="segfault")
    assert f"signal {int(signal.SIGSEGV)}: SIGSEGV" in message
    assert formats.inspect_in_subprocess(digits_cnn.onnx, max_bytes=MB).format == "onnx"


@pytest.mark.slow
def test_a_loader_that_hangs_is_stopped_by_the_wall_clock(digits_cnn: SampleModel) -> None:
    assert "took longer than 3 s" in refusal(
        formats.inspect_in_subprocess, digits_cnn.onnx, max_bytes=MB, wall_seconds=3, _test_hook="sleep")


@pytest.mark.slow
def test_a_loader_that_spins_is_stopped_by_the_cpu_limit(digits_cnn: SampleModel) -> None:
    message = refusal(formats.inspect_in_subprocess, digits_cnn.onnx, max_bytes=MB, cpu_seconds=2, _test_hook="spin")
    assert "more than 2 s of CPU time" in message and "SIGXCPU" in message


@pytest.mark.slow
def test_a_loader_that_runs_out_of_memory_says_so(digits_cnn: SampleModel) -> None:
    message = refusal(formats.inspect_in_subprocess, digits_cnn.onnx, max_bytes=MB, memory_mb=768, _test_hook="memory")
    assert "more memory than the intake limit of 768 MB" in message


def test_a_model_printing_a_fake_result_cannot_forge_the_verdict(tmp_path: Path) -> None:
    path = tmp_path / "x.onnx"
    path.write_bytes(b"<html>not a model</html>")
    assert "HTML" in refusal(formats.inspect_in_subprocess, path, max_bytes=MB, _test_hook="forge")


def test_the_child_gets_no_secrets_from_the_environment(digits_cnn: SampleModel, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "postgres://user:hunter2@db/modelhub")
    message = refusal(formats.inspect_in_subprocess, digits_cnn.onnx, max_bytes=MB, _test_hook="env")
    names = set(message.removeprefix("env: ").split(","))
    assert names <= {"PATH", "HOME", "LANG", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "OMP_NUM_THREADS", "LC_CTYPE"}
    assert "OMP_NUM_THREADS" in names


def test_test_hooks_are_only_the_known_ones(digits_cnn: SampleModel) -> None:
    with pytest.raises(ValueError, match="unknown test hook"):
        formats.inspect_in_subprocess(digits_cnn.onnx, max_bytes=MB, _test_hook="rm -rf /")


def test_an_npz_declaring_a_huge_array_is_refused_from_its_header(tmp_path: Path) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    path = make_zip(tmp_path / "d.npz", {"image.npy": header.getvalue() + bytes(64)})
    assert "declares shape" in refusal(formats.check_dataset, path, DIGITS_SIGNATURE, max_bytes=MB)


def test_a_compressed_npz_unpacking_past_the_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez_compressed(path, image=np.zeros((400_000, 1, 8, 8), np.float32))
    assert path.stat().st_size < MB
    assert "unpacks to more than" in refusal(formats.check_dataset, path, DIGITS_SIGNATURE, max_bytes=MB)


def test_inspecting_writes_nothing_beside_the_model(tmp_path: Path) -> None:
    root = external_model_dir(tmp_path / "m")
    before = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    formats.inspect_model(root / "model.onnx", max_bytes=MB)
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == before
