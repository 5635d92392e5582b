"""Jobs through a real Celery worker on a real Redis, including a worker killed mid-job."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelhub import services
from modelhub.models import ModelVersion, OptimizationJob, Variant
from tests.real_services import celery_broker, child_pids, running_worker, wait_for
from workers.samples import SampleModel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker, pytest.mark.redis, pytest.mark.slow]
PLAN = [
    {"name": "int8-dynamic", "pass_name": "quantize_dynamic", "options": {}},
    {"name": "int8-static", "pass_name": "quantize_static", "options": {}},
    {"name": "pruned", "pass_name": "prune_structured", "options": {"ratio": 0.5}},
    {"name": "int8-pruned", "pass_name": "quantize_dynamic", "options": {}, "source": "pruned"},
]
BENCH = {"time_budget_s": 0.3, "batch_sizes": [1, 8]}


@pytest.fixture
def worker(redis_url: str, data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery worker` (prefork, one child) consuming every queue of the test's Redis."""
    with celery_broker(redis_url), running_worker(redis_url, data_dir) as process:
        yield process


def _register(user: Any, sample: SampleModel) -> ModelVersion:
    model = services.model_create(name="mlp", owner=user)
    with sample.onnx.open("rb") as handle:
        version, _ = services.version_upload(model=model, stream=handle, filename="model.onnx", user=user)
    version.refresh_from_db()
    for purpose, path in (("validation", sample.validation), ("calibration", sample.calibration)):
        with path.open("rb") as handle:
            services.dataset_upload(version=version, purpose=purpose, stream=handle, filename=path.name, user=user)
    return version


def test_a_job_runs_through_a_real_worker_and_records_its_variants(
        worker: subprocess.Popen[bytes], maintainer: Any, quality_mlp: SampleModel, data_dir: Path) -> None:
    version = _register_eagerly(maintainer, quality_mlp)
    job = services.optimization_request(version=version, user=maintainer, plan=PLAN[:2], bench=BENCH)
    job = wait_for(lambda: _finished(job.pk), 240, "the job to end", data_dir / "worker.log")
    assert job.status == "SUCCEEDED", job.error
    assert job.dispatched_at is not None and job.attempts == 1
    assert sorted(version.variants.values_list("name", flat=True)) == ["int8-dynamic", "int8-static", "original"]
    # No profile: every variant is measured and ordered, none judged, so none is "best".
    assert sorted(job.result["ranking"]["ordered"]) == ["int8-dynamic", "int8-static", "original"]
    assert job.result["best"] is None and job.result["judgment"]["judged"] is False
    assert version.variants.get(name="int8-dynamic").results.filter(job=job).count() == 1


def test_a_worker_killed_mid_job_leaves_one_success_and_one_variant_per_step(
        worker: subprocess.Popen[bytes], maintainer: Any, quality_mlp: SampleModel, data_dir: Path) -> None:
    """D1: the child SIGKILLed mid-job: the message is redelivered and the job ends with one SUCCEEDED,
    one variant and one artifact per step."""
    log = data_dir / "worker.log"
    version = _register_eagerly(maintainer, quality_mlp)
    job = services.optimization_request(version=version, user=maintainer, plan=PLAN, bench=BENCH)
    wait_for(lambda: version.variants.count() >= 2, 240, "the first step's variant", log)
    children = wait_for(lambda: child_pids(worker.pid), 30, "the pool child", log)
    assert not _finished(job.pk), "the job ended before the kill; the test needs a longer plan"
    os.kill(children[0], signal.SIGKILL)
    job = wait_for(lambda: _finished(job.pk), 300, "the job to end after the kill", log)
    assert job.status == "SUCCEEDED", job.error
    assert job.attempts == 2
    names = sorted(version.variants.values_list("name", flat=True))
    assert names == ["int8-dynamic", "int8-pruned", "int8-static", "original", "pruned"]
    artifacts = list((data_dir / "media" / "variants").rglob("*.onnx"))
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
