"""Background jobs under faults (RELIABILITY.md D2, D3, D4, D5, D6, D7, D9, D10, D11, D12, D13).

D1 (a worker child SIGKILLed mid-job) is in tests/workers/test_worker.py. The broker here is a
redis-server private to each test, so a test may stop, flush or restart it; workers are real
`celery worker` processes on the test database. The only fake is the clock (leases, staleness).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import pickle
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from modelhub import artifacts, job_runner, jobs, services
from modelhub.models import ModelVersion, OptimizationJob, Variant
from tests import factories
from tests.onnx_graphs import tiny_onnx_bytes
from tests.real_services import QUEUES, ROOT, RedisServer, child_pids, running_worker, stop_worker, wait_for
from workers import formats
from workers.samples import SampleModel

pytestmark = pytest.mark.django_db(transaction=True)  # real workers, threads and brokers see commits
FAST_BENCH = {"time_budget_s": 0.1, "batch_sizes": [1]}
LONG_PLAN = [  # about ten seconds of passes on quality_mlp: long enough to be interrupted
    {"name": "int8-dynamic", "pass_name": "quantize_dynamic", "options": {}},
    {"name": "int8-static", "pass_name": "quantize_static", "options": {}},
    {"name": "pruned", "pass_name": "prune_structured", "options": {"ratio": 0.5}},
    {"name": "int8-pruned", "pass_name": "quantize_dynamic", "options": {}, "source": "pruned"},
    {"name": "distilled", "pass_name": "distill", "options": {"epochs": 40, "max_time_s": 20.0}},
]
LONG_PLAN_DATA = ("validation", "calibration", "training")  # quality_mlp's files for every step of the long plan


class Clock:
    """django.utils.timezone.now, shifted by what a test advances it."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    from django.utils import timezone

    real_now = timezone.now
    fake = Clock()
    monkeypatch.setattr(timezone, "now", lambda: real_now() + fake.offset)
    return fake


@pytest.fixture
def eager() -> Iterator[Any]:
    """Switch this process back to running tasks in-process (after a broker fixture switched it off)."""
    from modelhub import queue

    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(queue.eager())


def _status(job_id: int) -> OptimizationJob:
    return OptimizationJob.objects.get(pk=job_id)


def _finished(job_id: int) -> OptimizationJob | None:
    job = _status(job_id)
    return job if job.is_finished else None


def _messages(server: RedisServer, queue: str) -> list[dict[str, Any]]:
    """The Celery messages waiting in a queue: headers plus decoded JSON body."""
    found = []
    for raw in server.client().lrange(queue, 0, -1):
        envelope = json.loads(raw)
        body = json.loads(base64.b64decode(envelope["body"]))
        found.append({"task": envelope["headers"]["task"], "args": body[0]})
    return found


def _unacked(server: RedisServer) -> int:
    return int(server.client().hlen("unacked"))


def _variant_files_match(version: ModelVersion) -> None:
    """Every stored variant file is whole: its bytes hash to the sha256 its row records."""
    for variant in version.variants.exclude(name=Variant.ORIGINAL).filter(status=Variant.Status.READY):
        assert formats.sha256_file(artifacts.local_path(variant.storage_key)) == variant.sha256, variant.name


# --- D2 / D3: dead workers and poison jobs --------------------------------------------------------


@pytest.mark.slow
def test_a_running_job_whose_lease_lapsed_is_requeued_by_the_reconciler_and_completes(
        maintainer: Any, data_dir: Path, memory_broker: None, clock: Clock, eager: Any) -> None:
    """D2: a worker took the job and vanished with its message acked (reject_on_worker_lost off, or a
    lost host): once the lease lapses the reconciler puts the job back to QUEUED and it runs to an end."""
    version = factories.upload(maintainer, tiny_onnx_bytes(), name="m")
    job = services.optimization_request(version=version, user=maintainer, plan=[], bench=FAST_BENCH)
    assert jobs.job_claim(job_id=job.pk, worker="gone@host", task_id="t-1") is not None
    assert jobs.jobs_reconcile()["recovered"] == 0  # the lease still holds
    clock.advance(jobs.LEASE_SECONDS - 5)
    assert jobs.jobs_reconcile()["recovered"] == 0 and _status(job.pk).status == "RUNNING"
    clock.advance(10)
    eager()  # the reconciler's re-send now runs the job in this process
    assert jobs.jobs_reconcile()["recovered"] == 1
    job = _status(job.pk)
    assert job.status == "SUCCEEDED", job.error
    assert job.attempts == 2 and job.lease_owner == "" and job.lease_expires_at is None


@pytest.mark.slow
def test_a_job_whose_worker_dies_every_time_ends_failed_after_the_attempt_limit(
        maintainer: Any, data_dir: Path, memory_broker: None, clock: Clock, settings: Any) -> None:
    """D3 (database side): claim, die, lease lapses, reconcile, again; the attempt counter stops the loop
    with FAILED and a reason, and the reconciler never touches the job again."""
    settings.MODELHUB_JOB_MAX_ATTEMPTS = 3
    version = factories.upload(maintainer, tiny_onnx_bytes(), name="m")
    job = services.optimization_request(version=version, user=maintainer, plan=[], bench=FAST_BENCH)
    claims = 0
    for attempt in range(1, 11):  # capped: the limit is 3
        claimed = jobs.job_claim(job_id=job.pk, worker=f"w{attempt}@host", task_id=f"t-{attempt}")
        if claimed is None:
            break
        claims += 1
        assert claimed.attempts == attempt
        clock.advance(jobs.LEASE_SECONDS + 1)  # killed by the OOM killer: no word, no ack
        assert jobs.jobs_reconcile()["recovered"] == 1
    job = _status(job.pk)
    assert claims == 3 and job.status == "FAILED"
    assert "Gave up after 3 attempts" in job.error
    clock.advance(3600)
    assert jobs.jobs_reconcile() == {"resent": 0, "recovered": 0, "intake": 0}
    assert _status(job.pk).status == "FAILED"


@pytest.mark.redis
@pytest.mark.worker
@pytest.mark.slow
def test_a_poison_job_that_kills_its_worker_child_each_time_ends_failed_and_its_message_stops(
        maintainer: Any, quality_mlp: SampleModel, data_dir: Path, broker: RedisServer) -> None:
    """D3 (real worker): the job's child is SIGKILLed (as the OOM killer does) on every attempt; with
    acks_late + reject_on_worker_lost the message comes back each time, the claim counts attempts, and
    at the limit the job is FAILED and the message acknowledged: no endless redelivery."""
    version = factories.version(maintainer, quality_mlp, purposes=LONG_PLAN_DATA)
    log = data_dir / "worker.log"
    with running_worker(broker.url, data_dir, MODELHUB_JOB_MAX_ATTEMPTS="2") as worker:
        job = services.optimization_request(version=version, user=maintainer, plan=LONG_PLAN, bench=FAST_BENCH)
        for attempt in (1, 2):
            wait_for(lambda a=attempt: _status(job.pk).status == "RUNNING" and _status(job.pk).attempts == a,
                     180, f"attempt {attempt} to start", log)
            child = wait_for(lambda: child_pids(worker.pid), 30, "the pool child", log)
            os.kill(child[0], signal.SIGKILL)
        job = wait_for(lambda: _finished(job.pk), 180, "the job to give up", log)
        assert job.status == "FAILED" and "Gave up after 2 attempts" in job.error
        wait_for(lambda: broker.queued() == 0 and _unacked(broker) == 0, 60, "the message to be acknowledged", log)
        time.sleep(2)  # a re-delivered message would show up here
        assert _status(job.pk).attempts == 3 and broker.queued() == 0


# --- D4: one execution at a time ------------------------------------------------------------------


@pytest.mark.slow
def test_a_step_outlasting_the_lease_is_never_taken_over_by_a_second_worker(
        maintainer: Any, quality_mlp: SampleModel, data_dir: Path, memory_broker: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """D4: one distillation step runs more than twice the job's lease (3 s here, 300 s in production) with
    no step boundary to renew it, while the reconciler and a second delivery of the job keep trying. The
    worker's heartbeat holds the lease: no recovery, no second claim; one attempt, one SUCCEEDED."""
    monkeypatch.setattr(jobs, "LEASE_SECONDS", 3)
    version = factories.version(maintainer, quality_mlp, purposes=LONG_PLAN_DATA)
    plan = [{"name": "distilled", "pass_name": "distill",
             "options": {"epochs": 100_000, "patience": 100_000, "max_time_s": 8.0}}]
    job = services.optimization_request(version=version, user=maintainer, plan=plan, bench=FAST_BENCH)
    failures: list[BaseException] = []

    def first_worker() -> None:
        try:
            job_runner.job_run(job_id=job.pk, worker="first@host", task_id="t-1")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=first_worker, name="first-worker")
    thread.start()
    recovered, second_claims = 0, 0
    try:
        wait_for(lambda: _status(job.pk).current_step == "distilled", 120, "the distillation step")
        for _ in range(200):  # capped at about a minute; the step takes about 8 s
            if not thread.is_alive():
                break
            recovered += jobs.jobs_reconcile()["recovered"]
            second_claims += jobs.job_claim(job_id=job.pk, worker="second@host", task_id="t-2") is not None
            time.sleep(0.3)
    finally:
        thread.join(timeout=180)
    assert failures == [] and not thread.is_alive()
    assert (recovered, second_claims) == (0, 0)
    job = _status(job.pk)
    assert (job.status, job.attempts) == ("SUCCEEDED", 1), job.error
    step = next(e for e in job.events if e["message"].startswith("distilled: ") and "duration_s" in e)
    assert step["duration_s"] > 2 * jobs.LEASE_SECONDS  # the case at hand: the step outlived the lease
    distilled = version.variants.get(name="distilled")
    assert distilled.results.filter(job=job).count() == 1


# --- D5: time limits ------------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.worker
@pytest.mark.slow
def test_a_job_over_the_soft_time_limit_fails_with_a_clear_reason_and_leaves_no_temp_files(
        maintainer: Any, quality_mlp: SampleModel, data_dir: Path, broker: RedisServer) -> None:
    """D5 (soft): a 2 s soft limit and a plan of many seconds: FAILED naming the limit and the setting,
    no scratch directory left in the work dir, and the worker takes the next job.

    Celery 5.7 puts the publisher's limits into each message, so the message carries them here (web and
    worker share MODELHUB_TASK_SOFT_LIMIT_S in a deployment)."""
    from modelhub import tasks

    version = factories.version(maintainer, quality_mlp, purposes=LONG_PLAN_DATA)
    log = data_dir / "worker.log"
    with running_worker(broker.url, data_dir, MODELHUB_TASK_SOFT_LIMIT_S="2"):
        job = OptimizationJob.objects.create(version=version, plan=LONG_PLAN, options={"bench": FAST_BENCH},
                                             created_by=maintainer)
        tasks.optimize_version_task.apply_async((job.pk,), soft_time_limit=2, time_limit=100)
        job = wait_for(lambda: _finished(job.pk), 110, "the job to stop at the soft limit", log)
        assert job.status == "FAILED", job.status
        assert "time limit (2 s)" in job.error and "MODELHUB_TASK_SOFT_LIMIT_S" in job.error
        assert not list((data_dir / "work").glob("job-*"))
        _variant_files_match(version)
        quick = services.optimization_request(version=version, user=maintainer, plan=[], bench=FAST_BENCH)
        quick = wait_for(lambda: _finished(quick.pk), 110, "the next job", log)
        assert quick.status == "SUCCEEDED", quick.error


@pytest.mark.redis
@pytest.mark.worker
@pytest.mark.slow
def test_a_job_killed_at_the_hard_time_limit_is_failed_and_the_next_task_still_runs(
        maintainer: Any, quality_mlp: SampleModel, data_dir: Path, broker: RedisServer) -> None:
    """D5 (hard): the child is stuck where no Python runs (SIGSTOP stands in for a hang in native code),
    so the soft limit cannot stop it; at the hard limit the pool kills it, the job is FAILED naming the
    hard limit, a new child starts and the next job succeeds."""
    from modelhub import tasks

    version = factories.version(maintainer, quality_mlp, purposes=LONG_PLAN_DATA)
    log = data_dir / "worker.log"
    with running_worker(broker.url, data_dir) as worker:
        job = OptimizationJob.objects.create(version=version, plan=LONG_PLAN, options={"bench": FAST_BENCH},
                                             created_by=maintainer)
        tasks.optimize_version_task.apply_async((job.pk,), soft_time_limit=3, time_limit=6)
        wait_for(lambda: _status(job.pk).status == "RUNNING", 120, "the job to start", log)
        stuck = wait_for(lambda: child_pids(worker.pid), 30, "the pool child", log)
        os.kill(stuck[0], signal.SIGSTOP)
        job = wait_for(lambda: _finished(job.pk), 120, "the job to be killed at the hard limit", log)
        assert job.status == "FAILED" and "hard time limit (6" in job.error, job.error
        wait_for(lambda: child_pids(worker.pid) and child_pids(worker.pid) != stuck, 60, "a new child", log)
        quick = services.optimization_request(version=version, user=maintainer, plan=[], bench=FAST_BENCH)
        quick = wait_for(lambda: _finished(quick.pk), 120, "the next job", log)
        assert quick.status == "SUCCEEDED", quick.error


# --- D6 / D7: the broker is not the record of work -------------------------------------------------


@pytest.mark.redis
@pytest.mark.slow
def test_with_redis_down_an_optimize_request_answers_202_at_once_and_is_sent_when_redis_returns(
        maintainer: Any, api: APIClient, data_dir: Path, broker: RedisServer, clock: Clock) -> None:
    """D6: no hung request: 202 within seconds, the job stored QUEUED with dispatched_at empty (the database
    is the outbox); an upload stays PENDING the same way. Once Redis is back the reconciler sends both."""
    factories.upload(maintainer, tiny_onnx_bytes(), name="m")
    broker.stop()
    started = time.monotonic()
    response = api.post("/api/v1/models/m/versions/1/optimize", {"plan": []}, format="json")
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.json()
    assert elapsed < 5, f"the request took {elapsed:.1f} s with the broker down"  # a bound on a hang, not a speed
    job = _status(response.json()["id"])
    assert job.status == "QUEUED" and job.dispatched_at is None
    upload = io.BytesIO(tiny_onnx_bytes().replace(b"add", b"adx"))
    upload.name = "model.onnx"
    response = api.post("/api/v1/models/m/versions", {"file": upload}, format="multipart")
    assert response.status_code == 202 and response.json()["status"] == "PENDING"
    broker.start()
    clock.advance(61)  # versions are re-sent for inspection after a minute
    assert jobs.jobs_reconcile() == {"resent": 1, "recovered": 0, "intake": 1}
    assert _status(job.pk).dispatched_at is not None
    assert _messages(broker, "optimize") == [{"task": "workers.tasks.optimize_version_task", "args": [job.pk]}]
    assert _messages(broker, "default") == [{"task": "workers.tasks.intake_version_task",
                                             "args": [ModelVersion.objects.get(number=2).pk]}]


@pytest.mark.redis
@pytest.mark.worker
@pytest.mark.slow
def test_after_flushall_the_reconciler_resends_stale_queued_jobs_and_none_is_lost(
        maintainer: Any, data_dir: Path, broker: RedisServer, clock: Clock) -> None:
    """D7: two jobs sit in Redis; FLUSHALL (or a restart without persistence) loses both messages. The
    reconciler re-sends QUEUED jobs dispatched longer than its staleness ago, and a worker runs both."""
    version = factories.upload(maintainer, tiny_onnx_bytes(), name="m")
    # two different requests: identical ones would be one job (G8)
    queued = [services.optimization_request(version=version, user=maintainer, plan=[],
                                            bench={**FAST_BENCH, "time_budget_s": budget}) for budget in (0.2, 0.3)]
    assert broker.queued("optimize") == 2
    broker.client().flushall()
    assert broker.queued() == 0
    assert jobs.jobs_reconcile()["resent"] == 0  # not yet stale: the messages may still be on their way
    clock.advance(601)
    assert jobs.jobs_reconcile()["resent"] == 2
    assert sorted(m["args"][0] for m in _messages(broker, "optimize")) == sorted(j.pk for j in queued)
    log = data_dir / "worker.log"
    with running_worker(broker.url, data_dir):
        for job in queued:
            finished = wait_for(lambda j=job: _finished(j.pk), 120, f"job {job.pk}", log)
            assert finished.status == "SUCCEEDED" and finished.attempts == 1, finished.error


# --- D9: transactions -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.redis
def test_a_job_requested_in_a_rolled_back_transaction_sends_nothing(
        maintainer: Any, data_dir: Path, broker: RedisServer) -> None:
    """D9: the task is sent on commit only: a rollback leaves no row and no message; before the commit
    nothing is in Redis either, after it exactly one message."""
    version = factories.upload(maintainer, tiny_onnx_bytes(), name="m")
    with pytest.raises(RuntimeError), transaction.atomic():
        services.optimization_request(version=version, user=maintainer, plan=[])
        raise RuntimeError("the request failed after queueing the job")
    assert OptimizationJob.objects.count() == 0 and broker.queued() == 0
    with transaction.atomic():
        job = services.optimization_request(version=version, user=maintainer, plan=[])
        assert broker.queued() == 0
    assert _messages(broker, "optimize") == [{"task": "workers.tasks.optimize_version_task", "args": [job.pk]}]


def test_a_task_for_a_row_that_does_not_exist_returns_quietly(data_dir: Path) -> None:
    """D9: a message that outlived its row (deleted, rolled back elsewhere) does nothing and fails nothing."""
    from modelhub import tasks

    for task in (tasks.optimize_version_task, tasks.benchmark_job_task, tasks.intake_version_task):
        result = task.apply(args=(987654321,))
        assert result.successful(), (task.name, result.traceback)
    jobs.job_fail(job_id=987654321, reason="gone")
    assert OptimizationJob.objects.count() == 0


# --- D10: the broker connection drops mid-task ------------------------------------------------------


@pytest.mark.redis
@pytest.mark.worker
@pytest.mark.slow
def test_a_broker_lost_mid_job_cancels_the_task_and_the_rerun_gives_one_result_per_variant_and_one_promotion(
        make_user: Any, quality_mlp: SampleModel, data_dir: Path, broker: RedisServer, clock: Clock) -> None:
    """D10: the broker goes away while a worker runs an auto-promoting job (Redis stopped, then started
    empty). Policy worker_cancel_long_running_tasks_on_connection_loss: the worker terminates the task it
    can no longer acknowledge and reconnects; nothing redelivers it, so the reconciler takes the job back
    once its lease lapses. The second attempt ends SUCCEEDED: one result per variant, one promotion."""
    from collections import Counter

    from django.conf import settings

    from modelhub.models import BenchmarkResult, PromotionEvent

    assert settings.CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS is True
    owner = make_user("mia", "maintainer", "approver")  # auto-promotion acts as the job's creator
    version = factories.version(owner, quality_mlp, purposes=LONG_PLAN_DATA)
    lenient = factories.profile("lenient", max_size_mb=50.0)  # auto-promotion needs the governing profile's pass
    factories.govern(version, lenient, owner)
    log = data_dir / "worker.log"
    with running_worker(broker.url, data_dir) as worker:
        job = services.optimization_request(version=version, user=owner, plan=LONG_PLAN[:4], bench=FAST_BENCH,
                                            auto_promote=True, profile=lenient)
        wait_for(lambda: version.variants.count() >= 2, 180, "the first variant", log)
        first_child = wait_for(lambda: child_pids(worker.pid), 30, "the pool child", log)
        assert not _finished(job.pk), "the job ended before the broker went away; the test needs a longer plan"
        broker.stop()
        wait_for(lambda: "cannot be acknowledged after a connection loss" in log.read_text(), 60,
                 "the worker to cancel the task", log)
        broker.start()
        wait_for(lambda: "Connected to" in log.read_text().rsplit("Connection to broker lost", 1)[-1], 60,
                 "the worker to reconnect", log)
        wait_for(lambda: child_pids(worker.pid) and child_pids(worker.pid) != first_child, 60, "a new child", log)
        assert (_status(job.pk).status, _status(job.pk).attempts) == ("RUNNING", 1)  # cancelled, not finished
        clock.advance(jobs.LEASE_SECONDS + 1)
        assert jobs.jobs_reconcile()["recovered"] == 1
        job = wait_for(lambda: _finished(job.pk), 180, "the second attempt", log)
        assert worker.poll() is None
    assert (job.status, job.attempts) == ("SUCCEEDED", 2), job.error
    per_variant = Counter(BenchmarkResult.objects.filter(job=job).values_list("variant__name", flat=True))
    assert len(per_variant) == version.variants.filter(status=Variant.Status.READY).count()
    assert set(per_variant.values()) == {1}
    assert job.result["best"] and PromotionEvent.objects.filter(model=version.model).count() == 1
    _variant_files_match(version)


# --- D11: queues ----------------------------------------------------------------------------------


def test_long_and_short_work_go_to_separate_queues_taken_one_at_a_time() -> None:
    """D11: optimize, benchmark and everything else (intake, reconcile) have their own queues; a worker
    takes one message at a time and acknowledges it after the work (so a long job holds no short one)."""
    import modelhub.tasks  # noqa: F401 - registers the tasks
    from modelhub.celery import app

    def queue(name: str) -> str:
        return app.amqp.router.route({}, name, args=(1,), kwargs={})["queue"].name

    assert queue("workers.tasks.optimize_version_task") == "optimize"
    assert queue("workers.tasks.benchmark_job_task") == "benchmark"
    assert queue("workers.tasks.nightly_rebenchmark_task") == "benchmark"
    assert queue("workers.tasks.intake_version_task") == "default"
    assert queue("workers.tasks.reconcile_jobs_task") == "default"
    assert {queue(name) for name in app.tasks if name.startswith("workers.")} <= set(QUEUES)
    conf = app.conf
    assert conf.worker_prefetch_multiplier == 1 and conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.task_soft_time_limit < conf.task_time_limit < conf.broker_transport_options["visibility_timeout"]


def test_the_deployment_runs_each_queue_class_on_its_own_worker() -> None:
    """D11: in docker-compose no worker consumes optimize together with benchmark or default, so an
    hour-long optimization delays neither a measurement nor an intake or the reconciler."""
    import yaml

    services_ = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    consumed: dict[str, set[str]] = {}
    for name, spec in services_.items():
        command = spec.get("command") or ""
        words = command.split() if isinstance(command, str) else list(command)
        if "worker" in words and "-Q" in words:
            consumed[name] = set(words[words.index("-Q") + 1].split(","))
    assert set().union(*consumed.values()) >= set(QUEUES)
    for queues in consumed.values():
        assert "optimize" not in queues or queues == {"optimize"}, consumed


# --- D12: the worker accepts JSON only --------------------------------------------------------------


class _Canary:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.path)!r}, 'w').write('pwned')",))


@pytest.mark.redis
@pytest.mark.worker
@pytest.mark.slow
def test_a_pickle_message_published_straight_to_redis_is_refused_by_the_worker(
        maintainer: Any, data_dir: Path, broker: RedisServer, tmp_path: Path) -> None:
    """D12: a task message with content_type application/x-python-serialize, built with kombu as an
    attacker on the broker would, is never deserialized: no canary, the job it names stays QUEUED, the
    message is gone, and the next JSON task runs."""
    from kombu import Connection, Exchange, Queue

    from modelhub import tasks

    version = factories.upload(maintainer, tiny_onnx_bytes(), name="m")
    job = OptimizationJob.objects.create(version=version, plan=[], options={"bench": FAST_BENCH},
                                         created_by=maintainer)
    canary = tmp_path / "canary"
    task_id = str(uuid.uuid4())
    body = pickle.dumps(((job.pk, _Canary(canary)), {}, {"callbacks": None, "errbacks": None, "chain": None,
                                                         "chord": None}), protocol=2)
    headers = {"lang": "py", "task": "workers.tasks.optimize_version_task", "id": task_id, "root_id": task_id,
               "parent_id": None, "group": None, "argsrepr": "(?)", "kwargsrepr": "{}", "origin": "attacker",
               "retries": 0, "eta": None, "expires": None, "timelimit": [None, None], "shadow": None}
    exchange = Exchange("optimize", type="direct")
    with Connection(broker.url) as connection:
        connection.Producer().publish(body, exchange=exchange, routing_key="optimize", headers=headers,
                                      content_type="application/x-python-serialize", content_encoding="binary",
                                      declare=[Queue("optimize", exchange, routing_key="optimize")])
    assert broker.queued("optimize") == 1
    log = data_dir / "worker.log"
    with running_worker(broker.url, data_dir):
        wait_for(lambda: broker.queued("optimize") == 0, 120, "the worker to take the message", log)
        tasks.benchmark_job_task.delay(987654321)  # a JSON task after it: proves the worker went on
        wait_for(lambda: "benchmark_job_task" in log.read_text() and "succeeded" in log.read_text(), 120,
                 "the next task", log)
    text = log.read_text()
    assert "ContentDisallowed" in text or "Refusing to deserialize" in text, text[-3000:]
    assert not canary.exists()
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("QUEUED", 0)
    assert broker.queued() == 0 and _unacked(broker) == 0


# --- D13: deploys -----------------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.worker
@pytest.mark.slow
def test_sigterm_during_a_job_lets_it_finish_before_the_worker_exits(
        maintainer: Any, quality_mlp: SampleModel, data_dir: Path, broker: RedisServer) -> None:
    """D13: warm shutdown: the running job ends SUCCEEDED (or goes back to the queue), never half-done,
    and every stored variant file is whole."""
    version = factories.version(maintainer, quality_mlp, purposes=LONG_PLAN_DATA)
    log = data_dir / "worker.log"
    with running_worker(broker.url, data_dir) as worker:
        job = services.optimization_request(version=version, user=maintainer, plan=LONG_PLAN[:4],
                                            bench=FAST_BENCH)
        wait_for(lambda: version.variants.count() >= 2, 180, "the first variant", log)
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail("the worker did not exit within 300 s of SIGTERM")
        stop_worker(worker)
    job = _status(job.pk)
    requeued = job.status == "QUEUED" or (job.status == "RUNNING" and broker.queued("optimize") == 1)
    assert job.status == "SUCCEEDED" or requeued, (job.status, job.error)
    _variant_files_match(version)


@pytest.mark.slow
def test_a_half_written_artifact_left_by_a_killed_worker_is_replaced_not_reused(
        maintainer: Any, data_dir: Path) -> None:
    """D13: storage keys are content addressed, so a retry finds the key a killed worker was writing; a
    file of the wrong size there is what the kill left, and is replaced instead of being recorded."""
    version = factories.upload(maintainer, tiny_onnx_bytes(), name="m")
    plan = [{"name": "g", "pass_name": "graph", "options": {}}]
    services.optimization_request(version=version, user=maintainer, plan=plan, bench=FAST_BENCH)
    first = version.variants.get(name="g")
    stored = artifacts.local_path(first.storage_key)
    whole = stored.read_bytes()
    first.results.all().delete()
    first.delete()
    stored.write_bytes(whole[: len(whole) // 2])  # what a SIGKILL in the middle of the copy leaves
    job = services.optimization_request(version=version, user=maintainer, plan=plan, bench=FAST_BENCH)
    again = version.variants.get(name="g")
    assert _status(job.pk).status == "SUCCEEDED"
    assert again.storage_key == first.storage_key  # same content, same key: the case that matters
    assert stored.read_bytes() == whole
    _variant_files_match(version)
