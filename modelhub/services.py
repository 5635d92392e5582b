"""Every state change of the lifecycle: ``<entity>_<action>(*, ...)`` functions.

Services check roles, refuse illegal transitions with a clear error, run in transactions and
enqueue background work with ``transaction.on_commit`` so that no task ever sees a row that was
rolled back. Views, admin actions, commands and tasks all come through here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from modelhub import artifacts, gate, roles, selectors
from modelhub.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from modelhub.models import (
    Dataset,
    Deployment,
    GoverningProfile,
    GoverningProfileChange,
    ModelFormat,
    ModelVersion,
    OptimizationJob,
    PromotionEvent,
    ReadinessProfile,
    RegisteredModel,
    Variant,
)
from workers import formats

log = logging.getLogger(__name__)

LEASE_SECONDS = 300
EXTENSIONS = {"onnx": "onnx", "torchscript": "pt", "archive": "zip"}
# Names a client chooses that travel in URLs and name variants (plan steps): letters, digits, "_",
# "-" and single inner dots. The API routes use the same pattern, so "..", "/", "\\", ":", "#" or
# "%" never reach a lookup, a directory name or a header.
NAME_PATTERN = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"
NAME_MAX_LENGTH = 100


def _require(user: Any, role: str, action: str) -> None:
    if not roles.has_role(user, role):
        raise Forbidden(f"You need the {role} role to {action}.")


# --- models --------------------------------------------------------------------------------


def model_create(*, name: str, owner: Any, description: str = "", task: str = "auto",
                 team: Any = None) -> RegisteredModel:
    """Register a new model name owned by ``owner`` (a maintainer)."""
    _require(owner, roles.MAINTAINER, "register models")
    if RegisteredModel.objects.filter(name=name).exists():
        raise Conflict(f"A model named {name!r} already exists.")
    return RegisteredModel.objects.create(name=name, owner=owner, description=description, task=task, team=team)


# --- versions ------------------------------------------------------------------------------


def version_upload(*, model: RegisteredModel, stream: IO[bytes], filename: str, user: Any) -> tuple[ModelVersion, bool]:
    """Stream an uploaded model file in, refuse what is plainly unsafe, and queue its inspection.

    Returns ``(version, created)``: the same file uploaded twice for one model gives back the
    existing version. Full inspection (checker, loading) happens in the worker, never here.
    """
    _require(user, roles.MAINTAINER, "upload model versions")
    try:
        received = artifacts.receive(stream, max_bytes=settings.MODELHUB_MAX_MODEL_BYTES, what="model file")
    except artifacts.TooLarge as exc:
        raise TooLarge(str(exc)) from None
    try:
        kind = _sniff(received.path, filename)
        if kind == "torchscript" and not roles.can_upload_torchscript(user):
            raise Forbidden("TorchScript archives contain code; uploading them needs the "
                            "'upload TorchScript' permission. Upload an ONNX export instead.")
        existing = model.versions.exclude(status=ModelVersion.Status.FAILED).filter(sha256=received.sha256).first()
        if existing:
            return existing, False
        key = artifacts.save_file(received.path, f"incoming/{received.sha256}/upload.{EXTENSIONS[kind]}")
    finally:
        received.path.unlink(missing_ok=True)
    fmt = ModelFormat.TORCHSCRIPT if kind == "torchscript" else ModelFormat.ONNX
    try:
        with transaction.atomic():
            version = _version_create(model, fmt, key, received, filename, user)
    except IntegrityError:
        raise Conflict("The same file is being uploaded right now; try again in a moment.") from None
    return version, True


def _sniff(path: Path, filename: str) -> str:
    try:
        return formats.sniff(path, filename)
    except formats.FormatError as exc:
        raise Invalid(str(exc)) from None


def _version_create(model: RegisteredModel, fmt: str, key: str, received: artifacts.Received, filename: str,
                    user: Any) -> ModelVersion:
    RegisteredModel.objects.select_for_update().get(pk=model.pk)  # serialize version numbering per model
    number = (model.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    version = ModelVersion.objects.create(
        model=model, number=number, format=fmt, original_filename=filename[:255], storage_key=key,
        sha256=received.sha256, size_bytes=received.size, created_by=user,
    )
    transaction.on_commit(lambda: _dispatch_intake(version.pk))
    return version


def _dispatch_intake(version_id: int) -> None:
    from workers import tasks

    _send(lambda: tasks.intake_version_task.delay(version_id), f"intake of version {version_id}")


def version_intake(*, version_id: int) -> None:
    """Inspect a PENDING version in a resource-limited child process; mark it READY or FAILED.

    Idempotent: a version that is no longer PENDING is left alone. A refused file is deleted.
    """
    version = ModelVersion.objects.filter(pk=version_id, status=ModelVersion.Status.PENDING).first()
    if version is None:
        return
    with artifacts.scratch(f"intake-{version_id}") as scratch:
        try:
            root, inspection = _inspect(version, scratch)
            stored = _store_model_files(version, root, inspection)
        except formats.FormatError as exc:
            _version_fail(version, str(exc))
            return
    artifacts.delete([version.storage_key])
    _version_ready(version, inspection, stored)


def _inspect(version: ModelVersion, scratch: Path) -> tuple[Path, Any]:
    """Inspect in a limited child; an archive is also extracted there (into ``scratch``).
    Returns the directory the inspection's file paths are relative to, and the inspection."""
    source = artifacts.local_path(version.storage_key)
    inspection = formats.inspect_in_subprocess(source, workdir=scratch, max_bytes=settings.MODELHUB_MAX_MODEL_BYTES,
                                               memory_mb=settings.MODELHUB_INTAKE_MEMORY_MB,
                                               sandbox=settings.MODELHUB_SANDBOX != "off")
    return (Path(inspection.root) if inspection.root else source.parent), inspection


def _store_model_files(version: ModelVersion, root: Path, inspection: Any) -> list[dict[str, Any]]:
    """Copy every file of the model (external data included) under ``models/<sha256>/``."""
    base = f"models/{version.sha256}"
    stored = []
    # The primary model file goes first: variants and serving load files[0].
    for rel, sha, size in sorted(inspection.files, key=lambda entry: entry[0] != inspection.primary):
        key = artifacts.save_file(root / rel, f"{base}/{rel}")
        stored.append({"path": rel, "key": key, "sha256": sha, "size": size})
    return stored


def _version_fail(version: ModelVersion, reason: str) -> None:
    ModelVersion.objects.filter(pk=version.pk, status=ModelVersion.Status.PENDING).update(
        status=ModelVersion.Status.FAILED, status_reason=reason)
    artifacts.delete([version.storage_key])


def _version_ready(version: ModelVersion, inspection: Any, stored: list[dict[str, Any]]) -> None:
    primary = stored[0]
    with transaction.atomic():
        updated = ModelVersion.objects.filter(pk=version.pk, status=ModelVersion.Status.PENDING).update(
            status=ModelVersion.Status.READY, status_reason="", storage_key=primary["key"], files=stored,
            signature=inspection.signature.to_dict(), inspection=inspection.to_dict(),
        )
        if not updated:
            return
        Variant.objects.get_or_create(
            version=version, name=Variant.ORIGINAL,
            defaults={
                "pass_name": Variant.ORIGINAL, "config": {}, "config_hash": Variant.ORIGINAL, "format": version.format,
                "runtime": Variant.Runtime.TORCH if version.format == ModelFormat.TORCHSCRIPT else Variant.Runtime.ONNXRUNTIME,
                "storage_key": primary["key"], "sha256": primary["sha256"],
                "size_bytes": sum(f["size"] for f in stored), "files": stored,
            },
        )


# --- datasets and profiles -----------------------------------------------------------------


def dataset_upload(*, version: ModelVersion, purpose: str, stream: IO[bytes], filename: str, user: Any) -> Dataset:
    """Check an .npz dataset against the version's signature and store it."""
    _require(user, roles.MAINTAINER, "upload datasets")
    if purpose not in Dataset.Purpose.values:
        raise Invalid(f"Unknown dataset purpose {purpose!r}; use one of {', '.join(Dataset.Purpose.values)}.")
    if version.status != ModelVersion.Status.READY:
        raise Invalid(f"Version {version.number} is {version.status}; datasets can be added to READY versions only.")
    if version.datasets.filter(purpose=purpose).exists():
        raise Conflict(f"Version {version.number} already has a {purpose} dataset.")
    try:
        received = artifacts.receive(stream, max_bytes=settings.MODELHUB_MAX_DATASET_BYTES, what="dataset")
    except artifacts.TooLarge as exc:
        raise TooLarge(str(exc)) from None
    try:
        signature = formats.Signature.from_dict(version.signature)
        info = formats.check_dataset(received.path, signature, max_bytes=settings.MODELHUB_MAX_DATASET_BYTES,
                                     purpose=purpose)
        key = artifacts.save_file(received.path, f"datasets/{received.sha256}/data.npz")
    except formats.FormatError as exc:
        raise Invalid(str(exc)) from None
    finally:
        received.path.unlink(missing_ok=True)
    with transaction.atomic():
        _learn_input_shapes(version, info.arrays)
        return Dataset.objects.create(
            version=version, purpose=purpose, original_filename=filename[:255], storage_key=key,
            sha256=received.sha256, size_bytes=received.size, sample_count=info.sample_count, arrays=info.arrays,
            has_labels=info.has_labels, created_by=user,
        )


def _learn_input_shapes(version: ModelVersion, arrays: dict[str, dict[str, Any]]) -> None:
    """TorchScript declares no input shapes; the first dataset tells them (batch axis kept symbolic)."""
    signature = version.signature
    unknown = [spec for spec in signature.get("inputs", []) if "?" in spec["shape"]]
    if not unknown:
        return
    for spec in unknown:
        spec["shape"] = ["batch", *arrays[spec["name"]]["shape"][1:]]
    ModelVersion.objects.filter(pk=version.pk).update(signature=signature)


def profile_create(*, user: Any, **fields: Any) -> ReadinessProfile:
    """Create a readiness profile (maintainers)."""
    _require(user, roles.MAINTAINER, "create readiness profiles")
    if ReadinessProfile.objects.filter(name=fields.get("name")).exists():
        raise Conflict(f"A profile named {fields.get('name')!r} already exists.")
    return ReadinessProfile.objects.create(**fields)


# --- jobs ----------------------------------------------------------------------------------


def optimization_request(*, version: ModelVersion, user: Any, profile: ReadinessProfile | None = None,
                         plan: list[dict[str, Any]] | None = None, auto_promote: bool = False,
                         bench: dict[str, Any] | None = None) -> OptimizationJob:
    """Queue an optimization job for a READY version: the given plan, or the default one."""
    _require(user, roles.MAINTAINER, "start optimization jobs")
    if version.status != ModelVersion.Status.READY:
        raise Invalid(f"Version {version.number} is {version.status}; only READY versions can be optimized.")
    steps = _plan_for(version, profile, plan)
    options = {"auto_promote": bool(auto_promote), "bench": bench or {}}
    with transaction.atomic():
        job = OptimizationJob.objects.create(version=version, profile=profile, plan=steps, options=options,
                                             created_by=user)
        transaction.on_commit(lambda: job_dispatch(job_id=job.pk))
    return job


def _plan_for(version: ModelVersion, profile: ReadinessProfile | None, plan: list[dict[str, Any]] | None) -> list[dict]:
    from workers import planner

    try:
        if plan is None:
            steps = planner.default_plan(
                target=profile.target if profile else "cpu", task=selectors.model_task(version),
                source_format=version.format, has_calibration=version.dataset("calibration") is not None,
                has_training=version.dataset("training") is not None,
            )
        else:
            steps = [planner.PlanStep.from_dict(step) for step in plan]
        planner.validate_plan(steps)
    except (planner.PlanError, KeyError, TypeError, ValueError) as exc:
        raise Invalid(f"The plan is not valid: {exc}") from None
    for step in steps:
        if not name_is_valid(step.name):
            raise Invalid(f"The plan is not valid: step name {step.name!r} must be 1-{NAME_MAX_LENGTH} letters, "
                          "digits, '_', '-' or inner dots (it names the variant).")
    return [step.to_dict() for step in steps]


def name_is_valid(name: Any) -> bool:
    """True for a name that may travel in a URL and name a variant (see NAME_PATTERN)."""
    return isinstance(name, str) and len(name) <= NAME_MAX_LENGTH and re.fullmatch(NAME_PATTERN, name) is not None


def benchmark_request(*, variant: Variant, user: Any, profile: ReadinessProfile | None = None,
                      bench: dict[str, Any] | None = None) -> OptimizationJob:
    """Queue a re-measurement of one variant (benchmark, accuracy and verdict)."""
    _require(user, roles.MAINTAINER, "request benchmarks")
    if variant.status != Variant.Status.READY:
        raise Invalid(f"Variant {variant.label} is {variant.status} and cannot be benchmarked.")
    with transaction.atomic():
        job = OptimizationJob.objects.create(
            version=variant.version, kind=OptimizationJob.Kind.BENCHMARK, profile=profile, created_by=user,
            options={"variants": [variant.pk], "bench": bench or {}},
        )
        transaction.on_commit(lambda: job_dispatch(job_id=job.pk))
    return job


def job_dispatch(*, job_id: int) -> None:
    """Hand a QUEUED job to the broker; when the broker is down the job stays QUEUED and the
    reconciler sends it later (the database is the outbox, the broker is not)."""
    from workers import tasks

    job = OptimizationJob.objects.filter(pk=job_id, status=OptimizationJob.Status.QUEUED).first()
    if job is None:
        return
    task = tasks.benchmark_job_task if job.kind == OptimizationJob.Kind.BENCHMARK else tasks.optimize_version_task
    OptimizationJob.objects.filter(pk=job_id).update(dispatched_at=timezone.now())
    if not _send(lambda: task.delay(job_id), f"job {job_id}"):
        OptimizationJob.objects.filter(pk=job_id, status=OptimizationJob.Status.QUEUED).update(dispatched_at=None)


def _send(send: Callable[[], Any], what: str) -> bool:
    from modelhub.celery import app

    if app.conf.task_always_eager:
        send()  # the local default runs work in-process; its errors are the caller's errors
        return True
    try:
        send()
    except Exception as exc:  # noqa: BLE001 - any broker failure means "not sent yet", never a lost request
        log.warning("could not send %s to the broker (%s); the reconciler will retry", what, exc)
        return False
    return True


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
    _require(user, roles.MAINTAINER, "cancel jobs")
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
        _dispatch_intake(version_id)
    return {"resent": len(resend), "recovered": len(lost), "intake": len(pending)}


# --- deployments ---------------------------------------------------------------------------


def governing_profile_set(*, model: RegisteredModel, profile: ReadinessProfile, by: Any, alias: str = "production",
                          reason: str = "") -> GoverningProfile:
    """Make ``profile`` govern ``model@alias`` (maintainers). Changing a profile already set needs
    a reason; every change is audited (GoverningProfileChange)."""
    _require(by, roles.MAINTAINER, "set governing profiles")
    if not name_is_valid(alias):
        raise Invalid(f"Alias {alias!r} must be 1-{NAME_MAX_LENGTH} letters, digits, '_', '-' or inner dots.")
    with transaction.atomic():
        current = GoverningProfile.objects.select_for_update().filter(model=model, alias=alias).first()
        if current is not None and current.profile_id == profile.pk:
            return current
        if current is not None and not reason.strip():
            raise Invalid(f"{model.name}@{alias} is governed by {current.profile.name!r}; changing it needs a reason.")
        GoverningProfileChange.objects.create(model=model, alias=alias, to_profile=profile.name, by=by, reason=reason,
                                              from_profile=current.profile.name if current else "")
        row, _ = GoverningProfile.objects.update_or_create(model=model, alias=alias,
                                                           defaults={"profile": profile, "set_by": by})
    return row


def deployment_promote(*, model: RegisteredModel, variant: Variant, by: Any, alias: str = "production",
                       reason: str = "", force: bool = False, kind: str = PromotionEvent.Kind.PROMOTE) -> PromotionEvent:
    """Make ``variant`` answer for ``model@alias``: only through the alias's gate (a passing judgment
    under its governing profile, see ``modelhub.gate``) unless an approver forces it with a reason;
    warm its runtime first, switch atomically, audit which it was, and tell every web process."""
    _require(by, roles.APPROVER, "promote or roll back variants")
    if variant.version.model_id != model.pk:
        raise Invalid(f"Variant {variant.label} does not belong to model {model.name}.")
    if variant.status != Variant.Status.READY or variant.version.status != ModelVersion.Status.READY:
        raise Invalid(f"Variant {variant.label} is not READY and cannot serve.")
    decision = gate.decide(variant=variant, alias=alias)
    if not decision.passed and not force:
        raise Invalid(f"Variant {variant.label} cannot be promoted to {alias}: {decision.reason}. "
                      "An approver may force it with a reason.")
    if force and not reason.strip():
        raise Invalid("A forced promotion needs a written reason.")
    _warm(variant)
    return _switch(model, variant, by=by, alias=alias, reason=reason, kind=kind, decision=decision)


def _switch(model: RegisteredModel, variant: Variant, *, by: Any, alias: str, reason: str, kind: str,
            decision: gate.Decision) -> PromotionEvent:
    with transaction.atomic():
        current = Deployment.objects.select_for_update().filter(model=model, alias=alias).first()
        previous = current.variant if current else None
        if current:
            current.variant = variant
            current.save(update_fields=["variant", "updated_at"])
        else:
            Deployment.objects.create(model=model, alias=alias, variant=variant)
        event = PromotionEvent.objects.create(
            model=model, alias=alias, kind=kind, from_variant=previous, to_variant=variant, by=by, reason=reason,
            forced=not decision.passed, verdict=decision.result.verdict if decision.result else {},
            profile_name=decision.profile.name if decision.profile else "",
            judgment=decision.result if decision.passed else None)
        transaction.on_commit(lambda: _routing_changed(model))
    return event


def deployment_rollback(*, model: RegisteredModel, by: Any, alias: str = "production", reason: str = "",
                        force: bool = False) -> PromotionEvent:
    """Go back to the last known good: the most recent earlier variant of ``model@alias`` that passes
    the alias's governing profile. When none does, only an approver's forced rollback (with a reason)
    goes to the variant that served before the current one."""
    _require(by, roles.APPROVER, "promote or roll back variants")  # before saying whether there is one
    plan = gate.rollback_plan(model=model, alias=alias)
    if not plan.earlier:
        raise Invalid(f"{model.name}@{alias} has no earlier variant to roll back to.")
    if plan.target is not None:
        return deployment_promote(model=model, variant=plan.target, by=by, alias=alias,
                                  kind=PromotionEvent.Kind.ROLLBACK, reason=reason or "roll back to the last known good")
    if not force:
        raise Invalid(f"No earlier variant of {model.name}@{alias} passes its governing profile. An approver may "
                      f"force a rollback to {plan.forced_target.label} with a reason.")
    return deployment_promote(model=model, variant=plan.forced_target, by=by, alias=alias, force=True, reason=reason,
                              kind=PromotionEvent.Kind.ROLLBACK)


def _warm(variant: Variant) -> None:
    """Load the variant's runtime before the switch so the first request after it is not slow."""
    from predictions import runtime

    try:
        runtime.warm(variant)
    except Exception as exc:  # noqa: BLE001 - a variant that cannot load must not be promoted
        raise Invalid(f"Variant {variant.label} could not be loaded: {exc}") from None


def _routing_changed(model: RegisteredModel) -> None:
    """Tell every web process (through the routing generation counter) that the alias moved."""
    from predictions import cache

    cache.bump_generation(model.name)


def ensure_visible(*, user: Any, model: RegisteredModel) -> None:
    """Raise NotFound (never Forbidden: existence is not revealed) when the user cannot see it."""
    if not selectors.model_visible_to(user).filter(pk=model.pk).exists():
        raise NotFound(f"No model named {model.name!r}.")
