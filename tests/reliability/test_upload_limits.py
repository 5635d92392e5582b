"""Limits that hold before the bytes land (RELIABILITY.md G4, G5, G6).

Uploads go through the whole Django stack (middleware, DRF or the admin) with a body streamed from
a generator, so a 300 MB upload costs the test nothing; what is measured is how many bytes the
server read from the body and how many it left in the upload temp dir, the work dir and storage.
"""

from __future__ import annotations

import io
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from modelhub.models import ModelVersion
from tests import factories
from workers.samples import SampleModel

pytestmark = pytest.mark.django_db(transaction=True)  # uploads commit; their intake runs at commit
MB = 1024 * 1024
DECLARED = 300 * MB
BOUNDARY = "modelhubboundary"


class GeneratedBody:
    """A multipart body of ``size`` bytes made on demand (one file part of zeros), counting what the
    server read of it."""

    def __init__(self, size: int, field: str = "file", filename: str = "model.onnx") -> None:
        self.head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n").encode()
        self.tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        self.size = size
        self.read_bytes = 0

    def chunks(self) -> Iterator[bytes]:
        yield self.head
        left = self.size - len(self.head) - len(self.tail)
        block = bytes(MB)
        while left > 0:
            yield block[:min(left, MB)]
            left -= MB
        yield self.tail

    def stream(self) -> io.RawIOBase:
        """A file-like ``wsgi.input`` over ``chunks``."""
        body = self
        source = self.chunks()
        pending = bytearray()

        class Stream(io.RawIOBase):
            def readable(self) -> bool:
                return True

            def read(self, n: int = -1) -> bytes:
                while (n < 0 or len(pending) < n) and (chunk := next(source, None)) is not None:
                    pending.extend(chunk)
                cut = len(pending) if n < 0 else min(n, len(pending))
                out = bytes(pending[:cut])
                del pending[:cut]
                body.read_bytes += len(out)
                return out

            def readline(self, size: int = -1) -> bytes:  # wsgi.input API; the multipart parser uses read
                return self.read(size)

        return Stream()


@pytest.fixture
def dirs(settings: Any, data_dir: Path) -> dict[str, Path]:
    """The directories an upload could write to, all the test's own: Django's upload temp dir, the
    work dir (uploads being received, intake scratch) and storage."""
    temp = data_dir / "upload-tmp"
    temp.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(temp)
    return {"temp": temp, "work": data_dir / "work", "media": data_dir / "media"}


def _bytes_under(dirs: dict[str, Path]) -> int:
    return sum(p.stat().st_size for root in dirs.values() if root.exists() for p in root.rglob("*") if p.is_file())


def _files_under(dirs: dict[str, Path]) -> list[str]:
    return sorted(str(p) for root in dirs.values() if root.exists() for p in root.rglob("*") if p.is_file())


def _post_body(client: Client, path: str, body: GeneratedBody, *, declared: int | None, **headers: Any) -> Any:
    """POST ``body`` streamed (never held whole) with ``declared`` as Content-Length ("" = none)."""
    return client.generic("POST", path, b"", CONTENT_TYPE=f"multipart/form-data; boundary={BOUNDARY}",
                          CONTENT_LENGTH="" if declared is None else str(declared),
                          **{"wsgi.input": body.stream()}, **headers)


def _token(user: Any) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Token {Token.objects.get_or_create(user=user)[0].key}"}


@pytest.fixture
def owned(maintainer: Any) -> Any:
    return factories.model(maintainer, "m")


def test_a_viewer_s_300_mb_upload_is_refused_from_its_headers(owned: Any, make_user: Any,
                                                             dirs: dict[str, Path]) -> None:
    """G4: a read-only viewer's 300 MB-declared upload (REST, token) is answered 403 JSON before a byte
    of the body is read: 0 bytes read, 0 bytes in the temp dir, the work dir or storage."""
    viewer = make_user("vera", "viewer")
    body = GeneratedBody(DECLARED)
    response = _post_body(Client(), "/api/v1/models/m/versions", body, declared=DECLARED, **_token(viewer))
    assert response.status_code == 403, response.content
    assert "maintainer role" in response.json()["error"]
    assert (body.read_bytes, _bytes_under(dirs)) == (0, 0), _files_under(dirs)


def test_an_upload_over_the_cap_is_refused_from_its_headers(owned: Any, maintainer: Any, settings: Any,
                                                            dirs: dict[str, Path]) -> None:
    """G4: a maintainer's 300 MB-declared upload over MODELHUB_MAX_MODEL_MB=2 is answered 413 JSON from
    its Content-Length: 0 bytes read, 0 bytes written anywhere; a dataset over its cap likewise."""
    settings.MODELHUB_MAX_MODEL_BYTES = settings.MODELHUB_MAX_DATASET_BYTES = 2 * MB
    for path in ("/api/v1/models/m/versions", "/api/v1/models/m/versions/1/datasets"):
        body = GeneratedBody(DECLARED)
        response = _post_body(Client(), path, body, declared=DECLARED, **_token(maintainer))
        assert response.status_code == 413, response.content
        assert "larger than the limit of 2 MB" in response.json()["error"]
        assert (body.read_bytes, _bytes_under(dirs)) == (0, 0), _files_under(dirs)


def test_admin_upload_forms_are_refused_from_their_headers(owned: Any, make_user: Any, settings: Any,
                                                           dirs: dict[str, Path]) -> None:
    """G4: the admin's version and dataset add forms (session login): a staff viewer gets 403, a staff
    maintainer over the caps 413, both JSON and with 0 bytes read or written."""
    settings.MODELHUB_MAX_MODEL_BYTES = settings.MODELHUB_MAX_DATASET_BYTES = 2 * MB
    for role, status in (("viewer", 403), ("maintainer", 413)):
        client = Client()
        client.force_login(factories.staff_user(f"staff-{role}", role))
        for path in ("/admin/modelhub/modelversion/add/", "/admin/modelhub/dataset/add/"):
            body = GeneratedBody(DECLARED)
            response = _post_body(client, path, body, declared=DECLARED)
            assert response.status_code == status, response.content
            assert response["Content-Type"] == "application/json" and response.json()["error"]
            assert (body.read_bytes, _bytes_under(dirs)) == (0, 0), _files_under(dirs)


def test_a_part_over_its_cap_stops_at_the_cap_and_leaves_nothing(owned: Any, maintainer: Any, settings: Any,
                                                                  dirs: dict[str, Path]) -> None:
    """G4: a body within the declared-size margin whose file part goes over the cap is stopped by the
    upload handler at the cap (413 JSON), and the part written so far is deleted: nothing stays."""
    settings.MODELHUB_MAX_MODEL_BYTES = 2 * MB
    body = GeneratedBody(2 * MB + 32 * 1024)
    response = _post_body(Client(), "/api/v1/models/m/versions", body, declared=body.size, **_token(maintainer))
    assert response.status_code == 413, response.content
    assert "larger than the limit of 2 MB" in response.json()["error"]
    assert body.read_bytes <= 2 * MB + 2 * 65536 + 1024  # stopped at the cap (plus the parser's read-ahead)
    assert _bytes_under(dirs) == 0, _files_under(dirs)


def test_a_chunked_upload_without_content_length_is_refused_unread(owned: Any, maintainer: Any,
                                                                   dirs: dict[str, Path]) -> None:
    """G4: a chunked body (no Content-Length) of 300 MB: 411 JSON, nothing read, nothing written."""
    body = GeneratedBody(DECLARED)
    response = _post_body(Client(), "/api/v1/models/m/versions", body, declared=None,
                          HTTP_TRANSFER_ENCODING="chunked", **_token(maintainer))
    assert response.status_code == 411, response.content
    assert (body.read_bytes, _bytes_under(dirs)) == (0, 0), _files_under(dirs)


def test_an_upload_within_the_limits_still_lands(owned: Any, maintainer: Any, quality_mlp: SampleModel,
                                                 dirs: dict[str, Path]) -> None:
    """G4: the guard lets a maintainer's upload within the caps through, and the temp dir ends empty."""
    client = Client(**_token(maintainer))
    with quality_mlp.onnx.open("rb") as handle:
        response = client.post("/api/v1/models/m/versions", {"file": handle})
    assert response.status_code == 201, response.content
    assert list(dirs["temp"].iterdir()) == []


# --- G5 ---------------------------------------------------------------------------------------


def _upload(headers: dict[str, str], name: str, blob: bytes) -> int:
    client = Client(**headers)
    response = client.post(f"/api/v1/models/{name}/versions", {"file": _named(blob)})
    assert response.status_code in (201, 202), response.content
    return response.json()["number"]


def _named(blob: bytes) -> io.BytesIO:
    handle = io.BytesIO(blob)
    handle.name = "model.onnx"
    return handle


def test_the_same_bytes_uploaded_to_two_models_both_end_ready(maintainer: Any, quality_mlp: SampleModel,
                                                              data_dir: Path) -> None:
    """G5: one file uploaded to two models at once (two concurrent requests, each running its intake),
    then to a third back to back: every version ends READY, none "The model file is missing.", and
    no staged upload is left once all are inspected."""
    blob = quality_mlp.onnx.read_bytes()
    for name in ("a", "b", "c"):
        factories.model(maintainer, name)
    start, errors, headers = threading.Barrier(2), [], _token(maintainer)

    def upload(name: str) -> None:
        try:
            start.wait()
            _upload(headers, name, blob)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    _upload(headers, "c", blob)
    versions = ModelVersion.objects.filter(model__name__in=["a", "b", "c"])
    assert sorted((v.model.name, v.status, v.status_reason) for v in versions) == [
        (name, ModelVersion.Status.READY, "") for name in ("a", "b", "c")]
    assert len({v.storage_key for v in versions}) == 1  # content-addressed once READY
    incoming = data_dir / "media" / "incoming"
    assert not incoming.exists() or not [p for p in incoming.rglob("*") if p.is_file()]


# --- G6 ---------------------------------------------------------------------------------------


def _inflating_npz(path: Path, name: str, columns: int, unpacked: int) -> None:
    """An np.savez_compressed-style .npz of float32 zeros shaped for the model's input (``columns``
    features) that unpacks to ``unpacked`` bytes, written in 1 MB pieces so the test never holds it."""
    rows = unpacked // (4 * columns)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open(f"{name}.npy", "w", force_zip64=True) as out:
        np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False, "shape": (rows, columns)})
        block, left = bytes(MB), rows * columns * 4
        while left > 0:
            out.write(block[:min(left, MB)])
            left -= MB


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_a_dataset_that_inflates_to_1_gb_is_refused_from_its_declared_sizes(
        maintainer: Any, quality_mlp: SampleModel, tmp_path: Path, settings: Any) -> None:
    """G6: a ~1 MB compressed .npz of zeros that unpacks to 1 GB is refused (400, "unpacks to more than")
    from the sizes its zip directory declares, under the default MODELHUB_MAX_DATASET_UNPACKED_MB=512,
    checked in the intake child: the web process's peak RSS does not move."""
    assert settings.MODELHUB_MAX_DATASET_UNPACKED_BYTES == 512 * MB
    version = factories.upload(maintainer, quality_mlp.onnx, name="m")
    assert version.status == ModelVersion.Status.READY, version.status_reason
    bomb = tmp_path / "bomb.npz"
    spec = version.signature["inputs"][0]
    _inflating_npz(bomb, spec["name"], spec["shape"][-1], 1024 * MB)
    assert bomb.stat().st_size < 1.5 * MB
    client = Client(**_token(maintainer))
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM: the peak from here on
    before = _rss_kb("VmRSS")
    with bomb.open("rb") as handle:
        response = client.post("/api/v1/models/m/versions/1/datasets", {"file": handle, "purpose": "validation"})
    peak = _rss_kb("VmHWM")
    assert response.status_code == 400, response.content
    assert "unpacks to more than" in response.json()["error"]
    assert peak - before < 64 * 1024, f"web process RSS went from {before} kB to a peak of {peak} kB"
    assert version.datasets.count() == 0


def test_a_good_dataset_is_checked_in_the_child_and_stored(maintainer: Any, quality_mlp: SampleModel) -> None:
    """G6: a normal dataset still passes through the child check and is stored with its facts."""
    version = factories.upload(maintainer, quality_mlp.onnx, name="m")
    client = Client(**_token(maintainer))
    with quality_mlp.validation.open("rb") as handle:
        response = client.post("/api/v1/models/m/versions/1/datasets", {"file": handle, "purpose": "validation"})
    assert response.status_code == 201, response.content
    assert version.datasets.get().sample_count == response.json()["sample_count"] > 0
    assert os.path.exists(quality_mlp.validation)
