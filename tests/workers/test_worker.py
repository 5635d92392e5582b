"""Jobs through a real Celery worker on a real Redis, including a worker killed mid-job."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from modelhub import services
from modelhub.models import OptimizationJob, Variant
from tests import factories
from tests.real_services import child_pids, wait_for
from workers.samples import SampleModel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker, pytest.mark.redis, pytest.mark.slow]
PLAN = [
    {"name": "int8-dynamic", "pass_name": "quantize_dynamic", "options": {}},
    {"name": "int8-static", "pass_name": "quantize_static", "options": {}},
    {"name": "pruned", "pass_name": "prune_structured", "options": {"ratio": 0.5}},
    {"name": "int8-pruned", "pass_name": "quantize_dynamic", "options": {}, "source": "pruned"},
]
BENCH = {"time_budget_s": 0.3, "batch_sizes": [1, 8]}


def test_a_job_runs_through_a_real_worker_and_records_its_variants(
        worker: subprocess.Popen[bytes], maintainer: Any, quality_mlp: SampleModel, data_dir: Path) -> None:
    version = factories.version(maintainer, quality_mlp, purposes=factories.BOTH)  # intake here, the job on the worker
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
    version = factories.version(maintainer, quality_mlp, purposes=factories.BOTH)  # intake here, the job on the worker
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


def _finished(job_id: int) -> OptimizationJob | None:
    job = OptimizationJob.objects.get(pk=job_id)
    return job if job.is_finished else None
