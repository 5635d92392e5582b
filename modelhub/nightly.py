"""Nightly re-benchmarking: the services that measure production variants again and flag regressions.

Every night (beat entry ``nightly-rebenchmark``, or ``manage.py rebenchmark`` by hand) each
production variant is measured again together with its fallback chain: its ancestors up to the
original, then the variant that served before the last promotion. Each is stored as a
``BenchmarkResult(kind=nightly, night=...)``: a series of its own, never a job's result, with the
declared statistic (``statistic``) and the p50/p95/p99 intervals of the night (``intervals``).

Which settings and which judge. A link is measured with the settings of its baseline (the
latest job or on-demand result: the same bench options, batch sizes, threads and provider) and
judged under the baseline's readiness profile, so that its nights stay comparable with what was
measured when it was made. The production variant is the exception when ``model@production``
has a governing profile (``modelhub.gate``): it is judged under that profile, with the baseline's
bench options adjusted to the profile's batch size, threads, target and calls. Its nightly verdict
then answers the question that matters for what serves: would it still pass the gate today? The
other links keep their baseline's judge; a rollback to one of them passes the gate anyway.

Measured together. The links of one version that share a judge and bench settings are measured
in one interleaved run (``measurement.measure_variants``), so drift of the machine hits them
alike and a speed-up over a parent is paired round by round; groups go in chain order, ancestors
first. A link that cannot be measured fails alone; if the shared run itself fails, each link of
the group is measured on its own.

Once per (variant, night), whoever asks: before a group is measured, each of its links gets its
nightly row, created as a claim (``pending``; the unique constraint lets one runner have it), and
filled in when measured. Links claimed by another run are skipped. A claim whose runner died is
taken over after ``CLAIM_STALE_S``, or at once by the same task re-delivered.

Each new measurement is compared with the variant's recent nights on the same setup by
``workers.evaluation.regression``: tonight's declared statistic and its interval against the band
of the baseline nights. A regression becomes a ``Regression`` row (one open per variant and
metric; the statistic, tonight's interval and the baseline are in ``details``), a WARNING on the
``modelhub.nightly`` logger, the ``modelhub_regressions_open`` gauge and, when configured, a
signed webhook.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from modelhub import gate, measurement, regressions, selectors
from modelhub.errors import NotFound
from modelhub.models import (
    BenchmarkResult,
    Deployment,
    ModelFormat,
    ReadinessProfile,
    RegisteredModel,
    Variant,
)
from workers.evaluation import bench, readiness
from workers.targets import capabilities

log = logging.getLogger(__name__)

ALIAS = "production"
CLAIM_STALE_S = 1800  # longer than any one group's measurement (bench timeouts + accuracy)
NIGHTLY = BenchmarkResult.Kind.NIGHTLY


@dataclass(frozen=True)
class NightlyTarget:
    """A variant to measure tonight and its place in the chain: production, ancestor or previous."""

    model: RegisteredModel
    variant: Variant
    role: str
    alias: str = ALIAS


@dataclass
class VariantNight:
    """What happened to one variant tonight: measured, failed (could not be measured) or skipped;
    the declared statistic with its interval, and p95 (shown by the command)."""

    model: str
    variant: str
    role: str
    status: str
    detail: str = ""
    p95_ms: float | None = None
    statistic: str = "p50"
    value_ms: float | None = None
    interval: list[float] | None = None
    check: dict[str, Any] = field(default_factory=dict)
    regressions: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "variant": self.variant, "role": self.role, "status": self.status,
                "detail": self.detail, "p95_ms": self.p95_ms, "statistic": self.statistic, "value_ms": self.value_ms,
                "interval": self.interval, "check": self.check, "regressions": self.regressions}


@dataclass
class NightlyReport:
    """The outcome of one nightly run, variant by variant."""

    night: date
    variants: list[VariantNight] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for v in self.variants if v.status == status)

    def to_dict(self) -> dict[str, Any]:
        return {"night": self.night.isoformat(), "measured": self.count("measured"), "failed": self.count("failed"),
                "skipped": self.count("skipped"), "regressions": [r for v in self.variants for r in v.regressions],
                "variants": [v.to_dict() for v in self.variants]}


@dataclass(frozen=True)
class NightlyPlan:
    """How one link is measured tonight: its judge (a profile, or None: measured, not judged, and
    the limits it stands for) and its bench settings. Links of one version with the same judge and
    settings are measured together (``group``)."""

    target: NightlyTarget
    profile: ReadinessProfile | None
    spec: readiness.ProfileSpec
    config: bench.BenchConfig

    @property
    def variant(self) -> Variant:
        return self.target.variant

    @property
    def group(self) -> tuple[Any, ...]:
        return self.variant.version_id, self.profile.pk if self.profile else None, self.spec, self.config


@dataclass
class _Run:
    """One runner's state for a night: who it is, its clock, and what it measured so far."""

    night: date
    owner: str
    now: datetime
    reports: dict[int, bench.BenchReport] = field(default_factory=dict)
    setups: dict[tuple[Any, ...], measurement.EvaluationSetup] = field(default_factory=dict)

    def setup(self, plan: NightlyPlan) -> measurement.EvaluationSetup:
        key = (plan.variant.version_id, plan.profile.pk if plan.profile else None, plan.spec)
        if key not in self.setups:
            self.setups[key] = measurement.evaluation_setup(plan.variant.version, plan.profile, plan.spec)
        return self.setups[key]


# --- what to measure -------------------------------------------------------------------------


def nightly_targets(*, model: str | None = None) -> list[NightlyTarget]:
    """Every production variant with its fallback chain (READY ONNX links only, each once)."""
    deployments = Deployment.objects.filter(alias=ALIAS).select_related("model", "variant__version__model")
    if model is not None:
        if not RegisteredModel.objects.filter(name=model).exists():
            raise NotFound(f"No model named {model!r}.")
        deployments = deployments.filter(model__name=model)
    targets: list[NightlyTarget] = []
    seen: set[int] = set()
    for deployment in deployments.order_by("model__name"):
        for variant, role in _chain(deployment):
            if variant.pk not in seen:
                seen.add(variant.pk)
                targets.append(NightlyTarget(model=deployment.model, variant=variant, role=role))
    return targets


def _chain(deployment: Deployment) -> list[tuple[Variant, str]]:
    """The deployment's chain (``selectors.deployment_chain``), ONNX links only, reordered for
    measuring: ancestors first (a speed-up check needs the parent measured), then production,
    then previous."""
    links = [link for link in selectors.deployment_chain(variant=deployment.variant, alias=deployment.alias)
             if link.variant.format == ModelFormat.ONNX]
    ancestors = [(link.variant, "ancestor") for link in links if link.role == selectors.ANCESTOR]
    rest = [(link.variant, "production" if link.role == selectors.PRIMARY else link.role)
            for link in links if link.role != selectors.ANCESTOR]
    return ancestors[::-1] + rest


def nightly_plan(target: NightlyTarget) -> NightlyPlan:
    """The baseline's judge and settings; for the production variant, the alias's governing
    profile when it has one (see the module docstring)."""
    profile, spec, config = baseline_settings(target.variant)
    if target.role == "production":
        governing = gate.governing_profile(model=target.model, alias=target.alias)
        if governing is not None:
            profile, spec = governing, governing.to_spec()
            config = _config_under(spec, config)
    return NightlyPlan(target=target, profile=profile, spec=spec, config=config)


def _config_under(spec: readiness.ProfileSpec, config: bench.BenchConfig) -> bench.BenchConfig:
    """The baseline's bench options with a profile's batch size, threads, target and calls."""
    return dataclasses.replace(config, batch_sizes=tuple(sorted({*config.batch_sizes, spec.batch_size})),
                               threads=spec.threads, provider=capabilities.native_provider(spec.target),
                               iterations=max(config.iterations, spec.min_calls))


def _groups(plans: list[NightlyPlan]) -> list[list[NightlyPlan]]:
    """Plans measured together, in chain order: a plan joins the latest group of its key unless
    its parent is measured in a later group (a parent is always measured first)."""
    groups: list[list[NightlyPlan]] = []
    latest: dict[tuple[Any, ...], int] = {}
    group_of: dict[int, int] = {}
    for plan in plans:
        at = latest.get(plan.group)
        if at is None or group_of.get(plan.variant.parent_id, -1) > at:
            at = latest[plan.group] = len(groups)
            groups.append([])
        groups[at].append(plan)
        group_of[plan.variant.pk] = at
    return groups


# --- the run ---------------------------------------------------------------------------------


def nightly_run(*, night: date | None = None, model: str | None = None, now: datetime | None = None,
                owner: str = "", progress: Callable[[VariantNight, int, int], None] | None = None) -> NightlyReport:
    """Measure every production variant and its fallback chain once for ``night`` (default: today,
    UTC) and flag regressions. Variants measured (or being measured) by another run are skipped.

    ``owner`` names this runner in its claims; a task passes its id so that the same task,
    re-delivered after its worker died, takes its own claims back. ``progress`` is called after
    each variant with (outcome, done, total).
    """
    now = now or timezone.now()
    run = _Run(night=night or timezone.localdate(now), owner=owner or _default_owner(), now=now)
    targets = nightly_targets(model=model)
    outcomes: dict[int, VariantNight] = {}

    def done(plan: NightlyPlan, outcome: VariantNight) -> None:
        outcomes[plan.variant.pk] = outcome
        if progress is not None:
            progress(outcome, len(outcomes), len(targets))

    for group in _groups([nightly_plan(target) for target in targets]):
        _group_night(run, group, done)
    report = NightlyReport(night=run.night, variants=[outcomes[target.variant.pk] for target in targets])
    log.info("nightly %s: %d measured, %d failed, %d skipped, %d regression(s)", run.night.isoformat(),
             report.count("measured"), report.count("failed"), report.count("skipped"),
             len(report.to_dict()["regressions"]))
    return report


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _outcome(plan: NightlyPlan, status: str = "skipped", detail: str = "") -> VariantNight:
    return VariantNight(model=plan.target.model.name, variant=plan.variant.label, role=plan.target.role,
                        status=status, detail=detail, statistic=plan.spec.statistic)


def _group_night(run: _Run, group: list[NightlyPlan], done: Callable[[NightlyPlan, VariantNight], None]) -> None:
    """Claim each link of a group, measure the claimed ones together, then record each."""
    claimed: list[tuple[NightlyPlan, BenchmarkResult]] = []
    for plan in group:
        row = _claim(run, plan.variant)
        if row is None:
            done(plan, _outcome(plan, detail="already measured, or being measured by another run"))
        else:
            claimed.append((plan, row))
    if not claimed:
        return
    fields = _measure(run, [plan for plan, _ in claimed])
    for plan, row in claimed:
        done(plan, _finish(run, plan, row, fields[plan.variant.pk]))


def _finish(run: _Run, plan: NightlyPlan, row: BenchmarkResult, fields: dict[str, Any]) -> VariantNight:
    """Record a claimed link's measurement, compare it with its recent nights, raise regressions."""
    if not _record(run, row, fields):
        return _outcome(plan, detail="another run took over the claim")
    row.refresh_from_db()
    point = regressions.night_point(row)
    check = regressions.check_night(row, point)
    outcome = _outcome(plan, status="measured" if row.p95_ms is not None else "failed")
    outcome.detail = "; ".join(row.verdict.get("failures", [])) if outcome.status == "failed" else check.status
    outcome.p95_ms, outcome.statistic, outcome.value_ms = row.p95_ms, point.statistic, point.value_ms
    outcome.interval = [point.low_ms, point.high_ms] if point.measured else None
    outcome.check = check.to_dict()
    if check.regressed:
        outcome.regressions = regressions.raise_regressions(plan.target, row, check)
    return outcome


def _claim(run: _Run, variant: Variant) -> BenchmarkResult | None:
    """Create tonight's row (ours), or take over an unfinished one that is ours or has lapsed."""
    try:
        with transaction.atomic():
            return BenchmarkResult.objects.create(variant=variant, kind=NIGHTLY, night=run.night, pending=True,
                                                  size_bytes=variant.size_bytes, report={"claimed_by": run.owner})
    except IntegrityError:
        pass
    lapsed = run.now - timedelta(seconds=CLAIM_STALE_S)
    retaken = (BenchmarkResult.objects
               .filter(Q(report__claimed_by=run.owner) | Q(created_at__lt=lapsed), variant=variant, kind=NIGHTLY,
                       night=run.night, pending=True)
               .update(report={"claimed_by": run.owner}, created_at=timezone.now()))
    return BenchmarkResult.objects.get(variant=variant, kind=NIGHTLY, night=run.night) if retaken else None


def _record(run: _Run, row: BenchmarkResult, fields: dict[str, Any]) -> bool:
    """Fill in our claimed row; False when another run took the claim over meanwhile."""
    return bool(BenchmarkResult.objects.filter(pk=row.pk, pending=True, report__claimed_by=run.owner)
                .update(created_at=timezone.now(), pending=False, **fields))


def _baseline(variant: Variant) -> BenchmarkResult | None:
    """The measurement whose settings the nightly one repeats: the latest job or on-demand result."""
    return (variant.results.filter(kind__in=[BenchmarkResult.Kind.JOB, BenchmarkResult.Kind.ON_DEMAND],
                                   p95_ms__isnull=False, pending=False)
            .select_related("profile").order_by("-created_at", "-id").first())


def baseline_settings(variant: Variant) -> tuple[Any, readiness.ProfileSpec, bench.BenchConfig]:
    """(profile, spec, bench config) of the variant's baseline: the same profile for the verdict,
    the same bench options, batch sizes, threads and provider for the numbers."""
    baseline = _baseline(variant)
    profile = baseline.profile if baseline else None
    config_dict = (baseline.report or {}).get("config") if baseline else None
    config = bench.BenchConfig.from_dict(config_dict) if config_dict else None
    if profile is not None:
        spec = profile.to_spec()
    elif baseline is not None and config is not None:  # its profile was deleted: keep what it measured
        spec = readiness.ProfileSpec(batch_size=baseline.batch_size, threads=config.threads, target=config.provider,
                                     statistic=regressions.statistic_of(baseline.statistic))
    else:
        spec = readiness.ProfileSpec()
    return profile, spec, config or measurement.bench_config({}, spec)


def _measure(run: _Run, plans: list[NightlyPlan]) -> dict[int, dict[str, Any]]:
    """The result columns of each plan's measurement (or of its failure to be measured), by
    variant id: the plans of one group measured together in interleaved rounds."""
    first, variants = plans[0], [plan.variant for plan in plans]
    try:
        setup = run.setup(first)
        measured, errors = measurement.measure_variants(variants, setup, first.config, parents=_parents(run, variants))
    except Exception as exc:  # noqa: BLE001 - one variant that cannot be measured must not stop the night
        if len(plans) > 1:
            log.warning("nightly %s: measuring %s together failed (%s); measuring each alone", run.night.isoformat(),
                        ", ".join(v.label for v in variants), exc)
            return {pk: fields for plan in plans for pk, fields in _measure(run, [plan]).items()}
        return {first.variant.pk: _failure(run, first, exc)}
    fields: dict[int, dict[str, Any]] = {}
    for plan in plans:
        variant = plan.variant
        if variant.pk not in measured:
            fields[variant.pk] = _failure(run, plan, errors.get(variant.pk, "no measurement came back"))
            continue
        run.reports[variant.pk] = measured[variant.pk].report
        fields[variant.pk] = {"profile": plan.profile,
                              **measurement.result_fields(variant, setup, measured[variant.pk])}
    return fields


def _parents(run: _Run, variants: list[Variant]) -> dict[int, bench.BenchReport]:
    """Reports of parents measured outside this group tonight (by this run or another one)."""
    ids = {variant.pk for variant in variants}
    parents = {}
    for parent_id in {variant.parent_id for variant in variants if variant.parent_id} - ids:
        report = run.reports.get(parent_id) or _tonight_report(parent_id, run.night)
        if report is not None:
            parents[parent_id] = report
    return parents


def _tonight_report(variant_id: int | None, night: date) -> bench.BenchReport | None:
    """A parent measured tonight by another run (for the speed-up check)."""
    if variant_id is None:
        return None
    row = BenchmarkResult.objects.filter(variant_id=variant_id, kind=NIGHTLY, night=night, pending=False,
                                         p95_ms__isnull=False).first()
    return bench.BenchReport.from_dict(row.report) if row is not None else None


def _failure(run: _Run, plan: NightlyPlan, exc: Exception | str) -> dict[str, Any]:
    """The result columns of a link that could not be measured: a failed verdict under its judge,
    with the fingerprint and setup a measurement would carry, so it compares with its own nights."""
    log.warning("nightly %s: %s could not be measured: %s", run.night.isoformat(), plan.variant.label, exc)
    spec, config = plan.spec, plan.config
    fingerprint = bench.hardware_fingerprint(config.provider, config.threads)
    failure = f"could not be measured: {exc}"
    return {"profile": plan.profile, "batch_size": spec.batch_size, "statistic": spec.statistic, "p50_ms": None,
            "p95_ms": None, "p99_ms": None, "intervals": {}, "throughput": None, "throughput_batch": None,
            "peak_memory_mb": None, "size_bytes": plan.variant.size_bytes,
            "report": {"error": str(exc), "config": config.to_dict()}, "accuracy": {},
            "verdict": {"passed": False, "failures": [failure], "checks": []}, "passed": False,
            "profile_spec": spec.to_dict() if plan.profile is not None else {},
            "fingerprint": fingerprint, "fingerprint_hash": measurement.fingerprint_hash(fingerprint)}
