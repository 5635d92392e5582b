"""What the dashboard and browser tests start from: staff users in one team, and a sample model
registered, governed by a readiness profile, uploaded and optimized through the services (a short
plan, a short benchmark)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.contrib.auth.models import Group

from modelhub import services
from modelhub.models import ModelVersion, OptimizationJob, ReadinessProfile, RegisteredModel
from workers.samples import SampleModel

TEAM = "quality-team"
MODEL = "quality-mlp"
# The demo's profile for this sample: the original is too large; int8 passes; half-pruned loses accuracy.
PROFILE = {"max_size_mb": 5.0, "max_p95_ms": 50.0, "accuracy_metric": "mae", "max_accuracy_drop": 0.02}
QUICK_PLAN = [
    {"name": "int8-dynamic", "pass_name": "quantize_dynamic", "options": {"per_channel": True}},
    {"name": "prune-structured", "pass_name": "prune_structured", "options": {"ratio": 0.5}},
]
QUICK_BENCH = {"time_budget_s": 0.2, "batch_sizes": [1], "iterations": 300}  # p99 from too few calls, on purpose


def staff(make_user: Callable[..., Any], username: str, *roles: str) -> Any:
    """A user who may log in to the admin, holding ``roles``, in the team that sees the model."""
    user = make_user(username, *roles)
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.groups.add(Group.objects.get_or_create(name=TEAM)[0])
    return user


def team_model(owner: Any, name: str = MODEL, task: str = "regression") -> RegisteredModel:
    """The model, registered by ``owner`` and visible to the team."""
    existing = RegisteredModel.objects.filter(name=name).first()
    if existing is not None:
        return existing
    team = Group.objects.get_or_create(name=TEAM)[0]
    return services.model_create(name=name, owner=owner, task=task, team=team)


def profile() -> ReadinessProfile:
    return ReadinessProfile.objects.get_or_create(name=f"{MODEL}-profile", defaults=PROFILE)[0]


def governed(model: RegisteredModel, maintainer: Any, by: ReadinessProfile | None = None,
             reason: str = "") -> ReadinessProfile:
    """Make ``by`` (default: the sample's profile) govern the model's production alias, through the
    audited service: what makes a passing variant promotable."""
    chosen = by or profile()
    services.governing_profile_set(model=model, profile=chosen, by=maintainer, reason=reason)
    return chosen


def run_job(version: ModelVersion, owner: Any, *, profile_to_use: ReadinessProfile | None,
            plan: list[dict[str, Any]] | None = None) -> OptimizationJob:
    """One more optimization job of ``version`` (in-process), under ``profile_to_use`` (None: none)."""
    job = services.optimization_request(version=version, user=owner, profile=profile_to_use,
                                        plan=plan or QUICK_PLAN, bench=QUICK_BENCH)
    job.refresh_from_db()
    assert job.status == OptimizationJob.Status.SUCCEEDED, job.error
    return job


def benchmark_job(variant: Any, owner: Any, *, profile_to_use: ReadinessProfile | None) -> OptimizationJob:
    """A re-measurement of one variant (in-process), under ``profile_to_use``."""
    job = services.benchmark_request(variant=variant, user=owner, profile=profile_to_use, bench=QUICK_BENCH)
    job.refresh_from_db()
    assert job.status == OptimizationJob.Status.SUCCEEDED, job.error
    return job


def uploaded_version(owner: Any, sample: SampleModel, model_file: Path | None = None) -> ModelVersion:
    """A READY version of the team's model with validation and calibration data."""
    model = team_model(owner, task=sample.task)
    path = model_file or sample.onnx
    with path.open("rb") as handle:
        version, _ = services.version_upload(model=model, stream=handle, filename=path.name, user=owner)
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.READY, version.status_reason
    for purpose, file in (("validation", sample.validation), ("calibration", sample.calibration)):
        if version.dataset(purpose) is None:
            with file.open("rb") as handle:
                services.dataset_upload(version=version, purpose=purpose, stream=handle, filename=file.name,
                                        user=owner)
    return version


def optimized_version(owner: Any, sample: SampleModel, plan: list[dict[str, Any]] | None = None,
                      model_file: Path | None = None) -> ModelVersion:
    """An uploaded version of the governed model after one optimization job under the governing
    profile (run in-process: tasks are eager in tests)."""
    version = uploaded_version(owner, sample, model_file)
    run_job(version, owner, profile_to_use=governed(version.model, owner), plan=plan)
    return version


def renamed_copy(source: Path, target: Path, note: str) -> Path:
    """The same network with other metadata: a different file (a new version) with the same signature."""
    import onnx

    model = onnx.load(str(source))
    model.doc_string = note
    onnx.save(model, str(target))
    return target
