"""Two machines' worth of modelhub sharing only PostgreSQL, Redis and an S3-protocol bucket (issue 14).

This process is the management node (upload, intake, promotion) with its own work and cache
directories; a real Celery worker optimizes in a second data directory; gunicorn serving
processes answer from third, empty ones. Nothing is shared on disk: every stored byte is in the
bucket of a real S3-protocol server (moto's standalone server, tests/real_services.S3Server), and
each node reads it through its own checked cache.

RELIABILITY.md cases: A13 (an object changed in the bucket is refused by its sha256), E1 (the
refused primary falls back to its original, which answers), D6-like outages of the bucket (a
cached model still answers; an upload is refused 503 as JSON with nothing half-stored).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from modelhub import services
from modelhub.models import ModelVersion, OptimizationJob, Variant
from predictions import services as serving
from tests import factories
from tests.real_services import (
    S3Server,
    celery_broker,
    database_url,
    free_port,
    running_worker,
    wait_for,
    wait_for_port,
)
from workers.samples import SampleModel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.worker, pytest.mark.redis]
PLAN = [{"name": "int8-dynamic", "pass_name": "quantize_dynamic", "options": {}}]
BENCH = {"time_budget_s": 0.2, "batch_sizes": [1]}


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    server = S3Server(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(settings: Any, s3: S3Server, tmp_path: Path) -> str:
    """This process keeps its bytes in the bucket (under a prefix of its own) and its caches in api/."""
    prefix = f"run-{uuid.uuid4().hex[:8]}"
    settings.STORAGES = {**settings.STORAGES, "default": s3.storage(prefix)}
    settings.MODELHUB_WORK_DIR = tmp_path / "api" / "work"
    settings.MODELHUB_CACHE_DIR = tmp_path / "api" / "cache"
    return prefix


@contextmanager
def serving_node(data: Path, redis_url: str, storage_env: dict[str, str]) -> Iterator[int]:
    """A gunicorn serving process whose data directory is ``data`` (its own); yields its port."""
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, **storage_env, "DATABASE_URL": database_url(), "REDIS_URL": redis_url, "DEBUG": "1",
           "MODELHUB_PLANE": "serving", "MODELHUB_DATA_DIR": str(data), "LOG_LEVEL": "WARNING"}
    with (data / "gunicorn.log").open("ab") as log:
        process = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "modelhub.wsgi:application",
                                    "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "2",
                                    "--worker-class", "gthread", "--log-level", "warning"],
                                   cwd=Path(__file__).resolve().parents[2], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=60)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=20)


def _predict(port: int, model: str, token: str, body: bytes) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", f"/api/v1/models/{model}/predict", body=body,
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _body(sample: SampleModel) -> bytes:
    with np.load(sample.validation) as data:
        return orjson.dumps({"inputs": {"features": data["features"][:2].astype(np.float32)}},
                            option=orjson.OPT_SERIALIZE_NUMPY)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _finished(job_id: int) -> OptimizationJob | None:
    job = OptimizationJob.objects.get(pk=job_id)
    return job if job.is_finished else None


def _optimized_on_a_worker(version: ModelVersion, user: Any, redis_url: str, data: Path,
                           env: dict[str, str]) -> Variant:
    data.mkdir(parents=True, exist_ok=True)
    with celery_broker(redis_url), running_worker(redis_url, data, **env):
        job = services.optimization_request(version=version, user=user, plan=PLAN, bench=BENCH)
        job = wait_for(lambda: _finished(job.pk), 300, "the job on the worker", data / "worker.log")
    assert job.status == "SUCCEEDED", job.error
    return version.variants.get(name="int8-dynamic")


@pytest.fixture
def promoted(bucket: str, s3: S3Server, redis_url: str, tmp_path: Path, make_user: Callable[..., Any],
             quality_mlp: SampleModel) -> dict[str, Any]:
    """Upload + intake here, optimize on a real worker (its own data dir), promote the INT8 variant."""
    owner = make_user("owen", "maintainer", "approver")
    version = factories.version(owner, quality_mlp, purposes=factories.BOTH)
    variant = _optimized_on_a_worker(version, owner, redis_url, tmp_path / "worker", s3.env(bucket))
    services.deployment_promote(model=version.model, variant=variant, by=owner, force=True,
                                reason="two-node test: no governing profile")
    token = serving.token_create(name="t", models=[version.model], by=owner, rate_limit_per_minute=0)[1]
    return {"owner": owner, "version": version, "variant": variant, "token": token, "body": _body(quality_mlp)}


def test_a_node_with_an_empty_disk_serves_a_model_optimized_on_another_node_and_keeps_answering_without_the_bucket(
        promoted: dict[str, Any], bucket: str, s3: S3Server, redis_url: str, tmp_path: Path) -> None:
    """Upload → worker → promote → predict on two empty serving nodes at once; then D6 for the
    bucket: with it unreachable, a fresh process of a node still answers from the node's cache."""
    variant, worker = promoted["variant"], tmp_path / "worker"
    assert not (worker / "media").exists() and not (tmp_path / "api" / "media").exists()  # no local storage
    assert f"{bucket}/{variant.storage_key}" in s3.keys(bucket)
    nodes = [tmp_path / "serve-1", tmp_path / "serve-2"]  # two serving machines, side by side
    with serving_node(nodes[0], redis_url, s3.env(bucket)) as first, \
            serving_node(nodes[1], redis_url, s3.env(bucket)) as second:
        answers = [_predict(port, "mlp", promoted["token"], promoted["body"]) for port in (first, second)]
    for status, reply in answers:
        assert status == 200, reply
        assert reply["variant"] == "int8-dynamic" and not reply["fallback"]
    assert answers[0][1]["outputs"] == answers[1][1]["outputs"]
    for node in nodes:
        cached = [p.relative_to(node / "cache" / "entries").as_posix() for p in _files(node / "cache" / "entries")]
        assert cached == [variant.storage_key]
        assert not _files(node / "media")
    node, reply = nodes[0], answers[0][1]
    # The bucket goes away; a new process of the same node loads the model from its disk cache.
    with serving_node(node, redis_url, s3.env(bucket, endpoint=s3.dead_endpoint)) as port:
        status, again = _predict(port, "mlp", promoted["token"], promoted["body"])
    assert status == 200, again
    assert again["variant"] == "int8-dynamic" and again["outputs"] == reply["outputs"]


def test_an_object_changed_in_the_bucket_is_refused_by_hash_and_the_original_answers(
        promoted: dict[str, Any], bucket: str, s3: S3Server, redis_url: str, tmp_path: Path) -> None:
    """A13 + E1: the INT8 object is overwritten in the bucket; an empty node refuses it (sha256), keeps
    nothing of it, and the fallback chain's original answers, marked as a fallback."""
    variant = promoted["variant"]
    s3.client().put_object(Bucket=s3.BUCKET, Key=f"{bucket}/{variant.storage_key}", Body=b"\x08\x07not the model")
    node = tmp_path / "serve-2"
    with serving_node(node, redis_url, s3.env(bucket)) as port:
        status, reply = _predict(port, "mlp", promoted["token"], promoted["body"])
    assert status == 200, reply
    assert reply["variant"] == Variant.ORIGINAL and reply["fallback"], reply
    # The warm-up may have met the refusal first (then the breaker is already open): the log says why.
    assert reply["fallback_from"] in (["v1/int8-dynamic: load_error"], ["v1/int8-dynamic: circuit_open"]), reply
    assert "does not match its recorded sha256" in (node / "gunicorn.log").read_text(errors="replace")
    entries = [p.relative_to(node / "cache" / "entries").as_posix() for p in _files(node / "cache" / "entries")]
    assert variant.storage_key not in entries and not _files(node / "cache" / "tmp")


def test_an_upload_while_the_bucket_is_unreachable_is_answered_503_as_json_and_stores_nothing(
        bucket: str, s3: S3Server, settings: Any, api: Any, maintainer: Any, quality_mlp: SampleModel) -> None:
    """D6 for the bucket: a clear 503 within seconds, no version row, no object, no local leftover."""
    factories.model(maintainer, "mlp", task=quality_mlp.task)
    before = s3.keys(bucket)
    settings.STORAGES = {**settings.STORAGES, "default": s3.storage(bucket, endpoint=s3.dead_endpoint)}
    with quality_mlp.onnx.open("rb") as handle:
        response = api.post("/api/v1/models/mlp/versions", {"file": handle}, format="multipart")
    assert response.status_code == 503, response.content[:500]
    assert response["Retry-After"] == "5"
    assert response["Content-Type"].startswith("application/json")
    assert "storage" in response.json()["error"] and "Nothing was stored" in response.json()["error"]
    assert not ModelVersion.objects.exists()
    assert s3.keys(bucket) == before
    assert not _files(Path(settings.MODELHUB_WORK_DIR))
