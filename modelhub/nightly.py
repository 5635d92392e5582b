"""Nightly re-benchmarking: the services that measure production variants again and flag regressions.

Every night (beat entry ``nightly-rebenchmark``, or ``manage.py rebenchmark`` by hand) each
production variant is measured again together with its fallback chain: its ancestors up to the
original, then the variant that served before the last promotion. Each is measured with the
settings of its baseline (the latest job or on-demand result: the same bench options, batch
sizes, threads and provider, and the same readiness profile for the verdict) and stored as a
``BenchmarkResult(kind=nightly, night=...)``.

Once per (variant, night), whoever asks: the nightly row is created first, as a claim (the
unique constraint lets one runner have it), and filled in when measured. A claim whose runner
died is taken over after ``CLAIM_STALE_S``, or at once by the same task re-delivered.

Each new measurement is compared with the variant's recent nights on the same hardware by
``workers.evaluation.regression``. A regression becomes a ``Regression`` row (one open per
variant and metric), a WARNING on the ``modelhub.nightly`` logger, the
``modelhub_regressions_open`` gauge and, when configured, a signed webhook.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from modelhub import job_runner, roles, webhooks
from modelhub.errors import Forbidden, Invalid, NotFound
from modelhub.models import (
    BenchmarkResult,
    Deployment,
    ModelFormat,
    PromotionEvent,
    RegisteredModel,
    Regression,
    Variant,
)
from workers.evaluation import bench, readiness
from workers.evaluation import regression as detector

log = logging.getLogger(__name__)

ALIAS = "production"
CLAIM_STALE_S = 1800  # longer than any one variant's measurement (bench timeout + accuracy)
MAX_LINEAGE = 50
POLICY = detector.Policy()
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
    """What happened to one variant tonight: measured, failed (could not be measured) or skipped."""

    model: str
    variant: str
    role: str
    status: str
    detail: str = ""
    p95_ms: float | None = None
    check: dict[str, Any] = field(default_factory=dict)
    regressions: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "variant": self.variant, "role": self.role, "status": self.status,
                "detail": self.detail, "p95_ms": self.p95_ms, "check": self.check, "regressions": self.regressions}


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


@dataclass
class _Run:
    """One runner's state for a night: who it is, its clock, and what it measured so far."""

    night: date
    owner: str
    now: datetime
    reports: dict[int, bench.BenchReport] = field(default_factory=dict)
    setups: dict[tuple[int, readiness.ProfileSpec], job_runner.EvaluationSetup] = field(default_factory=dict)

    def setup(self, variant: Variant, spec: readiness.ProfileSpec) -> job_runner.EvaluationSetup:
        key = (variant.version_id, spec)
        if key not in self.setups:
            self.setups[key] = job_runner.evaluation_setup(variant.version, spec)
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
    """Ancestors first (a speed-up check needs the parent measured), then production, then previous."""
    current = deployment.variant
    lineage = [current]
    while lineage[-1].parent_id and len(lineage) < MAX_LINEAGE:
        lineage.append(Variant.objects.select_related("version__model").get(pk=lineage[-1].parent_id))
    chain = [(v, "ancestor") for v in reversed(lineage[1:])] + [(current, "production")]
    event = (PromotionEvent.objects.filter(model=deployment.model, alias=deployment.alias, to_variant=current)
             .select_related("from_variant__version__model").first())
    if event is not None and event.from_variant is not None:
        chain.append((event.from_variant, "previous"))
    return [(v, role) for v, role in chain if v.status == Variant.Status.READY and v.format == ModelFormat.ONNX]


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
    report = NightlyReport(night=run.night)
    for done, target in enumerate(targets, start=1):
        report.variants.append(_variant_night(run, target))
        if progress is not None:
            progress(report.variants[-1], done, len(targets))
    log.info("nightly %s: %d measured, %d failed, %d skipped, %d regression(s)", run.night.isoformat(),
             report.count("measured"), report.count("failed"), report.count("skipped"),
             len(report.to_dict()["regressions"]))
    return report


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _variant_night(run: _Run, target: NightlyTarget) -> VariantNight:
    variant = target.variant
    outcome = VariantNight(model=target.model.name, variant=variant.label, role=target.role, status="skipped")
    row = _claim(run, variant)
    if row is None:
        outcome.detail = "already measured, or being measured by another run"
        return outcome
    fields = _measure(run, variant)
    if not _record(run, row, fields):
        outcome.detail = "another run took over the claim"
        return outcome
    row.refresh_from_db()
    check = _check(row)
    outcome.status = "measured" if row.p95_ms is not None else "failed"
    outcome.detail = "; ".join(row.verdict.get("failures", [])) if outcome.status == "failed" else check.status
    outcome.p95_ms, outcome.check = row.p95_ms, check.to_dict()
    if check.regressed:
        outcome.regressions = _raise_regressions(target, row, check)
    return outcome


def _claim(run: _Run, variant: Variant) -> BenchmarkResult | None:
    """Create tonight's row (ours), or take over an unfinished one that is ours or has lapsed."""
    try:
        with transaction.atomic():
            return BenchmarkResult.objects.create(variant=variant, kind=NIGHTLY, night=run.night,
                                                  size_bytes=variant.size_bytes, report={"claimed_by": run.owner})
    except IntegrityError:
        pass
    lapsed = run.now - timedelta(seconds=CLAIM_STALE_S)
    retaken = (BenchmarkResult.objects
               .filter(Q(report__claimed_by=run.owner) | Q(created_at__lt=lapsed), variant=variant, kind=NIGHTLY,
                       night=run.night, passed__isnull=True)
               .update(report={"claimed_by": run.owner}, created_at=timezone.now()))
    return BenchmarkResult.objects.get(variant=variant, kind=NIGHTLY, night=run.night) if retaken else None


def _record(run: _Run, row: BenchmarkResult, fields: dict[str, Any]) -> bool:
    """Fill in our claimed row; False when another run took the claim over meanwhile."""
    return bool(BenchmarkResult.objects.filter(pk=row.pk, passed__isnull=True, report__claimed_by=run.owner)
                .update(created_at=timezone.now(), **fields))


def _baseline(variant: Variant) -> BenchmarkResult | None:
    """The measurement whose settings the nightly one repeats: the latest job or on-demand result."""
    return (variant.results.filter(kind__in=[BenchmarkResult.Kind.JOB, BenchmarkResult.Kind.ON_DEMAND],
                                   p95_ms__isnull=False)
            .select_related("profile").order_by("-created_at", "-id").first())


def baseline_settings(variant: Variant) -> tuple[Any, readiness.ProfileSpec, bench.BenchConfig]:
    """(profile, spec, bench config) of the variant's baseline: the same profile for the verdict,
    the same bench options, batch sizes, threads and provider for the numbers."""
    baseline = _baseline(variant)
    profile = baseline.profile if baseline else None
    config_dict = (baseline.report or {}).get("config") if baseline else None
    config = bench.BenchConfig.from_dict(config_dict) if config_dict else None
    if profile is not None:
        spec = readiness.ProfileSpec.from_dict(profile.spec())
    elif baseline is not None and config is not None:  # its profile was deleted: keep what it measured
        spec = readiness.ProfileSpec(batch_size=baseline.batch_size, threads=config.threads, target=config.provider)
    else:
        spec = readiness.ProfileSpec()
    return profile, spec, config or job_runner.bench_config({}, spec)


def _measure(run: _Run, variant: Variant) -> dict[str, Any]:
    """The result columns of tonight's measurement, or of the failure to measure."""
    profile, spec, config = baseline_settings(variant)
    parent = run.reports.get(variant.parent_id) or _tonight_report(variant.parent_id, run.night)
    try:
        measured = job_runner.measure_variant(variant, run.setup(variant, spec), config, parent_bench=parent)
    except Exception as exc:  # noqa: BLE001 - one variant that cannot be measured must not stop the night
        log.warning("nightly %s: %s could not be measured: %s", run.night.isoformat(), variant.label, exc)
        return {"profile": profile, **_failure_fields(variant, spec, config, exc)}
    run.reports[variant.pk] = measured.report
    return {"profile": profile, **job_runner.result_fields(variant, spec, measured)}


def _tonight_report(variant_id: int | None, night: date) -> bench.BenchReport | None:
    """A parent measured tonight by another run (for the speed-up check)."""
    if variant_id is None:
        return None
    row = BenchmarkResult.objects.filter(variant_id=variant_id, kind=NIGHTLY, night=night, p95_ms__isnull=False).first()
    return bench.BenchReport.from_dict(row.report) if row is not None else None


def _failure_fields(variant: Variant, spec: readiness.ProfileSpec, config: bench.BenchConfig,
                    exc: Exception) -> dict[str, Any]:
    # The same fingerprint a measurement would carry, so the failure compares with its own setup.
    fingerprint = bench.hardware_fingerprint(config.provider, config.threads)
    failure = f"could not be measured: {exc}"
    return {"batch_size": spec.batch_size, "p50_ms": None, "p95_ms": None, "p99_ms": None, "throughput": None,
            "peak_memory_mb": None, "size_bytes": variant.size_bytes,
            "report": {"error": str(exc), "config": config.to_dict()}, "accuracy": {},
            "verdict": {"passed": False, "failures": [failure], "checks": []}, "passed": False,
            "fingerprint": fingerprint, "fingerprint_hash": job_runner.fingerprint_hash(fingerprint)}


# --- regressions -----------------------------------------------------------------------------


def _point(night: date, p95_ms: float | None, passed: bool | None, fingerprint_hash: str, batch_size: int,
           verdict: dict[str, Any]) -> detector.NightPoint:
    return detector.NightPoint(night=night, p95_ms=p95_ms, passed=passed, fingerprint=fingerprint_hash,
                                 batch_size=batch_size, failures=tuple(verdict.get("failures", [])))


def _check(row: BenchmarkResult) -> detector.RegressionCheck:
    """Compare tonight's row with the variant's earlier finished nights."""
    since = row.night - timedelta(days=POLICY.max_age_nights)
    history = (BenchmarkResult.objects
               .filter(variant_id=row.variant_id, kind=NIGHTLY, passed__isnull=False, night__lt=row.night,
                       night__gte=since)
               .values_list("night", "p95_ms", "passed", "fingerprint_hash", "batch_size", "verdict"))
    tonight = _point(row.night, row.p95_ms, row.passed, row.fingerprint_hash, row.batch_size, row.verdict)
    return detector.detect(tonight, [_point(*values) for values in history], POLICY)


def _raise_regressions(target: NightlyTarget, row: BenchmarkResult, check: detector.RegressionCheck) -> list[int]:
    """A Regression per flagged metric; a metric already open for the variant is counted, not raised again."""
    raised = []
    for metric, reason in zip(check.metrics, check.reasons, strict=True):
        found = _regression_create(target, row, check, metric, reason)
        if found is not None:
            raised.append(found.pk)
            transaction.on_commit(lambda found=found: _announce(found))
    return raised


def _regression_create(target: NightlyTarget, row: BenchmarkResult, check: detector.RegressionCheck, metric: str,
                       reason: str) -> Regression | None:
    stats = check.baseline
    details = {**check.to_dict(), "role": target.role, "alias": target.alias, "fingerprint_hash": row.fingerprint_hash,
               "batch_size": row.batch_size}
    try:
        with transaction.atomic():
            return Regression.objects.create(
                variant=target.variant, result=row, night=row.night, last_night=row.night, metric=metric,
                baseline=stats.median_ms if stats else None, value=check.value_ms, ratio=check.ratio,
                reasons=[reason], details=details)
    except IntegrityError:  # one is open already: the same news, another night
        Regression.objects.filter(variant=target.variant, metric=metric, acknowledged=False,
                                  last_night__lt=row.night).update(last_night=row.night, nights=F("nights") + 1)
        return None


def regression_payload(found: Regression) -> dict[str, Any]:
    """The webhook body of a regression: what, where, tonight against the baseline, and why."""
    variant = found.variant
    return {
        "event": "regression", "id": found.pk, "model": variant.version.model.name,
        "alias": found.details.get("alias", ALIAS), "role": found.details.get("role"), "variant": variant.name,
        "version": variant.version.number, "night": found.night.isoformat(), "metric": found.metric,
        "baseline_median_ms": found.baseline, "tonight_ms": found.value, "ratio": found.ratio,
        "threshold_ms": (found.details.get("baseline") or {}).get("threshold_ms"), "reasons": list(found.reasons),
        "fingerprint": found.result.fingerprint, "fingerprint_hash": found.result.fingerprint_hash,
    }


def _announce(found: Regression) -> None:
    """Tell people: a WARNING with the numbers, then the webhook when one is configured."""
    payload = regression_payload(found)
    log.warning("regression of %s %s (%s) on %s: %s; baseline median %s ms, tonight %s ms, ratio %s, "
                "fingerprint %s: %s", payload["model"], found.variant.label, payload["role"], payload["night"],
                found.metric, _ms(found.baseline), _ms(found.value),
                f"{found.ratio:.3f}" if found.ratio is not None else "n/a", payload["fingerprint_hash"],
                "; ".join(found.reasons))
    url = settings.MODELHUB_REGRESSION_WEBHOOK_URL
    if url:
        webhooks.post_signed(url, payload, secret=settings.MODELHUB_REGRESSION_WEBHOOK_SECRET, event="regression")


def _ms(value: float | None) -> str:
    return f"{value:.4g}" if value is not None else "n/a"


def regression_acknowledge(*, regression: Regression, user: Any) -> Regression:
    """Mark an open regression as seen by a maintainer or approver (it leaves the open gauge; a new
    regression of the same variant and metric can be raised again from the next night)."""
    if not (roles.has_role(user, roles.MAINTAINER) or roles.has_role(user, roles.APPROVER)):
        raise Forbidden("You need the maintainer or approver role to acknowledge regressions.")
    done = Regression.objects.filter(pk=regression.pk, acknowledged=False).update(
        acknowledged=True, acknowledged_by=user, acknowledged_at=timezone.now())
    if not done:
        raise Invalid("This regression was already acknowledged.")
    regression.refresh_from_db()
    return regression
