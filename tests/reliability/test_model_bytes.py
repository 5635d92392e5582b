"""A model handed over as bytes meets the same checks as a file on disk (RELIABILITY.md A5).

onnxruntime long validated external-data locations only when a model was loaded from a path
(ORT PR #27430), so the hub never relies on the load mode: an upload arrives as a byte stream and
the hub's own intake check refuses a hostile external-data reference before any session exists;
serving loads a single-file model from bytes, and what it loads is refused without reading the
target even when the file never went through the intake.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from modelhub import artifacts
from modelhub.models import ModelVersion, Variant
from predictions import runtime
from tests import factories
from tests.onnx_graphs import add_model, externalize, tiny_onnx_bytes
from workers import formats

pytestmark = [pytest.mark.django_db, pytest.mark.slow]  # every upload waits for its sandboxed intake
SECRET = b"A5-SECRET-TARGET-BYTES-5150"

# (case, location of W's data given the secret file's path, words of the hub's own refusal)
LOCATIONS = [
    ("absolute-path", lambda secret: str(secret), "absolute path"),
    ("dotdot", lambda secret: "../outside.bin", "not a plain relative path"),
    ("dotdot-to-the-root", lambda secret: "../" * 20 + str(secret).lstrip("/"), "not a plain relative path"),
    ("ort-in-memory-marker", lambda secret: "*/_ORT_MEM_ADDR_/*", "in-memory marker"),
    ("beside-the-model", lambda secret: "weights.bin", "missing"),
]


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret" / "outside.bin"
    path.parent.mkdir()
    path.write_bytes(SECRET * 4)  # 16 float32s or more: enough for W if anything read it
    return path


def _hostile(location: str) -> bytes:
    return externalize(add_model(), location).SerializeToString()


def _stored(media_root: Path) -> list[Path]:
    return [p for p in media_root.rglob("*") if p.is_file()] if media_root.exists() else []


@pytest.mark.parametrize(("location", "says"), [case[1:] for case in LOCATIONS], ids=[case[0] for case in LOCATIONS])
def test_an_onnx_uploaded_as_bytes_naming_hostile_external_data_is_refused_by_the_hub_before_any_session(
        maintainer: Any, media_root: Path, secret_file: Path, caplog: pytest.LogCaptureFixture,
        location: Any, says: str) -> None:
    """A5: the upload stream is checked by the hub's own external-data rules; the reason is the hub's,
    not onnxruntime's (no session was made); nothing is stored and no byte of the target leaks."""
    caplog.set_level(logging.DEBUG)
    version = factories.upload(maintainer, _hostile(location(secret_file)), name="m")
    assert version.status == ModelVersion.Status.FAILED
    reason = version.status_reason
    assert says in reason, reason
    assert "onnxruntime cannot load" not in reason and "ONNXRuntimeError" not in reason  # no session said it
    assert SECRET.decode() not in reason and SECRET.decode() not in caplog.text
    assert _stored(media_root) == [] and not Variant.objects.exists()
    assert secret_file.read_bytes() == SECRET * 4


@pytest.mark.parametrize("location", [case[1] for case in LOCATIONS[:4]], ids=[case[0] for case in LOCATIONS[:4]])
def test_serving_refuses_a_single_file_model_naming_external_data_when_it_loads_from_bytes(
        maintainer: Any, media_root: Path, secret_file: Path, location: Any) -> None:
    """A5: a variant row made by hand (no intake) whose one stored file names the secret: serving, which
    loads single files from bytes, refuses it with a LoadError, loads nothing and leaks nothing."""
    version = factories.upload(maintainer, tiny_onnx_bytes(), name="m")
    path = secret_file.parent.parent / "hostile.onnx"
    path.write_bytes(_hostile(location(secret_file)))
    sha = formats.sha256_file(path)
    key = artifacts.save_file(path, f"variants/{sha}/model.onnx")
    variant = Variant.objects.create(
        version=version, name="hostile", parent=version.variants.get(name=Variant.ORIGINAL), pass_name="graph",
        config_hash=sha[:16], storage_key=key, sha256=sha, size_bytes=path.stat().st_size,
        files=[{"path": "model.onnx", "key": key, "sha256": sha, "size": path.stat().st_size}])
    spec = runtime.VariantSpec.from_variant(variant)
    assert len(spec.files) == 1  # the bytes path of the loader
    with pytest.raises(runtime.LoadError) as caught:
        runtime.get(spec)
    assert caught.value.reason == "onnxruntime"
    assert SECRET.decode() not in str(caught.value)
    assert not runtime.RUNTIMES.loaded(sha)
    assert secret_file.read_bytes() == SECRET * 4
