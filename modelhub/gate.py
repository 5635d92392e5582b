"""The one gate to an alias: may a variant be promoted to ``model@alias``? (read-only)

Each alias of a model is governed by one readiness profile (``GoverningProfile``, production's at
least). A variant passes the gate only through a *judgment* made under that profile with its
current limits: the variant's latest finished job or on-demand result whose profile is the
governing one and whose recorded limits (``profile_spec``) equal the profile's limits now. A
judgment under another profile, under none, or under limits since changed never opens the gate.
Promotion, rollback, auto-promotion and the promote page all ask ``decide``; only an approver's
forced promotion with a reason goes past a closed gate, and the audit records that it did.
``batching_advice`` reads the same evidence for the serving option "server-side batching".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from modelhub.models import BenchmarkResult, GoverningProfile, OptimizationJob, ReadinessProfile, Variant
from workers.evaluation import batching
from workers.evaluation.bench import BenchReport

_RUNS_OF_RECORD = (BenchmarkResult.Kind.JOB, BenchmarkResult.Kind.ON_DEMAND)


@dataclass
class Decision:
    """Whether the gate is open for a variant, the profile that decided, the judgment it read,
    and, when closed, why (a sentence) with the judgment's failures."""

    passed: bool
    alias: str
    profile: ReadinessProfile | None = None
    result: BenchmarkResult | None = None
    reason: str = ""
    failures: list[str] = field(default_factory=list)


def governing_profile(*, model: Any, alias: str = "production") -> ReadinessProfile | None:
    """The profile that governs ``model@alias``, if a maintainer set one."""
    row = GoverningProfile.objects.filter(model=model, alias=alias).select_related("profile").first()
    return row.profile if row else None


def _same_limits(recorded: dict[str, Any], profile: ReadinessProfile) -> bool:
    now = profile.to_spec().to_dict()
    return json.dumps(recorded, sort_keys=True) == json.dumps(now, sort_keys=True)


def judgment(*, variant: Variant, profile: ReadinessProfile) -> BenchmarkResult | None:
    """The variant's latest finished judgment under ``profile`` with the profile's current limits."""
    results = (variant.results.filter(profile=profile, kind__in=_RUNS_OF_RECORD, pending=False,
                                      job__status=OptimizationJob.Status.SUCCEEDED)
               .select_related("job").order_by("-created_at", "-id"))
    latest = results.first()
    return latest if latest is not None and _same_limits(latest.profile_spec, profile) else None


def decide(*, variant: Variant, alias: str = "production") -> Decision:
    """Open only for a variant whose latest judgment under the alias's governing profile passed."""
    model = variant.version.model
    profile = governing_profile(model=model, alias=alias)
    if profile is None:
        return Decision(False, alias, reason=f"{model.name}@{alias} has no governing readiness profile; "
                                             "a maintainer sets one first")
    result = judgment(variant=variant, profile=profile)
    if result is None:
        return Decision(False, alias, profile, reason=f"it has no judgment under {alias}'s governing profile "
                        f"{profile.name!r} with its current limits (run a job or a benchmark under it)")
    failures = list(result.verdict.get("failures", []))
    if result.passed is not True:
        return Decision(False, alias, profile, result, f"it fails {alias}'s governing profile {profile.name!r} "
                        f"(job {result.job_id}): {'; '.join(failures) or 'no verdict'}", failures)
    return Decision(True, alias, profile, result)


@dataclass
class RollbackPlan:
    """Where a rollback of ``model@alias`` goes: ``target``, the last known good (the most recent
    earlier variant the gate lets through), else only a forced rollback to ``forced_target`` (the
    most recent earlier variant); ``refused`` says why each earlier variant was passed over."""

    earlier: list[Variant]
    target: Variant | None = None
    decision: Decision | None = None
    forced_target: Variant | None = None
    refused: list[tuple[Variant, str]] = field(default_factory=list)


def rollback_plan(*, model: Any, alias: str = "production") -> RollbackPlan:
    """The one rule for "roll back": see ``RollbackPlan``."""
    from modelhub import selectors

    current = selectors.deployment_variant(model=model, alias=alias)
    plan = RollbackPlan(earlier=selectors.earlier_variants(model=model, alias=alias) if current else [])
    for variant in plan.earlier:
        decision = decide(variant=variant, alias=alias)
        if decision.passed:
            plan.target, plan.decision = variant, decision
            return plan
        plan.refused.append((variant, decision.reason))
    plan.forced_target = plan.earlier[0] if plan.earlier else None
    return plan


def batching_advice(*, variant: Variant, alias: str = "production") -> batching.BatchingAdvice:
    """Does server-side batching pay for ``variant``? The engine's rule (``workers.evaluation.batching``)
    on its judgment under the alias's governing profile, else on its latest job or on-demand run,
    with the governing profile's p95 limit (else the run's own profile's) and the batching window."""
    profile = governing_profile(model=variant.version.model, alias=alias)
    result = judgment(variant=variant, profile=profile) if profile is not None else None
    result = result or (variant.results.filter(kind__in=_RUNS_OF_RECORD, pending=False).select_related("profile")
                        .order_by("-created_at", "-id").first())
    if result is None or not (result.report or {}).get("results"):
        return batching.BatchingAdvice(False, "never benchmarked: no evidence that batching pays")
    profile = profile or result.profile
    return batching.batching_pays(BenchReport.from_dict(result.report), profile.to_spec() if profile else None,
                                  window_ms=settings.MODELHUB_SERVING_BATCHING_WINDOW_MS)
