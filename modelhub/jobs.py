"""The job state machine: QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED, and its outbox.

A job is a database row first: the row is the outbox, the broker only a way to wake a worker.
``job_dispatch`` sends a QUEUED job (a broker that is down leaves it QUEUED); a worker takes it
with ``job_claim``, a conditional UPDATE, and holds it under a lease it renews while it works;
``job_finish`` records the end exactly once; ``jobs_reconcile`` (beat, every minute) re-sends
what the broker lost and gives RUNNING jobs of dead workers back to the queue. Uploaded versions
waiting for their inspection ride the same outbox.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from modelhub import queue, roles
from modelhub.errors import Invalid
from modelhub.models import ModelVersion, OptimizationJob

LEASE_SECONDS = 300


def intake_dispatch(*, version_id: int) -> None:
    """Send a PENDING version to its inspection (the reconciler re-sends it when this fails)."""
    queue.send(queue.INTAKE, version_id, what=f"intake of version {version_id}")


def job_dispatch(*, job_id: int) -> None:
    """Hand a QUEUED job to the broker; when the broker is down the job stays QUEUED and the
    reconciler sends it later (the database is the outbox, the broker is not)."""
    job = OptimizationJob.objects.filter(pk=job_id, status=OptimizationJob.Status.QUEUED).first()
    if job is None:
        return
    task = queue.BENCHMARK if job.kind == OptimizationJob.Kind.BENCHMARK else queue.OPTIMIZE
    OptimizationJob.objects.filter(pk=job_id).update(dispatched_at=timezone.now())
    if not queue.send(task, job_id, what=f"job {job_id}"):
        OptimizationJob.objects.filter(pk=job_id, status=OptimizationJob.Status.QUEUED).update(dispatched_at=None)


def job_claim(*, job_id: int, worker: str, task_id: str = "") -> OptimizationJob | None:
    """Atomically move a job to RUNNING for this worker; None when it is not ours to run.

    A job is ours when it is QUEUED, or RUNNING under this very task id (the broker re-delivered
    the message because the process running it died: acks_late), or RUNNING with a lapsed lease.
    Each claim counts an attempt, so a job that kills its worker every time ends FAILED.
    """
    now = timezone.now()
    running = Q(status=OptimizationJob.Status.RUNNING)
    ours = Q(status=OptimizationJob.Status.QUEUED) | (running & Q(lease_expires_at__lt=now))
    if task_id:
        ours |= running & Q(lease_owner__endswith=f"|{task_id}")
    claimed = OptimizationJob.objects.filter(ours, pk=job_id).update(
        status=OptimizationJob.Status.RUNNING, attempts=F("attempts") + 1, lease_owner=f"{worker[:150]}|{task_id}",
        lease_expires_at=now + timezone.timedelta(seconds=LEASE_SECONDS), started_at=now,
    )
    if not claimed:
        return None
    job = OptimizationJob.objects.get(pk=job_id)
    if job.attempts > settings.MODELHUB_JOB_MAX_ATTEMPTS:
        job_finish(job=job, status=OptimizationJob.Status.FAILED,
                   error=f"Gave up after {job.attempts - 1} attempts: the worker died each time (see the event log).")
        return None
    return job


def job_event(*, job: OptimizationJob, message: str, progress: float | None = None, step: str | None = None,
              level: str = "info", **data: Any) -> None:
    """Append to the job's event log, update progress and renew the worker's lease."""
    now = timezone.now()
    job.events = [*job.events, {"at": now.isoformat(), "level": level, "message": message, **data}]
    fields = {"events": job.events, "lease_expires_at": now + timezone.timedelta(seconds=LEASE_SECONDS)}
    if progress is not None:
        job.progress = fields["progress"] = round(min(100.0, max(0.0, progress)), 1)
    if step is not None:
        job.current_step = fields["current_step"] = step[:200]
    OptimizationJob.objects.filter(pk=job.pk).update(**fields)


def job_renew_lease(*, job_id: int, owner: str) -> bool:
    """Extend a RUNNING job's lease while ``owner`` still holds it (the heartbeat of a running job)."""
    until = timezone.now() + timezone.timedelta(seconds=LEASE_SECONDS)
    return bool(OptimizationJob.objects.filter(pk=job_id, status=OptimizationJob.Status.RUNNING, lease_owner=owner)
                .update(lease_expires_at=until))


def job_finish(*, job: OptimizationJob, status: str, error: str = "", result: dict[str, Any] | None = None) -> bool:
    """Record the end of a RUNNING job exactly once (a conditional update: re-runs change nothing)."""
    fields: dict[str, Any] = {"status": status, "error": error, "finished_at": timezone.now(), "lease_owner": "",
                              "lease_expires_at": None, "current_step": ""}
    if status == OptimizationJob.Status.SUCCEEDED:
        fields["progress"] = 100.0
    if result is not None:
        fields["result"] = result
    done = OptimizationJob.objects.filter(pk=job.pk, status=OptimizationJob.Status.RUNNING).update(**fields)
    job.refresh_from_db()
    return bool(done)


def job_cancel(*, job: OptimizationJob, user: Any) -> OptimizationJob:
    """Cancel a job: a QUEUED one at once, a RUNNING one at its next step."""
    roles.require(user, roles.MAINTAINER, "cancel jobs")
    if job.is_finished:
        raise Invalid(f"Job {job.pk} has already ended ({job.status}).")
    OptimizationJob.objects.filter(pk=job.pk, status=OptimizationJob.Status.QUEUED).update(
        status=OptimizationJob.Status.CANCELLED, finished_at=timezone.now())
    OptimizationJob.objects.filter(pk=job.pk, status=OptimizationJob.Status.RUNNING).update(cancel_requested=True)
    job.refresh_from_db()
    return job


def job_fail(*, job_id: int, reason: str) -> None:
    """Mark a job FAILED with a reason (used when its task dies with an unexpected error)."""
    job = OptimizationJob.objects.filter(pk=job_id).first()
    if job is not None:
        job_finish(job=job, status=OptimizationJob.Status.FAILED, error=reason)


def jobs_reconcile(*, stale_after_s: int = 600) -> dict[str, int]:
    """Re-send work the broker lost and recover jobs whose worker died.

    QUEUED jobs never sent (broker down) or sent long ago (broker flushed) are dispatched again;
    RUNNING jobs whose lease ran out go back to QUEUED (the claim counts attempts, so a poison job
    ends FAILED); PENDING versions are re-sent for inspection.
    """
    now = timezone.now()
    stale = now - timezone.timedelta(seconds=stale_after_s)
    queued = OptimizationJob.objects.filter(status=OptimizationJob.Status.QUEUED)
    resend = list(queued.filter(dispatched_at__isnull=True).values_list("pk", flat=True))
    resend += list(queued.filter(dispatched_at__lt=stale).values_list("pk", flat=True))
    lost = list(OptimizationJob.objects.filter(status=OptimizationJob.Status.RUNNING, lease_expires_at__lt=now)
                .values_list("pk", flat=True))
    OptimizationJob.objects.filter(pk__in=lost, status=OptimizationJob.Status.RUNNING).update(
        status=OptimizationJob.Status.QUEUED, lease_owner="", lease_expires_at=None)
    for job_id in [*resend, *lost]:
        job_dispatch(job_id=job_id)
    pending = list(ModelVersion.objects.filter(status=ModelVersion.Status.PENDING, created_at__lt=now
                                               - timezone.timedelta(seconds=60)).values_list("pk", flat=True))
    for version_id in pending:
        intake_dispatch(version_id=version_id)
    return {"resent": len(resend), "recovered": len(lost), "intake": len(pending)}
