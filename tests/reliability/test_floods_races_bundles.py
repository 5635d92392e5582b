"""Job floods, create races, bundles and a job that measured nothing (issue 17, part C): G8, G9, G10, G15.

Races are real: threads released together by a barrier, each with its own database connection,
against the test's committed (transactional) database.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from modelhub import queue
from modelhub.models import Dataset, OptimizationJob, ReadinessProfile, RegisteredModel
from tests import factories
from tests.onnx_graphs import WEIGHTS, external_model_dir, make_zip
from workers.samples import SampleModel

RACERS = 16


def _together(count: int, call: Callable[[int], Any]) -> list[Any]:
    """Run ``call(i)`` in ``count`` threads released at once; each closes its own connection."""
    barrier, answers = threading.Barrier(count), [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            answers[index] = call(index)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


def _client(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def _statuses(responses: list[Any]) -> Counter:
    return Counter(response.status_code for response in responses)


# --- G8: job floods ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_fifty_identical_concurrent_optimize_requests_make_one_job(
        maintainer: Any, quality_mlp: SampleModel, media_root: Path) -> None:
    """G8: 50 identical optimize requests at once make one job; one 202, the rest 200 with its id."""
    factories.version(maintainer, quality_mlp)
    token = Token.objects.create(user=maintainer).key
    body = {"plan": factories.INT8, "profile": None}

    def ask(_: int) -> Any:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return client.post("/api/v1/models/mlp/versions/1/optimize", body, format="json")

    with queue.eager(False):  # the jobs wait in the broker: each request sees the first still QUEUED
        responses = _together(50, ask)
    assert _statuses(responses) == {202: 1, 200: 49}, [r.content[:200] for r in responses if r.status_code >= 300]
    assert len({response.json()["id"] for response in responses}) == 1
    assert OptimizationJob.objects.count() == 1


@pytest.mark.django_db
def test_a_finished_job_does_not_stop_the_same_request_later(api: APIClient, maintainer: Any,
                                                              quality_mlp: SampleModel, media_root: Path) -> None:
    """G8: only an active (QUEUED / RUNNING) job is handed back; after it ends the request queues anew."""
    factories.version(maintainer, quality_mlp)
    body = {"plan": factories.INT8, "profile": None}
    first = api.post("/api/v1/models/mlp/versions/1/optimize", body, format="json")
    assert api.post("/api/v1/models/mlp/versions/1/optimize", body, format="json").json()["id"] == first.json()["id"]
    OptimizationJob.objects.filter(pk=first.json()["id"]).update(status=OptimizationJob.Status.FAILED)
    again = api.post("/api/v1/models/mlp/versions/1/optimize", body, format="json")
    assert again.status_code == 202 and again.json()["id"] != first.json()["id"]


@pytest.mark.django_db
def test_a_flood_of_distinct_jobs_from_one_user_is_429_after_the_cap(
        api: APIClient, maintainer: Any, quality_mlp: SampleModel, media_root: Path, settings: Any) -> None:
    """G8: distinct requests from one user queue up to MODELHUB_MAX_QUEUED_JOBS_PER_USER; the next is
    429 with Retry-After and a JSON reason; once one of them starts, the next is queued again."""
    settings.MODELHUB_MAX_QUEUED_JOBS_PER_USER = 5
    factories.version(maintainer, quality_mlp)
    answers = [api.post("/api/v1/models/mlp/versions/1/optimize", {"profile": None, "plan": [
        {"name": f"int8-{i}", "pass_name": "quantize_dynamic", "options": {"per_channel": i % 2 == 0}}]},
        format="json") for i in range(8)]
    assert [a.status_code for a in answers] == [202] * 5 + [429] * 3
    refused = answers[-1]
    assert int(refused["Retry-After"]) > 0
    assert "MODELHUB_MAX_QUEUED_JOBS_PER_USER" in refused.json()["error"] and refused.json()["limit"] == 5
    assert OptimizationJob.objects.count() == 5
    OptimizationJob.objects.filter(pk=answers[0].json()["id"]).update(status=OptimizationJob.Status.RUNNING)
    assert api.post("/api/v1/models/mlp/versions/1/optimize", {"profile": None}, format="json").status_code == 202


# --- G9: create races -------------------------------------------------------------------------------


def _race(user: Any, send: Callable[[APIClient, int], Any]) -> list[Any]:
    token = Token.objects.get_or_create(user=user)[0].key

    def ask(index: int) -> Any:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return send(client, index)

    responses = _together(RACERS, ask)
    for response in responses:
        if response.status_code == 409:
            assert response["Content-Type"].startswith("application/json") and response.json()["error"]
    return responses


@pytest.mark.django_db(transaction=True)
def test_sixteen_concurrent_creates_of_one_model_give_one_201_and_409s(maintainer: Any) -> None:
    """G9: 16 concurrent registrations of one name: exactly one 201, the rest 409 with a reason."""
    responses = _race(maintainer, lambda client, _: client.post("/api/v1/models", {"name": "racer"}, format="json"))
    assert _statuses(responses) == {201: 1, 409: RACERS - 1}
    assert RegisteredModel.objects.filter(name="racer").count() == 1


@pytest.mark.django_db(transaction=True)
def test_sixteen_concurrent_creates_of_one_profile_give_one_201_and_409s(maintainer: Any) -> None:
    """G9: 16 concurrent creations of one readiness profile: one 201, the rest 409 with a reason."""
    responses = _race(maintainer, lambda client, _: client.post(
        "/api/v1/profiles", {"name": "race-profile", "max_p95_ms": 50}, format="json"))
    assert _statuses(responses) == {201: 1, 409: RACERS - 1}
    assert ReadinessProfile.objects.filter(name="race-profile").count() == 1


@pytest.mark.django_db(transaction=True)
def test_sixteen_concurrent_validation_datasets_give_one_201_and_409s(
        maintainer: Any, quality_mlp: SampleModel, media_root: Path) -> None:
    """G9: 16 concurrent validation datasets for one version: one 201, the rest 409; the stored one is whole."""
    factories.version(maintainer, quality_mlp, purposes=())
    blob = quality_mlp.validation.read_bytes()

    def send(client: APIClient, index: int) -> Any:
        upload = io.BytesIO(blob)
        upload.name = f"validation-{index}.npz"
        return client.post("/api/v1/models/mlp/versions/1/datasets", {"purpose": "validation", "file": upload},
                           format="multipart")

    responses = _race(maintainer, send)
    assert _statuses(responses) == {201: 1, 409: RACERS - 1}, [r.content[:200] for r in responses]
    stored = Dataset.objects.get(version__model__name="mlp", purpose="validation")
    with np.load(io.BytesIO(blob)) as original, np.load(_stored_path(stored)) as kept:
        assert sorted(original.files) == sorted(kept.files)


def _stored_path(dataset: Dataset) -> Path:
    from modelhub import artifacts

    return artifacts.local_path(dataset.storage_key, dataset.sha256)


# --- G10: bundles -----------------------------------------------------------------------------------


def _absolute_strings(value: Any) -> list[str]:
    """Every string inside ``value`` that looks like an absolute path of a machine."""
    if isinstance(value, dict):
        return [s for item in value.values() for s in _absolute_strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _absolute_strings(item)]
    return [value] if isinstance(value, str) and (value.startswith("/") or value[1:3] == ":\\") else []


@pytest.mark.django_db
def test_the_bundle_of_a_model_with_external_data_runs_from_a_clean_directory(
        api: APIClient, maintainer: Any, media_root: Path, tmp_path: Path) -> None:
    """G10: the bundle carries the model and its external data file; unzipped into an empty directory
    its predict.py answers y = x + W; config.json and the API's inspection hold no server path."""
    root = external_model_dir(tmp_path / "external")
    archive = make_zip(tmp_path / "model.zip", {n: (root / n).read_bytes() for n in ("model.onnx", "weights.bin")})
    version = factories.upload(maintainer, archive, name="adder")
    assert version.status == "READY", version.status_reason
    factories.benchmark_job(version.variants.get(name="original"), maintainer, None)  # config gets metrics

    response = api.get("/api/v1/models/adder/versions/1/variants/original/bundle")
    assert response.status_code == 200
    clean = tmp_path / "clean"
    clean.mkdir()
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as bundle:
        assert {"model.onnx", "weights.bin", "config.json", "predict.py"} <= set(bundle.namelist())
        bundle.extractall(clean)
    x = np.array([[1, 1, 1, 1], [0, 0, 0, 0]], dtype=np.float32)
    np.savez(clean / "inputs.npz", x=x)
    run = subprocess.run([sys.executable, "predict.py", "inputs.npz"], cwd=clean, capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert f"y (2, 4) {(x + WEIGHTS).ravel()}" in run.stdout

    config = json.loads((clean / "config.json").read_text())
    assert config["metrics"]["model"] and not _absolute_strings(config), _absolute_strings(config)
    answer = api.get("/api/v1/models/adder/versions/1").json()
    assert "root" not in answer["inspection"] and not _absolute_strings(answer), _absolute_strings(answer)


# --- a job that measured nothing --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_job_whose_every_benchmark_failed_ends_failed_with_the_reason(
        maintainer: Any, media_root: Path, tmp_path: Path) -> None:
    """G15: when no variant could be measured (here: the stored file will not load in the bench
    child) the job ends FAILED with each reason, never SUCCEEDED with an empty ranking."""
    from modelhub import artifacts, services

    root = external_model_dir(tmp_path / "external")
    archive = make_zip(tmp_path / "model.zip", {n: (root / n).read_bytes() for n in ("model.onnx", "weights.bin")})
    version = factories.upload(maintainer, archive, name="adder")
    original = version.variants.get(name="original")
    data = next(f for f in original.files if f["path"] == "weights.bin")
    artifacts.local_path(data["key"]).write_bytes(b"\0")  # too short for W: onnxruntime refuses to load it
    type(original).objects.filter(pk=original.pk).update(
        files=[f if f is not data else {**f, "sha256": artifacts.sha256_of(artifacts.local_path(f["key"]))}
               for f in original.files])
    original.refresh_from_db()
    with queue.eager(), factories.committed():
        job = services.benchmark_request(variant=original, user=maintainer, profile=None, bench=factories.QUICK_BENCH)
    job.refresh_from_db()
    assert job.status == OptimizationJob.Status.FAILED, (job.status, job.result)
    assert job.error.startswith("No variant could be measured (original: ") and "run the job again" in job.error
