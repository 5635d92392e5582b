"""Regressions raised by the nightly re-benchmark: a night's row as the detector sees it, the
check against the variant's earlier nights, the ``Regression`` rows, their announcement (a
WARNING and the signed webhook) and their acknowledgement.

The rule itself lives in the pure ``workers.evaluation.regression``; this module turns rows into
its points and its findings into rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from modelhub import roles, webhooks
from modelhub.errors import Forbidden, Invalid
from modelhub.models import BenchmarkResult, Regression
from workers.evaluation import regression as detector
from workers.evaluation import stats

log = logging.getLogger("modelhub.nightly")

POLICY = detector.Policy()
ALIAS = "production"
NIGHTLY = BenchmarkResult.Kind.NIGHTLY


def statistic_of(name: str | None) -> str:
    """The statistic a row declares (rows from before it was recorded: p50)."""
    return name if name in stats.QUANTILE else "p50"


def _limits(profile_spec: dict[str, Any] | None) -> str:
    """A short digest of the limits a verdict was made under ("" when not recorded)."""
    if not profile_spec:
        return ""
    return hashlib.sha256(json.dumps(profile_spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def night_point(row: BenchmarkResult) -> detector.NightPoint:
    """A nightly row as the detector sees it: its declared statistic with the interval and calls
    behind it (rows from before intervals were kept: the point itself), its verdict and setup."""
    statistic = statistic_of(row.statistic)
    value = getattr(row, f"{statistic}_ms")
    interval = (row.intervals or {}).get(statistic) or {}
    measured = value is not None and bool(interval)
    return detector.NightPoint(
        night=row.night, value_ms=value, passed=row.passed, fingerprint=row.fingerprint_hash,
        batch_size=row.batch_size, failures=tuple((row.verdict or {}).get("failures", [])), statistic=statistic,
        low_ms=interval.get("low") if measured else None, high_ms=interval.get("high") if measured else None,
        calls=interval.get("calls") if measured else None, enough=bool(interval.get("enough", True)),
        judged_by=_limits(row.profile_spec))


_POINT_FIELDS = ("night", "statistic", "p50_ms", "p95_ms", "p99_ms", "intervals", "passed", "fingerprint_hash",
                 "batch_size", "verdict", "profile_spec")


def check_night(row: BenchmarkResult, tonight: detector.NightPoint) -> detector.RegressionCheck:
    """Compare tonight's row (as ``tonight``) with the variant's earlier finished nights."""
    since = row.night - timedelta(days=POLICY.max_age_nights)
    history = (BenchmarkResult.objects
               .filter(variant_id=row.variant_id, kind=NIGHTLY, pending=False, night__lt=row.night,
                       night__gte=since)
               .only(*_POINT_FIELDS))
    return detector.detect(tonight, [night_point(earlier) for earlier in history], POLICY)


def raise_regressions(target: Any, row: BenchmarkResult, check: detector.RegressionCheck) -> list[int]:
    """``target``: the nightly target (variant, role, alias). A Regression per flagged metric; a metric already open for the variant is counted, not raised again."""
    raised = []
    for metric, reason in zip(check.metrics, check.reasons, strict=True):
        found = _regression_create(target, row, check, metric, reason)
        if found is not None:
            raised.append(found.pk)
            transaction.on_commit(lambda found=found: _announce(found))
    return raised


def _regression_create(target: Any, row: BenchmarkResult, check: detector.RegressionCheck, metric: str,
                       reason: str) -> Regression | None:
    base = check.baseline
    details = {**check.to_dict(), "role": target.role, "alias": target.alias, "fingerprint_hash": row.fingerprint_hash,
               "batch_size": row.batch_size, "profile": row.profile.name if row.profile else None}
    try:
        with transaction.atomic():
            return Regression.objects.create(
                variant=target.variant, result=row, night=row.night, last_night=row.night, metric=metric,
                baseline=base.median_ms if base else None, value=check.value_ms, ratio=check.ratio,
                reasons=[reason], details=details)
    except IntegrityError:  # one is open already: the same news, another night
        Regression.objects.filter(variant=target.variant, metric=metric, acknowledged=False,
                                  last_night__lt=row.night).update(last_night=row.night, nights=F("nights") + 1)
        return None


def regression_payload(found: Regression) -> dict[str, Any]:
    """The webhook body of a regression: what, where, tonight (the declared statistic with its 95 %
    interval) against the baseline, and why."""
    variant, details = found.variant, found.details
    low, high = details.get("low_ms"), details.get("high_ms")
    return {
        "event": "regression", "id": found.pk, "model": variant.version.model.name,
        "alias": details.get("alias", ALIAS), "role": details.get("role"), "variant": variant.name,
        "version": variant.version.number, "night": found.night.isoformat(), "metric": found.metric,
        "statistic": details.get("statistic"), "baseline_median_ms": found.baseline, "tonight_ms": found.value,
        "tonight_interval_ms": [low, high] if low is not None and high is not None else None, "ratio": found.ratio,
        "threshold_ms": (details.get("baseline") or {}).get("threshold_ms"), "reasons": list(found.reasons),
        "fingerprint": found.result.fingerprint, "fingerprint_hash": found.result.fingerprint_hash,
    }


def _announce(found: Regression) -> None:
    """Tell people: a WARNING with the numbers, then the webhook when one is configured."""
    payload = regression_payload(found)
    interval = payload["tonight_interval_ms"]
    log.warning("regression of %s %s (%s) on %s: %s; baseline median %s ms, tonight %s ms%s, ratio %s, "
                "fingerprint %s: %s", payload["model"], found.variant.label, payload["role"], payload["night"],
                found.metric, _ms(found.baseline), _ms(found.value),
                f" [{_ms(interval[0])}, {_ms(interval[1])}]" if interval else "",
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
