"""Hostile model uploads end to end (RELIABILITY.md A1, A3, A4, A6, A7, A8, A10, A11, A12, A14).

Each file goes through the REST upload and the intake task as a client would send it. The format
checks themselves are tested file by file in tests/workers/test_formats_hostile.py; here the
question is what the whole path leaves behind: the HTTP answer, the version row, the storage, the
work dir, the logs, and any file a payload tries to write.
"""

from __future__ import annotations

import io
import logging
import operator
import os
import pickle
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rest_framework.test import APIClient

from modelhub import jobs
from modelhub.models import ModelVersion, OptimizationJob, Variant
from tests import factories
from tests.onnx_graphs import (
    WEIGHTS,
    add_model,
    externalize,
    make_zip,
    one_node_model,
    patch_declared_size,
    tiny_onnx_bytes,
)
from workers import isolation
from workers.passes import PASS_NAMES, get_pass, make_config
from workers.passes.base import PassError
from workers.samples import SampleModel

pytestmark = pytest.mark.django_db(transaction=True)  # an upload's answer reports its intake, run at commit
SECRET = b"RELIABILITY-SECRET-TARGET-7731"
MODEL = "m"


# --- helpers --------------------------------------------------------------------------------------


def _client(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _post(client: APIClient, blob: bytes, filename: str) -> Any:
    """Upload ``blob`` as ``filename`` to model m (registered on first use) through the REST API."""
    if client.get(f"/api/v1/models/{MODEL}").status_code == 404:
        assert client.post("/api/v1/models", {"name": MODEL}, format="json").status_code == 201
    upload = io.BytesIO(blob)
    upload.name = filename
    return client.post(f"/api/v1/models/{MODEL}/versions", {"file": upload}, format="multipart")


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def _nothing_kept(media_root: Path) -> None:
    """No stored file, no scratch directory and no half-received upload survive a refusal."""
    assert _files_under(media_root) == []
    work = media_root.parent / "work"
    assert not work.exists() or list(work.iterdir()) == [], _files_under(work)


def _refused(response: Any) -> str:
    """The upload was answered 400 and no READY version exists; returns the reason."""
    assert response.status_code == 400, (response.status_code, response.content[:500])
    assert not ModelVersion.objects.exclude(status=ModelVersion.Status.FAILED).exists()
    return response.json()["error"]


# --- A1 / A12: pickles never run, whatever a scanner would say -----------------------------------


class _ExecCanary:
    """The classic payload: unpickling calls exec."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.canary)!r}, 'w').write('pwned')",))


class _MethodCallerCanary:
    """No import of os/builtins.exec at all: operator.methodcaller('touch')(Path(canary))."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[Any, ...]:
        return (operator.methodcaller("touch"), (Path(self.canary),))


def _importlib_chain(canary: Path) -> bytes:
    """Protocol 0: getattr(getattr(importlib.import_module('pathlib'), 'Path')(canary), 'touch')()."""
    return (b"cbuiltins\ngetattr\n(cbuiltins\ngetattr\n(cimportlib\nimport_module\n(Vpathlib\ntRVPath\ntR(V"
            + str(canary).encode() + b"\ntRVtouch\ntR)R.")


def _memo_stack_global(canary: Path) -> bytes:
    """Protocol 4 whose STACK_GLOBAL takes module and name from the memo (BINGET), not from the
    string opcodes right before it: the shape that lets scanners miss the global."""
    def text(value: str) -> bytes:
        raw = value.encode()
        return b"\x8c" + bytes([len(raw)]) + raw if len(raw) < 256 else b"X" + len(raw).to_bytes(4, "little") + raw

    code = f"open({str(canary)!r}, 'w').write('pwned')"
    return (b"\x80\x04" + text("builtins") + b"\x94" + text("exec") + b"\x94" + b"00"  # memo 0, 1; pop both
            + b"h\x00h\x01\x93" + text(code) + b"\x85R.")


PAYLOADS: dict[str, Callable[[Path], bytes]] = {
    "reduce-exec": lambda c: pickle.dumps(_ExecCanary(c), protocol=2),
    "methodcaller": lambda c: pickle.dumps(_MethodCallerCanary(c), protocol=4),
    "importlib-getattr-chain": _importlib_chain,
    "memo-stack-global": _memo_stack_global,
}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_every_pickle_payload_used_here_really_writes_its_canary_when_unpickled(payload: str, tmp_path: Path) -> None:
    """A1/A12 control: the payloads are live, so their canary staying absent below means something."""
    canary = tmp_path / "canary"
    blob = tmp_path / "payload.pkl"
    blob.write_bytes(PAYLOADS[payload](canary))
    subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.loads(open(sys.argv[1], 'rb').read())",
                    str(blob)], cwd=tmp_path, timeout=60, check=True, capture_output=True)
    assert canary.exists()


@pytest.mark.parametrize("filename", ["model.pt", "model.pth", "model.onnx", "weights.bin"])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_a_pickle_upload_is_refused_and_its_payload_never_runs(
        api: APIClient, media_root: Path, tmp_path: Path, payload: str, filename: str) -> None:
    """A1/A12: a raw pickle, including scanner-evading ones, is refused by format; the canary stays absent."""
    canary = tmp_path / "canary"
    error = _refused(_post(api, PAYLOADS[payload](canary), filename))
    assert "pickle" in error.lower()
    assert not canary.exists()
    assert ModelVersion.objects.count() == 0
    _nothing_kept(media_root)


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_a_torch_save_checkpoint_carrying_a_payload_is_refused_unopened(
        api: APIClient, media_root: Path, tmp_path: Path, payload: str) -> None:
    """A1/A12: the zip layout of torch.save is refused from its member names; data.pkl is never read."""
    canary = tmp_path / "canary"
    blob = make_zip(tmp_path / "ckpt.pt", {"archive/data.pkl": PAYLOADS[payload](canary), "archive/version": b"3\n",
                                           "archive/data/0": WEIGHTS.tobytes()}).read_bytes()
    assert "torch.save" in _refused(_post(api, blob, "model.pt"))
    assert not canary.exists()
    _nothing_kept(media_root)


def _fake_torchscript(tmp_path: Path, data_pkl: bytes) -> bytes:
    return make_zip(tmp_path / "fake.pt", {
        "archive/data.pkl": data_pkl, "archive/constants.pkl": pickle.dumps((), protocol=2),
        "archive/code/__torch__.py": b"", "archive/version": b"3\n",
    }).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_a_torchscript_lookalike_with_a_payload_fails_in_the_intake_child_for_a_trusted_user(
        make_user: Any, media_root: Path, tmp_path: Path, payload: str) -> None:
    """A1/A3/A12: even a user allowed TorchScript gets FAILED; torch's own unpickler runs no payload."""
    canary = tmp_path / "canary"
    client = _client(make_user("tina", "maintainer", torchscript=True))
    error = _refused(_post(client, _fake_torchscript(tmp_path, PAYLOADS[payload](canary)), "model.pt"))
    assert "torch.jit.load cannot load" in error
    assert ModelVersion.objects.get().status == ModelVersion.Status.FAILED
    assert not canary.exists()
    _nothing_kept(media_root)


# --- A3: TorchScript is code ----------------------------------------------------------------------

HOSTILE_TORCHSCRIPT = '''
import torch
from typing import Tuple


class Writer(torch.nn.Module):
    """A valid model whose __setstate__ (run by torch.jit.load) creates a file: torch.from_file(shared=True)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.ones(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, bool]:
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, bool]) -> None:
        self.w = state[0] + torch.from_file(CANARY, True, 4).sum() * 0.0
        self.training = state[1]
'''


FORWARD_WRITER = '''
import torch


class Writer(torch.nn.Module):
    """Loads without side effect (the intake passes it); creates a file each time forward runs."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.ones(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w + torch.from_file(CANARY, True, 4).sum() * 0.0
'''


def _hostile_torchscript(tmp_path: Path, canary: str, template: str = HOSTILE_TORCHSCRIPT) -> Path:
    """Script the Writer module (its source must be a real file for torch.jit.script) and save it."""
    source = tmp_path / "hostile_writer.py"
    source.write_text(textwrap.dedent(template).replace("CANARY", repr(canary)))
    out = tmp_path / "writer.pt"
    script = ("import importlib.util, sys, torch\n"
              "spec = importlib.util.spec_from_file_location('hostile_writer', sys.argv[1])\n"
              "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
              "torch.jit.script(module.Writer()).save(sys.argv[2])\n")
    subprocess.run([sys.executable, "-c", script, str(source), str(out)], cwd=tmp_path, timeout=120, check=True,
                   capture_output=True)
    return out


@pytest.mark.slow
def test_the_hostile_torchscript_really_writes_its_file_when_loaded(tmp_path: Path) -> None:
    """A3 control: torch.jit.load of this archive creates the canary, relative to the loader's cwd."""
    archive = _hostile_torchscript(tmp_path, "canary.bin")
    elsewhere = tmp_path / "loader-cwd"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-c", "import sys, torch; torch.jit.load(sys.argv[1])", str(archive)],
                   cwd=elsewhere, timeout=120, check=True, capture_output=True)
    assert (elsewhere / "canary.bin").exists()


@pytest.mark.slow
def test_a_torchscript_upload_without_the_permission_is_403_and_nothing_is_loaded_or_kept(
        api: APIClient, media_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A3: a non-trusted maintainer gets 403 before anything is stored or loaded."""
    archive = _hostile_torchscript(tmp_path, str(tmp_path / "canary-abs.bin"))
    cwd = tmp_path / "api-cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    response = _post(api, archive.read_bytes(), "model.pt")
    assert response.status_code == 403 and "upload TorchScript" in response.json()["error"]
    assert ModelVersion.objects.count() == 0
    assert not (tmp_path / "canary-abs.bin").exists() and list(cwd.iterdir()) == []
    _nothing_kept(media_root)


@pytest.fixture
def torch_load_tripwire(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record any torch.jit.load / torch.export.load / torch.load call made in this (the API) process."""
    import torch
    import torch.export

    calls: list[str] = []

    def trip(name: str) -> Callable[..., Any]:
        def called(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} called in the API process")
        return called

    monkeypatch.setattr(torch.jit, "load", trip("torch.jit.load"))
    monkeypatch.setattr(torch.export, "load", trip("torch.export.load"))
    monkeypatch.setattr(torch, "load", trip("torch.load"))
    return calls


@pytest.mark.slow
def test_a_trusted_torchscript_upload_is_loaded_only_in_the_intake_child_and_its_side_effect_stays_there(
        make_user: Any, media_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        torch_load_tripwire: list[str]) -> None:
    """A3: the API process never calls torch.jit.load; the archive's load-time file write happens in the
    child's private scratch directory (its cwd), which is removed, so it lands nowhere the hub keeps."""
    archive = _hostile_torchscript(tmp_path, "canary.bin")
    cwd = tmp_path / "api-cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    client = _client(make_user("tom", "maintainer", torchscript=True))
    response = _post(client, archive.read_bytes(), "model.pt")
    assert response.status_code == 201, response.json()
    assert response.json()["format"] == "torchscript"
    assert torch_load_tripwire == []
    assert list(cwd.iterdir()) == []
    version = ModelVersion.objects.get()
    assert _files_under(media_root) == [f"models/{version.sha256}/upload.pt"]
    work = media_root.parent / "work"
    assert not work.exists() or _files_under(work) == []
    assert not list(tmp_path.rglob("canary.bin"))


@pytest.mark.slow
def test_a_trusted_torchscript_writing_by_absolute_path_when_loaded_is_refused_and_writes_nothing(
        make_user: Any, media_root: Path, tmp_path: Path, torch_load_tripwire: list[str]) -> None:
    """A3: the intake child's file system is read-only outside its scratch directory, so the load-time
    write fails inside torch.jit.load; a model that cannot be loaded is refused (400, version FAILED)
    with torch's reason, and nothing is written."""
    canary = tmp_path / "canary-abs.bin"
    archive = _hostile_torchscript(tmp_path, str(canary))
    error = _refused(_post(_client(make_user("tom", "maintainer", torchscript=True)), archive.read_bytes(), "model.pt"))
    assert "torch.jit.load cannot load" in error and "Read-only file system" in error
    assert not canary.exists()
    assert torch_load_tripwire == []
    _nothing_kept(media_root)


@pytest.mark.slow
def test_with_the_sandbox_off_the_same_upload_does_write_outside(
        make_user: Any, media_root: Path, tmp_path: Path, settings: Any) -> None:
    """A3 control: MODELHUB_SANDBOX=off keeps only the resource limits, and the write lands."""
    settings.MODELHUB_SANDBOX = "off"
    canary = tmp_path / "canary-abs.bin"
    archive = _hostile_torchscript(tmp_path, str(canary))
    response = _post(_client(make_user("tom", "maintainer", torchscript=True)), archive.read_bytes(), "model.pt")
    assert response.status_code == 201, response.json()
    assert canary.exists()


@pytest.mark.slow
def test_the_export_pass_loads_a_hostile_torchscript_only_in_its_sandbox(tmp_path: Path,
                                                                        torch_load_tripwire: list[str]) -> None:
    """A3: run for a job, the export pass loads the archive in the sandboxed child, where the load-time
    write by absolute path fails: the pass refuses the model, and only its own output directory could
    have been written."""
    canary = tmp_path / "canary-abs.bin"
    archive = _hostile_torchscript(tmp_path, str(canary))
    data = tmp_path / "validation.npz"
    np.savez(data, x=np.ones((8, 4), np.float32))
    config = make_config("export", {}, validation_data=data)
    with pytest.raises(PassError, match="could not be loaded as TorchScript.*Read-only file system"):
        isolation.run_isolated("export", archive, tmp_path / "out", config, wall_seconds=120)
    assert not canary.exists()
    assert list((tmp_path / "out").iterdir()) == []
    assert torch_load_tripwire == []


@pytest.mark.slow
def test_a_job_exporting_a_torchscript_whose_forward_writes_by_absolute_path_writes_nothing(
        make_user: Any, media_root: Path, tmp_path: Path, settings: Any, torch_load_tripwire: list[str]) -> None:
    """A3: the model loads cleanly (so the intake accepts it) but writes a file whenever forward runs; the
    job's export pass runs it only in the sandboxed child: the write fails, the export variant is FAILED
    with that reason, nothing is written, and the worker process never calls torch.jit.load."""
    settings.MODELHUB_BENCH_BUDGET_S = 0.1
    canary = tmp_path / "canary-forward.bin"
    archive = _hostile_torchscript(tmp_path, str(canary), FORWARD_WRITER)
    client = _client(make_user("tom", "maintainer", torchscript=True))
    assert _post(client, archive.read_bytes(), "model.pt").status_code == 201
    dataset = io.BytesIO()
    np.savez(dataset, x=np.ones((8, 4), np.float32))
    dataset.seek(0)
    dataset.name = "validation.npz"
    response = client.post(f"/api/v1/models/{MODEL}/versions/1/datasets", {"file": dataset, "purpose": "validation"},
                           format="multipart")
    assert response.status_code == 201, response.json()
    plan = [{"name": "export", "pass_name": "export", "options": {}}]
    response = client.post(f"/api/v1/models/{MODEL}/versions/1/optimize", {"plan": plan}, format="json")
    assert response.status_code == 202, response.json()
    job = OptimizationJob.objects.get()
    variant = Variant.objects.get(pass_name="export")
    assert variant.status == Variant.Status.FAILED
    assert "failed on the validation data" in variant.status_reason and "Read-only file system" in variant.status_reason
    # A failed step does not fail the job (other steps may have succeeded); here no variant passed.
    assert job.status == OptimizationJob.Status.SUCCEEDED and job.result["best"] is None
    assert not canary.exists()
    assert torch_load_tripwire == []
    work = media_root.parent / "work"
    assert not work.exists() or _files_under(work) == []


# --- A4 / A7 / A8 / A10 / A11: archives and ONNX files that must not get in ----------------------


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret" / "outside.bin"
    path.parent.mkdir()
    path.write_bytes(SECRET * 8)
    return path


def _external(location: str) -> bytes:
    return externalize(add_model(), location).SerializeToString()


def _symlink_member(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def _zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]], *, deflate: bool = False) -> bytes:
    return make_zip(path, members, deflate=deflate).read_bytes()


def _trillion_elements() -> bytes:
    model = externalize(add_model(), "weights.bin", length=None)
    model.graph.initializer[0].dims[:] = [10**12]
    return model.SerializeToString()


def _declared_huge(path: Path) -> bytes:
    _zip(path, [("model.onnx", add_model().SerializeToString()), ("weights.bin", b"x" * 100)])
    patch_declared_size(path, "weights.bin", 0xF0000000)
    return path.read_bytes()


# (row, case) -> builder(tmp_path, secret) returning the .zip bytes, and words the reason holds.
ARCHIVES: dict[str, tuple[Callable[[Path, Path], bytes], str]] = {
    "A4-absolute-location": (lambda t, s: _zip(t / "u.zip", [("model.onnx", _external(str(s)))]), "absolute path"),
    "A4-etc-passwd": (lambda t, s: _zip(t / "u.zip", [("model.onnx", _external("/etc/passwd"))]), "absolute path"),
    "A4-dotdot-location": (lambda t, s: _zip(t / "u.zip", [("model.onnx", _external("../outside.bin"))]),
                           "not a plain relative path"),
    "A4-sub-dotdot-location": (lambda t, s: _zip(t / "u.zip", [("model.onnx", _external("sub/../../outside.bin"))]),
                               "not a plain relative path"),
    "A4-symlinked-data": (lambda t, s: _zip(t / "u.zip", [("model.onnx", _external("weights.bin")),
                                                          _symlink_member("weights.bin", str(s))]), "symbolic link"),
    "A7-dotdot-member": (lambda t, s: _zip(t / "u.zip", [("model.onnx", add_model().SerializeToString()),
                                                         ("../evil.bin", b"x")]), "climbs out"),
    "A7-absolute-member": (lambda t, s: _zip(t / "u.zip", [("model.onnx", add_model().SerializeToString()),
                                                           (str(t / "evil.bin"), b"x")]), "absolute path"),
    "A7-nested-dotdot-member": (lambda t, s: _zip(t / "u.zip", [("model.onnx", add_model().SerializeToString()),
                                                                ("sub/../../evil.bin", b"x")]), "climbs out"),
    "A7-symlink-member": (lambda t, s: _zip(t / "u.zip", [("model.onnx", add_model().SerializeToString()),
                                                          _symlink_member("evil.bin", "/etc/passwd")]),
                          "symbolic link"),
    "A8-ratio-bomb": (lambda t, s: _zip(t / "u.zip", [("model.onnx", add_model().SerializeToString()),
                                                      ("w.bin", bytes(30 << 20))], deflate=True), "zip bomb"),
    "A8-declared-size": (lambda t, s: _declared_huge(t / "u.zip"), "refused before unpacking"),
    "A8-trillion-element-tensor": (lambda t, s: _zip(t / "u.zip", [("model.onnx", _trillion_elements()),
                                                                   ("weights.bin", WEIGHTS.tobytes())]),
                                   "1,000,000,000,000 elements"),
    "A10-missing-external-data": (lambda t, s: _zip(t / "u.zip", [("model.onnx", _external("weights.bin"))]),
                                  "missing"),
    "A10-extra-file": (lambda t, s: _zip(t / "u.zip", [("model.onnx", _external("weights.bin")),
                                                       ("weights.bin", WEIGHTS.tobytes()), ("notes.txt", SECRET)]),
                       "does not use"),
    "A11-pyop": (lambda t, s: _zip(t / "u.zip", [("model.onnx", one_node_model("PyOp", "com.microsoft")
                                                  .SerializeToString())]), "PyOp"),
    "A11-custom-domain": (lambda t, s: _zip(t / "u.zip", [("model.onnx", one_node_model("Evil", "evil.domain")
                                                           .SerializeToString())]), "evil.domain"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(ARCHIVES))
def test_a_hostile_zip_upload_is_refused_leaving_no_file_and_leaking_no_target_bytes(
        api: APIClient, media_root: Path, tmp_path: Path, secret_file: Path, case: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """A4/A7/A8/A10/A11 through REST: 400 (FAILED version or refused at once), nothing stored, nothing
    extracted outside the scratch dir, and no byte of the file it points at in the answer or the logs."""
    build, says = ARCHIVES[case]
    blob = build(tmp_path, secret_file)
    caplog.set_level(logging.DEBUG)
    response = _post(api, blob, "model.zip")
    error = _refused(response)
    assert says in error, error
    assert SECRET not in response.content and SECRET.decode() not in caplog.text
    assert not list(tmp_path.rglob("evil.bin"))
    _nothing_kept(media_root)
    assert secret_file.read_bytes() == SECRET * 8


@pytest.mark.slow
@pytest.mark.parametrize(("op_type", "domain"), [("PyOp", "com.microsoft"), ("Evil", "evil.domain")])
def test_a_plain_onnx_with_a_code_running_or_unknown_custom_op_fails_its_version(
        api: APIClient, media_root: Path, op_type: str, domain: str) -> None:
    """A11: the op-domain allow-list refuses it; no custom-op library is ever registered from an upload."""
    error = _refused(_post(api, one_node_model(op_type, domain).SerializeToString(), "model.onnx"))
    assert op_type in error or domain in error, error
    assert ModelVersion.objects.get().status == ModelVersion.Status.FAILED
    _nothing_kept(media_root)


# --- A6: passes write only under their output directory -------------------------------------------


def _cases() -> list[tuple[str, str]]:
    """(pass, sample) pairs a pass applies to; "graph-fused:" samples are the output of the extended
    graph pass, on which ORT's symbolic shape inference gives up and saves files to the cwd."""
    cases = [("export", "digits_cnn"), ("export", "tiny_transformer")]
    for name in PASS_NAMES:
        if name == "export":
            continue
        samples = ["quality_mlp", "digits_cnn"] if name in ("distill", "prune_structured") else \
            ["quality_mlp", "digits_cnn", "tiny_transformer"]
        cases += [(name, sample) for sample in samples]
        if name.startswith("quantize"):
            cases.append((name, "graph-fused:quality_mlp"))
    return cases


OPTIONS = {"distill": {"epochs": 2, "max_time_s": 30.0}, "quantize_search": {"time_budget_s": 20.0}}


@pytest.mark.django_db(transaction=False)
@pytest.mark.parametrize(("pass_name", "sample_name"), _cases(), ids=lambda v: v)
def test_a_pass_writes_only_under_its_output_directory(
        request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pass_name: str,
        sample_name: str) -> None:
    """A6: with an empty cwd and a private temp dir, the pass leaves the cwd empty, the temp dir empty,
    its input directory unchanged, and nothing beside ``dst`` (also when it refuses the model)."""
    fused = sample_name.startswith("graph-fused:")
    sample: SampleModel = request.getfixturevalue(sample_name.removeprefix("graph-fused:"))
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    source = sample.torchscript if pass_name == "export" else sample.onnx
    src = inputs / source.name
    if fused:
        get_pass("graph").run(source, tmp_path / "graph", make_config("graph", {"level": "extended"}))
        shutil.copy(tmp_path / "graph" / "model.onnx", src)
        shutil.rmtree(tmp_path / "graph")
    else:
        shutil.copy(source, src)
    for data in (sample.validation, sample.calibration):
        shutil.copy(data, inputs / data.name)
    before = {p.name: p.read_bytes() for p in inputs.iterdir()}
    cwd, private_tmp, out = tmp_path / "cwd", tmp_path / "tmp", tmp_path / "out"
    for directory in (cwd, private_tmp, out):
        directory.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    config = make_config(pass_name, OPTIONS.get(pass_name, {}), validation_data=inputs / "validation.npz",
                         calibration_data=inputs / "calibration.npz", train_data=inputs / "calibration.npz")
    try:
        result = get_pass(pass_name).run(src, out / "dst", config)
    except PassError:
        assert fused, "only the fused graphs are expected to be refused (the quantizers skip FusedGemm)"
    else:
        assert result.artifact.resolve().is_relative_to((out / "dst").resolve())
    assert os.listdir(cwd) == []
    assert os.listdir(private_tmp) == []
    assert os.listdir(out) == ["dst"]
    assert {p.name: p.read_bytes() for p in inputs.iterdir()} == before


@pytest.mark.slow
def test_a_plan_step_named_like_a_path_is_refused(api: APIClient, maintainer: Any, media_root: Path) -> None:
    """A6: step names become variant names and (before) the pass's output directory; one validator refuses
    anything that is not a plain name, so no plan can steer where a pass writes."""
    factories.upload(maintainer, tiny_onnx_bytes(), name=MODEL)
    for name in ("../../escape", "/tmp/escape", "a/b", "..", "x\\y"):
        plan = [{"name": name, "pass_name": "graph", "options": {}}]
        response = api.post(f"/api/v1/models/{MODEL}/versions/1/optimize", {"plan": plan}, format="json")
        assert response.status_code == 400, (name, response.json())
        assert "name" in response.json()["error"]
    assert OptimizationJob.objects.count() == 0


@pytest.mark.slow
def test_a_stored_job_whose_step_name_is_a_path_still_writes_only_in_its_scratch_dir(
        maintainer: Any, media_root: Path, tmp_path: Path) -> None:
    """A6: a job row from before the name check (or written by hand) cannot steer a pass either: each
    step's output directory is chosen by the runner, not by the step's name."""
    version = factories.upload(maintainer, tiny_onnx_bytes(), name=MODEL)
    escape = tmp_path / "escaped"  # the scratch dir is job-<id>-<random> in the work dir under tmp_path
    plan = [{"name": f"../../{escape.name}", "pass_name": "graph", "options": {}, "source": "original"},
            {"name": str(escape / "abs"), "pass_name": "fp16", "options": {}, "source": "original"}]
    job = OptimizationJob.objects.create(version=version, plan=plan, options={"bench": {"time_budget_s": 0.1,
                                                                                         "batch_sizes": [1]}},
                                         created_by=maintainer)
    jobs.job_dispatch(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == OptimizationJob.Status.SUCCEEDED, job.error
    assert not escape.exists()
    assert version.variants.exclude(name=Variant.ORIGINAL).count() == 2


# --- A14: names are the client's, keys are ours ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("filename", ["../../app/settings.py", "x.onnx.html", "..\\..\\evil.onnx", "/etc/cron.d/x"])
def test_a_model_named_like_a_path_or_a_web_page_is_stored_under_a_server_generated_key(
        api: APIClient, media_root: Path, tmp_path: Path, filename: str) -> None:
    """A14: the client's file name is kept as a label only; the file lives at models/<sha256>/upload.onnx."""
    response = _post(api, tiny_onnx_bytes(), filename)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["original_filename"] == re.split(r"[/\\]", filename)[-1]  # a label; the parser drops directories
    assert _files_under(tmp_path) == [f"media/models/{body['sha256']}/upload.onnx"]


def test_html_with_a_png_header_is_refused(api: APIClient, media_root: Path) -> None:
    """A14: content decides, not the name: an HTML page behind a PNG signature is no model."""
    response = _post(api, b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>", "model.png")
    _refused(response)
    assert ModelVersion.objects.count() == 0
    _nothing_kept(media_root)


@pytest.mark.slow
def test_a_bundle_is_downloaded_as_an_attachment_never_rendered_inline(api: APIClient, media_root: Path) -> None:
    """A14: Content-Disposition attachment with a server-made name, nosniff, and no route serves storage."""
    body = _post(api, tiny_onnx_bytes(), "x.onnx.html").json()
    response = api.get(f"/api/v1/models/{MODEL}/versions/1/variants/original/bundle")
    assert response.status_code == 200
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment;") and 'filename="m-v1-original.zip"' in disposition
    assert "html" not in disposition
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Type"] == "application/zip"
    b"".join(response.streaming_content)
    assert api.get(f"/private-not-served/models/{body['sha256']}/upload.onnx").status_code == 404
    assert api.get(f"/media/models/{body['sha256']}/upload.onnx").status_code == 404
