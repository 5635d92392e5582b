"""Uploading models and datasets: what is accepted, what is refused, and that nothing is left behind."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rest_framework.test import APIClient

from modelhub import services
from modelhub.models import ModelVersion, Variant
from tests import factories
from workers.samples import SampleModel

pytestmark = pytest.mark.django_db(transaction=True)  # an upload's answer reports its intake, run at commit
ROOT = Path(__file__).resolve().parent.parent.parent


def _stored_files(media_root: Path) -> list[str]:
    return sorted(str(p.relative_to(media_root)) for p in media_root.rglob("*") if p.is_file())


def _upload(api: APIClient, path_or_bytes: Path | bytes, name: str = "model.onnx", model: str = "mlp") -> Any:
    api.post("/api/v1/models", {"name": model}, format="json")
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    upload = io.BytesIO(data)
    upload.name = name
    return api.post(f"/api/v1/models/{model}/versions", {"file": upload}, format="multipart")


class _Canary:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Path.touch, (Path(self.path),))


@pytest.mark.slow
def test_an_onnx_upload_becomes_a_ready_version_with_its_original_variant(
        api: APIClient, quality_mlp: SampleModel, media_root: Path) -> None:
    response = _upload(api, quality_mlp.onnx)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "READY" and body["number"] == 1 and body["format"] == "onnx"
    assert body["signature"]["inputs"] == [{"name": "features", "dtype": "float32", "shape": ["batch", 2056]}]
    version = ModelVersion.objects.get()
    original = version.variants.get(name=Variant.ORIGINAL)
    assert original.sha256 == body["sha256"] == version.files[0]["sha256"]
    assert _stored_files(media_root) == [f"models/{body['sha256']}/{version.files[0]['path']}"]


@pytest.mark.slow
def test_the_same_file_twice_gives_back_the_existing_version(api: APIClient, quality_mlp: SampleModel,
                                                             media_root: Path) -> None:
    first = _upload(api, quality_mlp.onnx)
    again = _upload(api, quality_mlp.onnx)
    assert again.status_code == 200 and again.json()["number"] == first.json()["number"] == 1
    assert ModelVersion.objects.count() == 1


@pytest.mark.slow
def test_versions_are_numbered_per_model(api: APIClient, quality_mlp: SampleModel, tiny_transformer: SampleModel,
                                         media_root: Path) -> None:
    assert _upload(api, quality_mlp.onnx).json()["number"] == 1
    assert _upload(api, tiny_transformer.onnx).json()["number"] == 2
    assert _upload(api, quality_mlp.onnx, model="other").json()["number"] == 1


def test_a_pickled_checkpoint_is_refused_and_never_unpickled(api: APIClient, tmp_path: Path,
                                                            media_root: Path) -> None:
    canary = tmp_path / "canary"
    response = _upload(api, pickle.dumps(_Canary(str(canary))), name="model.pt")
    assert response.status_code == 400
    assert "pickle" in response.json()["error"].lower()
    assert not canary.exists()
    assert ModelVersion.objects.count() == 0 and _stored_files(media_root) == []


def test_a_torch_save_checkpoint_is_refused_with_what_to_upload_instead(api: APIClient, tmp_path: Path,
                                                                       media_root: Path) -> None:
    import torch

    path = tmp_path / "checkpoint.pth"
    torch.save({"weight": torch.zeros(3)}, path)
    response = _upload(api, path, name="checkpoint.pth")
    assert response.status_code == 400
    error = response.json()["error"]
    assert "torch.jit" in error or "onnx" in error.lower()
    assert _stored_files(media_root) == []


@pytest.mark.slow
def test_an_onnx_file_failing_the_checker_fails_the_version_and_leaves_no_file(
        api: APIClient, quality_mlp: SampleModel, tmp_path: Path, media_root: Path) -> None:
    import onnx

    model = onnx.load(str(quality_mlp.onnx))
    model.graph.node[0].input[0] = "no_such_tensor"
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    response = _upload(api, broken)
    assert response.status_code == 400
    assert response.json()["status"] == "FAILED" and response.json()["error"]
    assert ModelVersion.objects.get().status_reason == response.json()["error"]
    assert _stored_files(media_root) == []


def test_a_truncated_file_is_refused(api: APIClient, quality_mlp: SampleModel, media_root: Path) -> None:
    response = _upload(api, quality_mlp.onnx.read_bytes()[:5000])
    assert response.status_code == 400
    assert _stored_files(media_root) == []


def test_a_file_over_the_size_cap_is_refused_with_413(api: APIClient, quality_mlp: SampleModel, settings: Any,
                                                      media_root: Path) -> None:
    settings.MODELHUB_MAX_MODEL_BYTES = 1024 * 1024
    response = _upload(api, quality_mlp.onnx)
    assert response.status_code == 413
    assert "larger than the limit of 1 MB" in response.json()["error"]
    assert _stored_files(media_root) == [] and not list((media_root.parent / "work").glob("incoming-*"))


def test_torchscript_needs_the_upload_permission(api: APIClient, digits_cnn: SampleModel, media_root: Path) -> None:
    response = _upload(api, digits_cnn.torchscript, name="model.pt")
    assert response.status_code == 403
    assert "upload TorchScript" in response.json()["error"]


@pytest.mark.slow
def test_a_trusted_maintainer_uploads_torchscript_inspected_out_of_process_and_datasets_give_its_shapes(
        make_user: Any, digits_cnn: SampleModel, media_root: Path) -> None:
    client = APIClient()
    client.force_authenticate(make_user("tom", "maintainer", torchscript=True))
    response = _upload(client, digits_cnn.torchscript, name="model.pt")
    assert response.status_code == 201, response.json()
    assert response.json()["format"] == "torchscript"
    assert Variant.objects.get().runtime == "torch"
    assert response.json()["signature"]["inputs"][0]["name"] == "image"
    with digits_cnn.validation.open("rb") as handle:
        client.post("/api/v1/models/mlp/versions/1/datasets", {"file": handle, "purpose": "validation"},
                    format="multipart")
    # TorchScript declares no shapes: the dataset teaches them, the batch axis staying symbolic.
    assert ModelVersion.objects.get().signature["inputs"][0]["shape"] == ["batch", 1, 8, 8]


@pytest.mark.slow
def test_a_dataset_matching_the_signature_is_stored(api: APIClient, quality_mlp: SampleModel,
                                                    media_root: Path) -> None:
    _upload(api, quality_mlp.onnx)
    with quality_mlp.validation.open("rb") as handle:
        response = api.post("/api/v1/models/mlp/versions/1/datasets", {"file": handle, "purpose": "validation"},
                            format="multipart")
    assert response.status_code == 201, response.json()
    assert response.json()["sample_count"] == 512 and response.json()["has_labels"] is True


@pytest.mark.slow
@pytest.mark.parametrize("arrays, message", [
    ({"wrong_name": np.zeros((4, 2056), np.float32)}, "features"),
    ({"features": np.zeros((4, 100), np.float32)}, "features"),
    ({"features": np.array([[object()]] * 4, dtype=object)}, "pickle"),
])
def test_a_dataset_that_does_not_fit_is_refused_naming_the_problem(
        api: APIClient, quality_mlp: SampleModel, media_root: Path, arrays: dict[str, Any], message: str) -> None:
    _upload(api, quality_mlp.onnx)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    buffer.name = "data.npz"
    response = api.post("/api/v1/models/mlp/versions/1/datasets", {"file": buffer, "purpose": "validation"},
                        format="multipart")
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not any(p.startswith("datasets/") for p in _stored_files(media_root))


@pytest.mark.slow
def test_register_model_command_registers_with_datasets_and_fails_loudly_on_bad_files(
        quality_mlp: SampleModel, tmp_path: Path) -> None:
    env_dir = tmp_path / "data"
    base = [sys.executable, "manage.py"]
    env = {"MODELHUB_DATA_DIR": str(env_dir), "PATH": "/usr/bin:/bin", "DEBUG": "1"}
    subprocess.run([*base, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    subprocess.run([*base, "shell", "-c", "from django.contrib.auth.models import User; "
                    "User.objects.create_superuser('root', 'r@x', 'pw')"], cwd=ROOT, env=env, check=True, timeout=120)
    ok = subprocess.run([*base, "register_model", "mlp", str(quality_mlp.onnx), "--dataset",
                         str(quality_mlp.validation)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "registered mlp v1 (READY, onnx)" in ok.stdout and "validation dataset: 512 samples" in ok.stdout
    bad = tmp_path / "notes.onnx"
    bad.write_text("<html>not a model</html>")
    refused = subprocess.run([*base, "register_model", "mlp", str(bad)], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode != 0 and "CommandError" in refused.stderr


def test_services_refuse_optimizing_a_version_that_is_not_ready(maintainer: Any, media_root: Path) -> None:
    from modelhub.errors import Invalid

    model = factories.model(maintainer, "m")
    version = ModelVersion.objects.create(model=model, number=1, format="onnx", original_filename="x.onnx",
                                          storage_key="k", sha256="0" * 64, size_bytes=1,
                                          status=ModelVersion.Status.FAILED)
    with pytest.raises(Invalid, match="only READY versions"):
        services.optimization_request(version=version, user=maintainer)
