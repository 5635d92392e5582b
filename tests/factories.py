"""Registry objects made through the services, as a user would make them: users holding roles, models,
uploaded versions with their datasets, readiness profiles, a governing profile, jobs run to their end
and promotions; then the team's sample model that the dashboard and browser tests start from.

The work a service leaves for its commit (``transaction.on_commit``: the intake of an upload, a job,
the announcement of a promotion) runs in this process before a factory returns, in a test that
commits (``transaction=True``) as in one rolled back at its end (plain ``django_db``), where nothing
commits: see ``committed``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test import TestCase

from modelhub import queue, services
from modelhub.models import ModelVersion, OptimizationJob, PromotionEvent, ReadinessProfile, RegisteredModel, Variant
from modelhub.roles import sync_role_groups
from workers.samples import SampleModel

# Short runs: one batch size, a fifth of a second per variant.
QUICK_BENCH = {"time_budget_s": 0.2, "batch_sizes": [1]}
INT8 = [{"name": "int8", "pass_name": "quantize_dynamic", "options": {"per_channel": True}}]
VALIDATION, BOTH = ("validation",), ("validation", "calibration")


@contextmanager
def committed() -> Iterator[list[Callable[[], Any]]]:
    """Run the work left for commit (``transaction.on_commit``) when the block ends, as a commit would.

    In a test rolled back at its end nothing commits, so the intake of an upload, a queued job or the
    announcement of a promotion would never run; pytest-django's ``django_capture_on_commit_callbacks``
    (Django's ``captureOnCommitCallbacks``) runs them. In a test that commits they have already run
    and the block adds nothing. Blocks nest: what an inner block ran is forgotten, as a commit forgets
    it, so an outer one (or the fixture around a factory) never runs it twice.
    """
    start = len(connection.run_on_commit)
    try:
        with TestCase.captureOnCommitCallbacks(execute=True) as callbacks:
            yield callbacks
    finally:
        del connection.run_on_commit[start:]


# --- people ----------------------------------------------------------------------------------


def user(username: str = "alice", *roles: str, torchscript: bool = False, superuser: bool = False,
         staff: bool = False) -> User:
    """A user holding ``roles`` (the groups of modelhub.roles), with the password "pw-<username>"."""
    sync_role_groups(Group, Permission)  # a transactional test's flush removes the groups the migration made
    made = User.objects.create_user(username=username, password="pw-" + username, is_superuser=superuser,
                                    is_staff=superuser or staff)
    made.groups.set(Group.objects.filter(name__in=roles))
    if torchscript:
        made.user_permissions.add(Permission.objects.get(codename="upload_torchscript"))
    return User.objects.get(pk=made.pk)  # fresh object: permission caches start empty


def staff_user(username: str, *roles: str) -> User:
    """A user who may log in to the admin and the dashboard, holding ``roles``, in the team that sees
    the team's model."""
    made = user(username, *roles, staff=True)
    made.groups.add(Group.objects.get_or_create(name=TEAM)[0])
    return made


# --- models and versions ---------------------------------------------------------------------


def model(owner: Any, name: str = "mlp", *, task: str = "auto", team: Group | None = None) -> RegisteredModel:
    """The model ``name``, registered by ``owner`` (for ``team`` when given) unless it exists."""
    return RegisteredModel.objects.filter(name=name).first() or services.model_create(
        name=name, owner=owner, task=task, team=team)


def upload(owner: Any, data: bytes | Path, *, name: str = "mlp", filename: str | None = None) -> ModelVersion:
    """Upload a model file (or bytes) as a version of model ``name`` (registered on first use) and run
    its intake in this process, even where a test sends tasks to a broker; returns the version, READY
    or FAILED."""
    blob = data.read_bytes() if isinstance(data, Path) else data
    filename = filename or (data.name if isinstance(data, Path) else "model.onnx")
    with queue.eager(), committed():
        made, _ = services.version_upload(model=model(owner, name), stream=io.BytesIO(blob), filename=filename,
                                          user=owner)
    return ModelVersion.objects.get(pk=made.pk)


def datasets(made: ModelVersion, owner: Any, sample: SampleModel, purposes: tuple[str, ...] = VALIDATION) -> None:
    """Give the version the sample's datasets for ``purposes`` it lacks (training data is the
    calibration file)."""
    files = {"validation": sample.validation, "calibration": sample.calibration, "training": sample.calibration}
    for purpose in purposes:
        if made.dataset(purpose) is None:
            with files[purpose].open("rb") as handle:
                services.dataset_upload(version=made, purpose=purpose, stream=handle, filename=files[purpose].name,
                                        user=owner)


def version(owner: Any, sample: SampleModel, name: str = "mlp", *, purposes: tuple[str, ...] = VALIDATION,
            model_file: Path | None = None, team: Group | None = None) -> ModelVersion:
    """A READY version of model ``name`` (registered on first use, for the sample's task) from the
    sample's ONNX file (or ``model_file``), with the sample's datasets for ``purposes``."""
    model(owner, name, task=sample.task, team=team)
    made = upload(owner, model_file or sample.onnx, name=name)
    assert made.status == ModelVersion.Status.READY, made.status_reason
    datasets(made, owner, sample, purposes)
    return made


# --- profiles, jobs, promotions --------------------------------------------------------------


def profile(name: str, **limits: Any) -> ReadinessProfile:
    return ReadinessProfile.objects.create(name=name, **limits)


def govern(version: ModelVersion, profile: ReadinessProfile, owner: Any, alias: str = "production",
           reason: str = "test setup") -> None:
    """Make ``profile`` govern the version's model at ``alias``, through the audited service."""
    services.governing_profile_set(model=version.model, profile=profile, by=owner, alias=alias, reason=reason)


def job(version: ModelVersion, owner: Any, profile: ReadinessProfile | None, plan: list[dict[str, Any]] | None = None,
        bench: dict[str, Any] | None = None, **options: Any) -> OptimizationJob:
    """An optimization job run to its end in this process (INT8 and QUICK_BENCH unless told); it must succeed."""
    with queue.eager(), committed():
        made = services.optimization_request(version=version, user=owner, profile=profile,
                                             plan=INT8 if plan is None else plan, bench=bench or QUICK_BENCH,
                                             **options)
    made.refresh_from_db()
    assert made.status == OptimizationJob.Status.SUCCEEDED, made.error
    return made


def benchmark_job(variant: Variant, owner: Any, profile: ReadinessProfile | None,
                  bench: dict[str, Any] | None = None) -> OptimizationJob:
    """A re-measurement of one variant run to its end in this process; it must succeed."""
    with queue.eager(), committed():
        made = services.benchmark_request(variant=variant, user=owner, profile=profile, bench=bench or QUICK_BENCH)
    made.refresh_from_db()
    assert made.status == OptimizationJob.Status.SUCCEEDED, made.error
    return made


def optimized_version(owner: Any, sample: SampleModel, name: str = "mlp", *, profile: ReadinessProfile | None,
                      plan: list[dict[str, Any]] | None = None, bench: dict[str, Any] | None = None,
                      purposes: tuple[str, ...] = VALIDATION, model_file: Path | None = None,
                      team: Group | None = None, reason: str = "test setup") -> ModelVersion:
    """A READY version after one optimization job under ``profile``, which governs the model's
    production alias (given one): what makes its passing variants promotable."""
    made = version(owner, sample, name, purposes=purposes, model_file=model_file, team=team)
    if profile is not None:
        govern(made, profile, owner, reason=reason)
    job(made, owner, profile, plan=plan, bench=bench)
    return made


def promote(variant: Variant, by: Any, alias: str = "production", **options: Any) -> PromotionEvent:
    """Promote ``variant`` through the gate (``force``/``reason`` as the service takes them); the
    serving processes are told before it returns."""
    with committed():
        return services.deployment_promote(model=variant.version.model, variant=variant, by=by, alias=alias,
                                           **options)


# --- the team's model: what the dashboard and browser tests start from -------------------------

TEAM = "quality-team"
TEAM_MODEL = "quality-mlp"
# The demo's profile for this sample: the original is too large; int8 passes; half-pruned loses accuracy.
TEAM_LIMITS = {"max_size_mb": 5.0, "max_p95_ms": 50.0, "accuracy_metric": "mae", "max_accuracy_drop": 0.02}
TEAM_PLAN = [
    {"name": "int8-dynamic", "pass_name": "quantize_dynamic", "options": {"per_channel": True}},
    {"name": "prune-structured", "pass_name": "prune_structured", "options": {"ratio": 0.5}},
]
TEAM_BENCH = {"time_budget_s": 0.2, "batch_sizes": [1], "iterations": 300}  # p99 from too few calls, on purpose


def team() -> Group:
    return Group.objects.get_or_create(name=TEAM)[0]


def team_model(owner: Any, name: str = TEAM_MODEL, task: str = "regression") -> RegisteredModel:
    """The team's model, registered by ``owner`` unless it exists."""
    return model(owner, name, task=task, team=team())


def team_profile() -> ReadinessProfile:
    """The profile made for the team's model (TEAM_LIMITS), made on first use."""
    return ReadinessProfile.objects.get_or_create(name=f"{TEAM_MODEL}-profile", defaults=TEAM_LIMITS)[0]


def team_governed(model: RegisteredModel, maintainer: Any, by: ReadinessProfile | None = None,
                  reason: str = "") -> ReadinessProfile:
    """Make ``by`` (default: the team's profile) govern the model's production alias."""
    chosen = by or team_profile()
    services.governing_profile_set(model=model, profile=chosen, by=maintainer, reason=reason)
    return chosen


def team_version(owner: Any, sample: SampleModel, model_file: Path | None = None) -> ModelVersion:
    """A READY version of the team's model with validation and calibration data."""
    return version(owner, sample, TEAM_MODEL, purposes=BOTH, model_file=model_file, team=team())


def team_job(version: ModelVersion, owner: Any, profile: ReadinessProfile | None,
             plan: list[dict[str, Any]] | None = None) -> OptimizationJob:
    """One more job of a team version: TEAM_PLAN (or ``plan``) measured with TEAM_BENCH under ``profile``."""
    return job(version, owner, profile, plan=plan or TEAM_PLAN, bench=TEAM_BENCH)


def team_benchmark(variant: Variant, owner: Any, profile: ReadinessProfile | None) -> OptimizationJob:
    """A re-measurement of one variant of the team's model with TEAM_BENCH."""
    return benchmark_job(variant, owner, profile, bench=TEAM_BENCH)


def optimized_team_version(owner: Any, sample: SampleModel, plan: list[dict[str, Any]] | None = None,
                           model_file: Path | None = None) -> ModelVersion:
    """A team version after one job (TEAM_PLAN, TEAM_BENCH) under the team's profile, which governs
    the model's production alias."""
    return optimized_version(owner, sample, TEAM_MODEL, profile=team_profile(), plan=plan or TEAM_PLAN,
                             bench=TEAM_BENCH, purposes=BOTH, model_file=model_file, team=team(), reason="")
