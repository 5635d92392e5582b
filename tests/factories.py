"""Registry objects made through the services, as a user would make them: a model with a READY
version and its datasets, readiness profiles, a governing profile, and jobs run to their end."""

from __future__ import annotations

from typing import Any

from modelhub import services
from modelhub.models import ModelVersion, OptimizationJob, ReadinessProfile, RegisteredModel
from workers.samples import SampleModel

# Short runs: one batch size, a fifth of a second per variant.
QUICK_BENCH = {"time_budget_s": 0.2, "batch_sizes": [1]}
INT8 = [{"name": "int8", "pass_name": "quantize_dynamic", "options": {"per_channel": True}}]


def version(owner: Any, sample: SampleModel, name: str = "mlp") -> ModelVersion:
    """A READY version of ``name`` (created on first use) with the sample's validation data."""
    model = RegisteredModel.objects.filter(name=name).first() or services.model_create(
        name=name, owner=owner, task=sample.task)
    with sample.onnx.open("rb") as handle:
        made, _ = services.version_upload(model=model, stream=handle, filename=sample.onnx.name, user=owner)
    made.refresh_from_db()
    assert made.status == ModelVersion.Status.READY, made.status_reason
    if made.dataset("validation") is None:
        with sample.validation.open("rb") as handle:
            services.dataset_upload(version=made, purpose="validation", stream=handle, filename="val.npz", user=owner)
    return made


def profile(name: str, **limits: Any) -> ReadinessProfile:
    return ReadinessProfile.objects.create(name=name, **limits)


def govern(version: ModelVersion, profile: ReadinessProfile, owner: Any, alias: str = "production") -> None:
    """Make ``profile`` govern the version's model at ``alias``."""
    services.governing_profile_set(model=version.model, profile=profile, by=owner, alias=alias, reason="test setup")


def job(version: ModelVersion, owner: Any, profile: ReadinessProfile | None, plan: list[dict[str, Any]] | None = None,
        **options: Any) -> OptimizationJob:
    """An optimization job run to its end in this process (tasks are eager in tests); it must succeed."""
    made = services.optimization_request(version=version, user=owner, profile=profile,
                                         plan=INT8 if plan is None else plan, bench=QUICK_BENCH, **options)
    made.refresh_from_db()
    assert made.status == OptimizationJob.Status.SUCCEEDED, made.error
    return made
