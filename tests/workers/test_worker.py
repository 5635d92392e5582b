"""Jobs through a real Celery worker on a real Redis, including a worker killed mid-job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from modelhub import services
from modelhub.models import ModelVersion, OptimizationJob, Variant
from workers.samples import SampleModel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker, pytest.mark.redis, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent.parent
PLAN = [
    {"name": "int8-dynamic", "pass_name": "quantize_dynamic", "options": {}},
    {"name": "int8-static", "pass_name": "quantize_static", "options": {}},
    {"name": "pruned", "pass_name": "prune_structured", "options": {"ratio": 0.5}},
    {"name": "int8-pruned", "pass_name": "quantize_dynamic", "options": {}, "source": "pruned"},
]
BENCH = {"time_budget_s": 0.3, "batch_sizes": [1, 8]}


def _database_url() -> str:
    """The test database as a URL the worker process can open."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    return f"postgres://{params['USER']}:{params['PASSWORD']}@{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}/{params['NAME']}"


@pytest.fixture
def shared_data_dir(settings: Any, tmp_path: Path) -> Path:
    """One data directory for the test and its worker: storage and work dir live under it."""
    settings.MODELHUB_WORK_DIR = tmp_path / "work"
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "media")}}}
    return tmp_path


@pytest.fixture
def worker(redis_url: str, shared_data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery worker` (prefork, one child) consuming every queue of the test's Redis."""
    from modelhub.celery import app

    previous = app.conf.broker_url
    app.conf.task_always_eager = False
    app.conf.broker_url = redis_url
    app.close()  # drop connections to the previous broker
    app.amqp._producer_pool = None  # and producers bound to it (any eager send made some): else sends go there
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": _database_url(), "DEBUG": "1",
           "MODELHUB_DATA_DIR": str(shared_data_dir)}
    log = (shared_data_dir / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "modelhub", "worker", "-Q", "optimize,benchmark,default",
         "--concurrency", "1", "--pool", "prefork", "--without-gossip", "--without-mingle", "-l", "info"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    app.conf.broker_url = previous
    app.close()
    app.amqp._producer_pool = None


def _wait(predicate: Callable[[], Any], timeout: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{log.read_text()[-3000:]}")


def _register(user: Any, sample: SampleModel) -> ModelVersion:
    model = services.model_create(name="mlp", owner=user)
    with sample.onnx.open("rb") as handle:
        version, _ = services.version_upload(model=model, stream=handle, filename="model.onnx", user=user)
    version.refresh_from_db()
    for purpose, path in (("validation", sample.validation), ("calibration", sample.calibration)):
        with path.open("rb") as handle:
            services.dataset_upload(version=version, purpose=purpose, stream=handle, filename=path.name, user=user)
    return version


def _child_pids(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(line) for line in out.split()]


def test_a_job_runs_through_a_real_worker_and_records_its_variants(
        worker: subprocess.Popen[bytes], maintainer: Any, quality_mlp: SampleModel, shared_data_dir: Path) -> None:
    version = _register_eagerly(maintainer, quality_mlp)
    job = services.optimization_request(version=version, user=maintainer, plan=PLAN[:2], bench=BENCH)
    job = _wait(lambda: _finished(job.pk), 240, "the job to end", shared_data_dir / "worker.log")
    assert job.status == "SUCCEEDED", job.error
    assert job.dispatched_at is not None and job.attempts == 1
    assert sorted(version.variants.values_list("name", flat=True)) == ["int8-dynamic", "int8-static", "original"]
    assert job.result["best"] in {"original", "int8-dynamic", "int8-static"}
    assert version.variants.get(name="int8-dynamic").results.filter(job=job).count() == 1


def test_a_worker_killed_mid_job_leaves_one_success_and_one_variant_per_step(
        worker: subprocess.Popen[bytes], maintainer: Any, quality_mlp: SampleModel, shared_data_dir: Path) -> None:
    log = shared_data_dir / "worker.log"
    version = _register_eagerly(maintainer, quality_mlp)
    job = services.optimization_request(version=version, user=maintainer, plan=PLAN, bench=BENCH)
    _wait(lambda: version.variants.count() >= 2, 240, "the first step's variant", log)
    children = _wait(lambda: _child_pids(worker.pid), 30, "the pool child", log)
    assert not _finished(job.pk), "the job ended before the kill; the test needs a longer plan"
    os.kill(children[0], signal.SIGKILL)
    job = _wait(lambda: _finished(job.pk), 300, "the job to end after the kill", log)
    assert job.status == "SUCCEEDED", job.error
    assert job.attempts == 2
    names = sorted(version.variants.values_list("name", flat=True))
    assert names == ["int8-dynamic", "int8-pruned", "int8-static", "original", "pruned"]
    artifacts = list((shared_data_dir / "media" / "variants").rglob("*.onnx"))
    assert len(artifacts) == len(PLAN)
    for variant in version.variants.exclude(name=Variant.ORIGINAL):
        assert variant.results.filter(job=job).count() == 1


def _register_eagerly(user: Any, sample: SampleModel) -> ModelVersion:
    from modelhub.celery import app

    app.conf.task_always_eager = True  # intake in-process; the job itself goes to the worker
    try:
        return _register(user, sample)
    finally:
        app.conf.task_always_eager = False


def _finished(job_id: int) -> OptimizationJob | None:
    job = OptimizationJob.objects.get(pk=job_id)
    return job if job.is_finished else None
