"""Every state change of the lifecycle: ``<entity>_<action>(*, ...)`` functions.

Services check roles, refuse illegal transitions with a clear error, run in transactions and
enqueue background work with ``transaction.on_commit`` so that no task ever sees a row that was
rolled back. Views, admin actions, commands and tasks all come through here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max

from modelhub import artifacts, gate, jobs, roles, selectors, signals
from modelhub.errors import Conflict, Forbidden, Invalid, NotFound, Throttled, TooLarge, Unavailable
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
from workers import formats, planner
from workers.evaluation import readiness
from workers.formats.sandboxed import check_dataset_in_subprocess

log = logging.getLogger(__name__)

EXTENSIONS = {"onnx": "onnx", "torchscript": "pt", "archive": "zip"}
# Names a client chooses that travel in URLs and name variants (plan steps): letters, digits, "_",
# "-" and single inner dots. The API routes use the same pattern, so "..", "/", "\\", ":", "#" or
# "%" never reach a lookup, a directory name or a header.
NAME_PATTERN = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"
NAME_MAX_LENGTH = 100
ACTIVE_JOB_STATUSES = (OptimizationJob.Status.QUEUED, OptimizationJob.Status.RUNNING)


# --- models --------------------------------------------------------------------------------


def model_create(*, name: str, owner: Any, description: str = "", task: str = "auto",
                 team: Any = None) -> RegisteredModel:
    """Register a new model name owned by ``owner`` (a maintainer)."""
    roles.require(owner, roles.MAINTAINER, "register models")
    conflict = Conflict(f"A model named {name!r} already exists.", field="name")
    if RegisteredModel.objects.filter(name=name).exists():
        raise conflict
    return _insert_once(RegisteredModel, conflict, name=name, owner=owner, description=description, task=task,
                        team=team)


def _insert_once(model: type, conflict: Conflict, **fields: Any) -> Any:
    """One atomic INSERT; the unique constraint, not the check before it, decides a race: the
    loser's IntegrityError becomes ``conflict`` (409), never a 500."""
    try:
        with transaction.atomic():
            return model.objects.create(**fields)
    except IntegrityError:
        raise conflict from None


# --- versions ------------------------------------------------------------------------------


def version_upload(*, model: RegisteredModel, stream: IO[bytes], filename: str, user: Any) -> tuple[ModelVersion, bool]:
    """Stream an uploaded model file in, refuse what is plainly unsafe, and queue its inspection.

    Returns ``(version, created)``: the same file uploaded twice for one model gives back the
    existing version. Full inspection (checker, loading) happens in the worker, never here.
    """
    roles.require(user, roles.MAINTAINER, "upload model versions")
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
        # Staged per version: the intake deletes its own staged file, never one another pending
        # version (same bytes, another model or a concurrent upload) still points to.
        key = _store(received.path, f"incoming/{received.sha256}/{uuid.uuid4().hex}/upload.{EXTENSIONS[kind]}")
    finally:
        received.path.unlink(missing_ok=True)
    fmt = ModelFormat.TORCHSCRIPT if kind == "torchscript" else ModelFormat.ONNX
    try:
        with transaction.atomic():
            version = _version_create(model, fmt, key, received, filename, user)
    except IntegrityError:
        artifacts.delete([key])  # no row points to it
        raise Conflict("The same file is being uploaded right now; try again in a moment.") from None
    return version, True


def _store(path: Path, key: str) -> str:
    """Save an upload; an unreachable bucket is answered 503 with nothing recorded (an object is
    stored whole or not at all, and no row is written before it is)."""
    try:
        return artifacts.save_file(path, key)
    except artifacts.StorageUnavailable as exc:
        raise Unavailable(f"{exc} Nothing was stored; try the upload again shortly.") from None


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
    transaction.on_commit(lambda: jobs.intake_dispatch(version_id=version.pk))
    return version


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
    source = artifacts.local_path(version.storage_key, version.sha256)
    inspection = formats.inspect_in_subprocess(source, workdir=scratch, max_bytes=settings.MODELHUB_MAX_MODEL_BYTES,
                                               max_output_elements=settings.MODELHUB_SERVING_MAX_OUTPUT_ELEMENTS,
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


TAG_PATTERN = r"[a-z0-9]+(?:[-_.][a-z0-9]+)*"
TAG_MAX_LENGTH = 40
TAGS_MAX = 20
NOTES_MAX_LENGTH = 10_000
SOURCE_MAX_LENGTH = 500


def version_annotate(*, version: ModelVersion, by: Any, notes: str | None = None, tags: list[str] | None = None,
                     source: str | None = None) -> ModelVersion:
    """Set a version's notes, tags and source (maintainers); what is None stays as it is.

    Tags are short lower-case slugs (one each, at most TAGS_MAX); the source is free text or a URL
    of at most SOURCE_MAX_LENGTH characters, shown as it is and never fetched."""
    roles.require(by, roles.MAINTAINER, "annotate model versions")
    fields: dict[str, Any] = {}
    if notes is not None:
        fields["notes"] = _checked_text(notes, NOTES_MAX_LENGTH, "notes")
    if tags is not None:
        fields["tags"] = _checked_tags(tags)
    if source is not None:
        fields["source"] = _checked_text(source, SOURCE_MAX_LENGTH, "source")
    if fields:
        ModelVersion.objects.filter(pk=version.pk).update(**fields)
        for key, value in fields.items():
            setattr(version, key, value)
    return version


def _checked_text(value: Any, limit: int, field: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{field} must be text.", field=field)
    value = value.strip()
    if len(value) > limit:
        raise Invalid(f"{field} is {len(value)} characters long; at most {limit} are kept.", field=field)
    return value


def _checked_tags(tags: Any) -> list[str]:
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise Invalid("tags must be a list of short labels.", field="tags")
    cleaned = list(dict.fromkeys(tag.strip().lower() for tag in tags if tag.strip()))  # order kept, repeats once
    if len(cleaned) > TAGS_MAX:
        raise Invalid(f"{len(cleaned)} tags given; a version keeps at most {TAGS_MAX}.", field="tags")
    for tag in cleaned:
        if len(tag) > TAG_MAX_LENGTH or re.fullmatch(TAG_PATTERN, tag) is None:
            raise Invalid(f"Tag {tag[:60]!r} is not a short slug: 1-{TAG_MAX_LENGTH} lower-case letters or digits, "
                          "joined by '-', '_' or '.'.", field="tags")
    return cleaned


# --- datasets and profiles -----------------------------------------------------------------


def dataset_upload(*, version: ModelVersion, purpose: str, stream: IO[bytes], filename: str, user: Any) -> Dataset:
    """Check an .npz dataset against the version's signature and store it."""
    roles.require(user, roles.MAINTAINER, "upload datasets")
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
        info = _check_dataset(received.path, version, purpose)
        key = _store(received.path, f"datasets/{received.sha256}/data.npz")
    except formats.FormatError as exc:
        raise Invalid(str(exc)) from None
    finally:
        received.path.unlink(missing_ok=True)
    try:
        with transaction.atomic():
            _learn_input_shapes(version, info.arrays)
            return Dataset.objects.create(
                version=version, purpose=purpose, original_filename=filename[:255], storage_key=key,
                sha256=received.sha256, size_bytes=received.size, sample_count=info.sample_count,
                arrays=info.arrays, has_labels=info.has_labels, created_by=user,
            )
    except IntegrityError:  # a concurrent upload of the same purpose won (one_dataset_per_purpose)
        raise Conflict(f"Version {version.number} already has a {purpose} dataset.", field="purpose") from None


def _check_dataset(path: Path, version: ModelVersion, purpose: str) -> formats.DatasetInfo:
    """Check a received dataset in the sandboxed intake child: its declared sizes before anything is
    unpacked, then its values under the child's memory limit; the web process never inflates it."""
    return check_dataset_in_subprocess(
        path, formats.Signature.from_dict(version.signature), max_bytes=settings.MODELHUB_MAX_DATASET_BYTES,
        max_unpacked_bytes=settings.MODELHUB_MAX_DATASET_UNPACKED_BYTES, purpose=purpose,
        memory_mb=settings.MODELHUB_INTAKE_MEMORY_MB, sandbox=settings.MODELHUB_SANDBOX != "off")


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
    roles.require(user, roles.MAINTAINER, "create readiness profiles")
    problems = readiness.profile_problems(fields)
    if problems:
        field, message = next(iter(problems.items()))
        raise Invalid(message, field=field, fields=problems)
    conflict = Conflict(f"A profile named {fields.get('name')!r} already exists.", field="name")
    if ReadinessProfile.objects.filter(name=fields.get("name")).exists():
        raise conflict
    return _insert_once(ReadinessProfile, conflict, **fields)


# --- jobs ----------------------------------------------------------------------------------


def optimization_request(*, version: ModelVersion, user: Any, profile: ReadinessProfile | None = None,
                         plan: list[dict[str, Any]] | None = None, auto_promote: bool = False,
                         bench: dict[str, Any] | None = None) -> OptimizationJob:
    """Queue an optimization job for a READY version: the given plan, or the default one."""
    roles.require(user, roles.MAINTAINER, "start optimization jobs")
    if version.status != ModelVersion.Status.READY:
        raise Invalid(f"Version {version.number} is {version.status}; only READY versions can be optimized.")
    steps = _plan_for(version, profile, plan)
    options = {"auto_promote": bool(auto_promote), "bench": bench or {}}
    return _job_create(version=version, kind=OptimizationJob.Kind.OPTIMIZE, profile=profile, plan=steps,
                       options=options, created_by=user)


def _plan_for(version: ModelVersion, profile: ReadinessProfile | None, plan: list[dict[str, Any]] | None) -> list[dict]:
    try:
        if plan is None:
            steps = selectors.default_plan_for(version, profile)
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
    roles.require(user, roles.MAINTAINER, "request benchmarks")
    if variant.status != Variant.Status.READY:
        raise Invalid(f"Variant {variant.label} is {variant.status} and cannot be benchmarked.")
    return _job_create(version=variant.version, kind=OptimizationJob.Kind.BENCHMARK, profile=profile, plan=[],
                       options={"variants": [variant.pk], "bench": bench or {}}, created_by=user)


def _job_create(**fields: Any) -> OptimizationJob:
    """Queue a job, or hand back the identical one still QUEUED or RUNNING (marked ``reused``).

    The database decides, not a check before the insert: the partial unique constraint on
    ``request_hash`` lets one of many concurrent identical requests insert, the others find its row."""
    key = _request_hash(fields)
    existing = _active_job(key)
    if existing is not None:
        return existing
    _check_queue_cap(fields["created_by"])
    try:
        with transaction.atomic():
            job = OptimizationJob.objects.create(request_hash=key, **fields)
            transaction.on_commit(lambda: jobs.job_dispatch(job_id=job.pk))
    except IntegrityError:
        existing = _active_job(key)
        if existing is None:  # it ended between our insert and this read: the request may be sent again
            raise Conflict("An identical job finished just now; send the request again to queue a new one.") from None
        return existing
    return job


def _request_hash(fields: dict[str, Any]) -> str:
    """What makes two job requests identical: version, kind, profile, plan and options."""
    profile = fields.get("profile")
    what = [fields["version"].pk, fields["kind"], profile.pk if profile else None, fields["plan"], fields["options"]]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _active_job(key: str) -> OptimizationJob | None:
    job = OptimizationJob.objects.filter(request_hash=key, status__in=ACTIVE_JOB_STATUSES).first()
    if job is not None:
        job.reused = True
    return job


def _check_queue_cap(user: Any) -> None:
    """Refuse a user's job beyond MODELHUB_MAX_QUEUED_JOBS_PER_USER waiting ones (429, Retry-After)."""
    if user is None or not getattr(user, "pk", None):
        return
    cap = settings.MODELHUB_MAX_QUEUED_JOBS_PER_USER
    waiting = OptimizationJob.objects.filter(created_by=user, status=OptimizationJob.Status.QUEUED).count()
    if waiting >= cap:
        raise Throttled(f"You have {waiting} jobs waiting (the limit is {cap}, MODELHUB_MAX_QUEUED_JOBS_PER_USER); "
                        "wait for some to start, or cancel some, then ask again.", retry_after_s=30,
                        queued=waiting, limit=cap)


# --- deployments ---------------------------------------------------------------------------


def governing_profile_set(*, model: RegisteredModel, profile: ReadinessProfile, by: Any, alias: str = "production",
                          reason: str = "") -> GoverningProfile:
    """Make ``profile`` govern ``model@alias`` (maintainers). Changing a profile already set needs
    a reason; every change is audited (GoverningProfileChange)."""
    roles.require(by, roles.MAINTAINER, "set governing profiles")
    if not name_is_valid(alias):
        raise Invalid(f"Alias {alias!r} must be 1-{NAME_MAX_LENGTH} letters, digits, '_', '-' or inner dots.")
    try:
        return _governing_profile_write(model, profile, by, alias, reason)
    except IntegrityError:  # a concurrent first setting of this alias won (one_governing_profile_per_alias)
        raise Conflict(f"The governing profile of {model.name}@{alias} was set concurrently; "
                       "read it and send the request again if it should change.") from None


def _governing_profile_write(model: RegisteredModel, profile: ReadinessProfile, by: Any, alias: str,
                             reason: str) -> GoverningProfile:
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
    switch atomically, audit which it was, and announce the switch (``signals.routing_changed``):
    each serving process warms the new primary itself before it routes to it."""
    roles.require(by, roles.APPROVER, "promote or roll back variants")
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
    _require_intact(variant)
    return _switch(model, variant, by=by, alias=alias, reason=reason, kind=kind, decision=decision)


def _require_intact(variant: Variant) -> None:
    """Refuse a variant whose stored bytes are not the ones measured: a damaged file would otherwise
    reach every serving process (they would refuse it too, by hash, and fall back)."""
    try:
        artifacts.local_model(variant)  # every file of it, each checked against its sha256
        intact = bool(variant.sha256)
    except (OSError, artifacts.Corrupt):
        intact = False
    if not intact:
        raise Invalid(f"The stored file of variant {variant.label} is missing or does not match its sha256; "
                      "it cannot be promoted. Re-run the job that made it.")


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
        transaction.on_commit(lambda: signals.routing_changed.send(sender=Deployment, model_name=model.name))
    return event


def deployment_rollback(*, model: RegisteredModel, by: Any, alias: str = "production", reason: str = "",
                        force: bool = False) -> PromotionEvent:
    """Go back to the last known good: the most recent earlier variant of ``model@alias`` that passes
    the alias's governing profile. When none does, only an approver's forced rollback (with a reason)
    goes to the variant that served before the current one."""
    roles.require(by, roles.APPROVER, "promote or roll back variants")  # before saying whether there is one
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


def variant_batching_set(*, variant: Variant, enabled: bool, by: Any, alias: str = "production") -> Variant:
    """Turn server-side batching of a variant on (only when ``gate.batching_advice`` says it pays)
    or off (always allowed, approvers); every serving process picks it up with the routing."""
    roles.require(by, roles.APPROVER, "change how variants are served")
    if enabled:
        advice = gate.batching_advice(variant=variant, alias=alias)
        if not advice.pays:
            raise Invalid(f"Batching does not pay for {variant.label}: {advice.reason}.")
    model_name = variant.version.model.name
    with transaction.atomic():
        Variant.objects.filter(pk=variant.pk).update(serving_batching=enabled)
        transaction.on_commit(lambda: signals.routing_changed.send(sender=Variant, model_name=model_name))
    variant.serving_batching = enabled
    return variant


def ensure_visible(*, user: Any, model: RegisteredModel) -> None:
    """Raise NotFound (never Forbidden: existence is not revealed) when the user cannot see it."""
    if not selectors.model_visible_to(user).filter(pk=model.pk).exists():
        raise NotFound(f"No model named {model.name!r}.")
