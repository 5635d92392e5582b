"""The nightly re-benchmark through a real Celery worker on a real Redis."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from modelhub import services, tasks
from modelhub.models import BenchmarkResult
from tests import factories
from tests.real_services import wait_for
from workers.samples import SampleModel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker, pytest.mark.redis, pytest.mark.slow]
BENCH = {"time_budget_s": 0.2, "batch_sizes": [1]}
NIGHT = date(2025, 6, 10)


def _promote_after_a_job(maintainer: Any, approver: Any, sample: SampleModel) -> None:
    """Register, optimize (in this process) under production's governing profile and promote
    int8-dynamic over the original."""
    profile = services.profile_create(user=maintainer, name="cpu-small", max_p95_ms=1000.0, batch_size=1, threads=1)
    version = factories.optimized_version(
        maintainer, sample, profile=profile, bench=BENCH, purposes=factories.BOTH, reason="",
        plan=[{"name": "int8-dynamic", "pass_name": "quantize_dynamic", "options": {}}])
    for name in ("original", "int8-dynamic"):
        factories.promote(version.variants.get(name=name), approver)


def _finished_nightly() -> list[BenchmarkResult]:
    return list(BenchmarkResult.objects.filter(kind="nightly", night=NIGHT, pending=False))


def test_the_nightly_task_runs_on_a_real_worker_and_twice_sent_measures_each_variant_once(
        worker: subprocess.Popen[bytes], maintainer: Any, approver: Any, quality_mlp: SampleModel,  # noqa: F811
        data_dir: Path) -> None:
    """D8: the nightly task sent twice (two beat processes) to a real worker gives one result per variant."""
    _promote_after_a_job(maintainer, approver, quality_mlp)
    # Two beat processes (or a beat and a retry) send the same night twice.
    for _ in range(2):
        tasks.nightly_rebenchmark_task.apply_async(kwargs={"night": NIGHT.isoformat()})
    log = data_dir / "worker.log"
    wait_for(lambda: len(_finished_nightly()) == 2, 240, "two nightly results", log)
    wait_for(lambda: _succeeded(log) == 2, 120, "both tasks to end", log)
    results = BenchmarkResult.objects.filter(kind="nightly", night=NIGHT)
    assert sorted(results.values_list("variant__name", flat=True)) == ["int8-dynamic", "original"]
    for result in results:
        assert result.p95_ms > 0 and result.passed is True and result.profile.name == "cpu-small"
        assert result.report["config"]["time_budget_s"] == 0.2
        assert result.statistic == "p50" and result.intervals["p50"]["low"] <= result.p50_ms
    assert _succeeded(log) == 2


def _succeeded(log: Path) -> int:
    return sum("nightly_rebenchmark_task" in line and "succeeded" in line for line in log.read_text().splitlines())
