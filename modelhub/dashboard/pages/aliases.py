"""A model's aliases beyond production (staging, any slug): what each serves, the profile that
governs it, and where its rollback would go, as ``modelhub.gate`` decides it."""

from __future__ import annotations

from typing import Any

from modelhub import gate
from modelhub.dashboard.pages.models import rollback_plan
from modelhub.models import Deployment, RegisteredModel

PRODUCTION = "production"


def alias_names(*, model: RegisteredModel) -> list[str]:
    """Every alias the model has (served or governed), production first."""
    served = set(Deployment.objects.filter(model=model).values_list("alias", flat=True))
    governed = set(model.governing_profiles.values_list("alias", flat=True))
    return sorted(served | governed | {PRODUCTION}, key=lambda alias: (alias != PRODUCTION, alias))


def alias_rows(*, model: RegisteredModel) -> list[dict[str, Any]]:
    """One row per alias: the variant serving it, its governing profile and its rollback plan."""
    deployments = {d.alias: d for d in Deployment.objects.filter(model=model).select_related("variant__version")}
    rows = []
    for alias in alias_names(model=model):
        deployment = deployments.get(alias)
        rows.append({"alias": alias, "variant": deployment.variant if deployment else None,
                     "since": deployment.updated_at if deployment else None,
                     "governing": gate.governing_profile(model=model, alias=alias),
                     "rollback": rollback_plan(model=model, alias=alias) if deployment else None})
    return rows
