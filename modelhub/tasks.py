"""Thin Celery tasks: they take ids, call one service, and record unexpected deaths.

They live on the Django side (the engine in ``workers/`` knows nothing of Celery or Django); their
names are ``modelhub.queue``'s, which kept the first release's ``workers.tasks.*`` for routes and
the beat rows.

Each service claims its row atomically, so a task delivered twice (acks_late re-delivery after
a worker died) does nothing harmful.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded

from modelhub import job_runner, jobs, nightly, queue, services


class JobTask(Task):
    """A task whose unexpected failure marks its job FAILED with the reason."""

    def on_failure(self, exc: Exception, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        job_id = args[0] if args else kwargs.get("job_id")
        if job_id is not None:
            jobs.job_fail(job_id=job_id, reason=_failure_reason(exc))


def _failure_reason(exc: Exception) -> str:
    if isinstance(exc, TimeLimitExceeded):
        # The pool killed the child at the hard limit: the job's own soft-limit handling never ran.
        return (f"Stopped at the hard time limit ({exc.args[0] if exc.args else '?'} s): the worker process "
                "running it was replaced. Run fewer passes or raise MODELHUB_TASK_SOFT_LIMIT_S.")
    return f"The worker hit an unexpected error: {exc!r}"


def _run_job(task: Task, job_id: int) -> None:
    # Limits travel in the message (the publisher's settings); the worker's own are the fallback.
    _hard, soft = task.request.timelimit or (None, None)
    job_runner.job_run(job_id=job_id, worker=task.request.hostname or "local", task_id=task.request.id or "",
                       soft_limit_s=None if task.request.is_eager else soft or task.soft_time_limit)


@shared_task(name=queue.INTAKE)
def intake_version_task(version_id: int) -> None:
    """Inspect an uploaded version and mark it READY or FAILED."""
    services.version_intake(version_id=version_id)


@shared_task(bind=True, base=JobTask, name=queue.OPTIMIZE)
def optimize_version_task(self: Task, job_id: int) -> None:
    """Run an optimization job (passes, then evaluation)."""
    _run_job(self, job_id)


@shared_task(bind=True, base=JobTask, name=queue.BENCHMARK)
def benchmark_job_task(self: Task, job_id: int) -> None:
    """Run a benchmark job (re-measure chosen variants) on the benchmark queue."""
    _run_job(self, job_id)


@shared_task(name=queue.RECONCILE)
def reconcile_jobs_task() -> dict[str, int]:
    """Re-send work the broker lost and recover jobs of dead workers (run by beat every minute)."""
    return jobs.jobs_reconcile()


@shared_task(bind=True, name=queue.NIGHTLY)
def nightly_rebenchmark_task(self: Task, night: str | None = None, model: str | None = None) -> dict[str, Any]:
    """Re-benchmark production variants and their fallback chains for a night (default: today, UTC)
    on the benchmark queue; each (variant, night) is measured once however often this runs."""
    # The task id names the claims, so this task re-delivered takes its own unfinished ones back.
    owner = f"{self.request.hostname or 'local'}|{self.request.id}" if self.request.id else ""
    report = nightly.nightly_run(night=date.fromisoformat(night) if night else None, model=model, owner=owner)
    return report.to_dict()
