"""Did tonight's measurement of a variant get worse than its recent nights? (pure: no Django)

The baseline of a night is the variant's earlier nightly measurements taken on the same setup:
the same hardware fingerprint (CPU, cores, library versions, provider, threads) and the same
batch size, within the last ``max_age_nights``; of those, the last ``window`` measured nights.
A setup never seen before starts a new baseline: a move to other hardware, or an upgrade of
onnxruntime, never raises an alarm by itself.

Tonight regresses when

- its p95 exceeds the baseline median by more than ``max(min_rise × median, mad_factor × MAD)``,
  where MAD is the baseline's median absolute deviation: a noisy history widens the band, a
  steady one keeps it at ``min_rise`` (10 %); this needs ``min_points`` measured nights, before
  that the variant is warming up;
- or its readiness verdict fails (or it could not be measured at all) where the previous night on
  the same setup passed. This needs one earlier night only.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

OK = "ok"
REGRESSED = "regressed"
WARM_UP = "warm-up"
NEW_BASELINE = "new-baseline"
P95 = "p95_ms"
READINESS = "readiness"


@dataclass(frozen=True)
class Policy:
    """How much history a baseline takes and how far tonight may move before it is a regression."""

    window: int = 7
    min_points: int = 3
    min_rise: float = 0.10
    mad_factor: float = 3.0
    max_age_nights: int = 28

    def __post_init__(self) -> None:
        if self.window < 1 or not 1 <= self.min_points <= self.window:
            raise ValueError("window must be >= 1 and 1 <= min_points <= window.")
        if self.min_rise < 0 or self.mad_factor < 0 or self.max_age_nights < 1:
            raise ValueError("min_rise and mad_factor must be >= 0 and max_age_nights >= 1.")


@dataclass(frozen=True)
class NightPoint:
    """One night's measurement of a variant: p95 (None when it could not be measured) and verdict."""

    night: date
    p95_ms: float | None
    passed: bool | None
    fingerprint: str
    batch_size: int = 1
    failures: tuple[str, ...] = ()

    @property
    def setup(self) -> tuple[str, int]:
        return self.fingerprint, self.batch_size


@dataclass(frozen=True)
class BaselineStats:
    """The baseline tonight was compared with: median and MAD of p95, the alarm threshold, the nights."""

    median_ms: float
    mad_ms: float
    threshold_ms: float
    points: int
    nights: tuple[date, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["nights"] = [night.isoformat() for night in self.nights]
        return data


@dataclass(frozen=True)
class RegressionCheck:
    """The outcome for one variant and night: regressed or not, why, and the numbers behind it."""

    regressed: bool
    status: str
    metrics: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    baseline: BaselineStats | None = None
    value_ms: float | None = None
    ratio: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"regressed": self.regressed, "status": self.status, "metrics": list(self.metrics),
                "reasons": list(self.reasons), "baseline": self.baseline.to_dict() if self.baseline else None,
                "value_ms": self.value_ms, "ratio": self.ratio, "notes": list(self.notes)}


def baseline_stats(values: Sequence[float], nights: Sequence[date], policy: Policy) -> BaselineStats:
    """Median, median absolute deviation and the threshold above which a p95 is a regression."""
    median = statistics.median(values)
    mad = statistics.median(abs(value - median) for value in values)
    threshold = median + max(policy.min_rise * median, policy.mad_factor * mad)
    return BaselineStats(median_ms=median, mad_ms=mad, threshold_ms=threshold, points=len(values),
                         nights=tuple(nights))


def _earlier(tonight: NightPoint, history: Sequence[NightPoint], policy: Policy) -> list[NightPoint]:
    oldest = tonight.night - timedelta(days=policy.max_age_nights)
    return sorted((p for p in history if oldest <= p.night < tonight.night), key=lambda p: p.night)


def _readiness_flip(tonight: NightPoint, same: list[NightPoint]) -> str | None:
    if tonight.passed is not False or not same or same[-1].passed is not True:
        return None
    why = "; ".join(tonight.failures) or "no reason recorded"
    return f"readiness verdict flipped to fail (passed on {same[-1].night.isoformat()}): {why}"


def _p95_rise(tonight: NightPoint, stats: BaselineStats, policy: Policy) -> str | None:
    if tonight.p95_ms is None or tonight.p95_ms <= stats.threshold_ms:
        return None
    rise = (tonight.p95_ms / stats.median_ms - 1) * 100 if stats.median_ms > 0 else float("inf")
    return (f"p95 {tonight.p95_ms:.4g} ms is {rise:.0f} % above the {stats.points}-night median "
            f"{stats.median_ms:.4g} ms (threshold {stats.threshold_ms:.4g} ms = median + max("
            f"{policy.min_rise:.0%}, {policy.mad_factor:g} × MAD {stats.mad_ms:.3g} ms))")


def _notes(tonight: NightPoint, earlier: list[NightPoint], same: list[NightPoint]) -> tuple[str, ...]:
    if earlier and earlier[-1].setup != tonight.setup:
        before = earlier[-1]
        where = "an earlier baseline of this setup" if same else "a new baseline"
        return (f"setup changed since {before.night.isoformat()} (fingerprint {before.fingerprint} batch "
                f"{before.batch_size} -> {tonight.fingerprint} batch {tonight.batch_size}): compared with {where}",)
    return ()


def detect(tonight: NightPoint, history: Sequence[NightPoint], policy: Policy | None = None) -> RegressionCheck:
    """Compare tonight with the variant's recent nights on the same setup (see the module docstring)."""
    policy = policy or Policy()
    earlier = _earlier(tonight, history, policy)
    same = [p for p in earlier if p.setup == tonight.setup]
    measured = [p for p in same if p.p95_ms is not None][-policy.window:]
    stats = baseline_stats([p.p95_ms for p in measured], [p.night for p in measured], policy) if measured else None
    found = {READINESS: _readiness_flip(tonight, same)}
    if stats is not None and len(measured) >= policy.min_points:
        found[P95] = _p95_rise(tonight, stats, policy)
    flagged = {metric: reason for metric, reason in found.items() if reason}
    ratio = tonight.p95_ms / stats.median_ms if stats and tonight.p95_ms is not None and stats.median_ms > 0 else None
    return RegressionCheck(
        regressed=bool(flagged), status=_status(bool(flagged), same, measured, policy), metrics=tuple(flagged),
        reasons=tuple(flagged.values()), baseline=stats, value_ms=tonight.p95_ms, ratio=ratio,
        notes=_notes(tonight, earlier, same),
    )


def _status(regressed: bool, same: list[NightPoint], measured: list[NightPoint], policy: Policy) -> str:
    if regressed:
        return REGRESSED
    if not same:
        return NEW_BASELINE
    return OK if len(measured) >= policy.min_points else WARM_UP
