"""Did tonight's measurement of a variant get worse than its recent nights? (pure: no Django)

What is compared. Each night carries the profile's declared latency statistic (``statistic``: p50
unless the profile says otherwise) at the profile's batch size, with its 95 % interval (``low_ms``,
``high_ms``) and the calls behind it (``workers.evaluation.stats.estimate``). The baseline of a
night is the variant's earlier nights on the same *setup*: the same hardware fingerprint (CPU,
cores, library versions, provider, threads), the same batch size and the same statistic, within
the last ``max_age_nights``; of those, the last ``window`` measured nights (a night whose
statistic rests on too few calls is no baseline). A setup never seen before starts a new
baseline: a move to other hardware, an upgrade of onnxruntime or a profile that now ranks by
another statistic never raises an alarm by itself. Rows measured before intervals were kept have
none: their interval is the point itself (``low = high = value``).

The one latency rule (``_latency_rise``). With ``median`` and ``MAD`` (median absolute deviation)
of the baseline nights' values, the top of the band is

    threshold = median + max(min_rise × median, mad_factor × MAD)          (``baseline_stats``)

and tonight regresses when its whole interval lies above it: ``tonight.low > threshold``, i.e.
``low > median × (1 + min_rise)`` and ``low > median + mad_factor × MAD``. Why each part:

- *the interval's low end, not the point*: one night's figure is a sample of a few hundred calls.
  Its interval (a bootstrap over rounds joined with the order-statistic interval) is what tonight's
  calls allow. Only when even its lowest plausible value is above the band is tonight slower for
  sure; a noisy night (a busy neighbour, a few slow calls) has a wide interval that reaches into
  the band, and is not an alarm. A night with too few calls for its statistic makes no latency
  judgment at all.
- *the declared statistic, not p95*: at sub-millisecond latencies the p95 of a few hundred calls
  is a dozen calls; scheduler hiccups on an idle host move it several times over (five idle
  nights took a p95 from 0.055 to 0.209 ms). The profile's statistic is what ranks its variants.
- *the MAD of earlier nights*: one night's interval cannot see what changes between nights (which
  cores the process lands on, its memory layout, the clock). The spread of the baseline nights
  does, robustly: one odd night moves a median and a MAD very little. A noisy history widens the
  band; a steady one keeps it at ``min_rise``.
- *the ``min_rise`` floor (10 %)*: a few steady nights can have a MAD near 0, and a change of a few
  per cent is not worth waking anyone for. A 20 % step with a tight interval is well above it.

The latency rule needs ``min_points`` measured nights; before that the variant is warming up.

The readiness rule: tonight's verdict fails (or it could not be measured at all) where the last
judged night on the same setup, under the same limits (``judged_by``; empty: unknown, taken as
the same), passed. This needs one earlier night only. A profile whose limits changed is new
rules, not a worse variant: it never flips a verdict by itself.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

from workers.evaluation.stats import Estimate

OK = "ok"
REGRESSED = "regressed"
WARM_UP = "warm-up"
NEW_BASELINE = "new-baseline"
P95 = "p95_ms"
READINESS = "readiness"


def latency_metric(statistic: str) -> str:
    """The metric name of a latency regression of ``statistic``: p50_ms, p95_ms or p99_ms."""
    return f"{statistic}_ms"


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
    """One night's measurement of a variant: the declared statistic with its interval (None when
    it could not be measured), the calls behind it, and the verdict.

    ``low_ms`` / ``high_ms`` left None are the value itself (rows from before intervals were kept);
    ``calls`` None is unknown. ``judged_by`` names the limits the verdict was made under ("": not
    known)."""

    night: date
    value_ms: float | None
    passed: bool | None
    fingerprint: str
    batch_size: int = 1
    failures: tuple[str, ...] = ()
    statistic: str = "p50"
    low_ms: float | None = None
    high_ms: float | None = None
    calls: int | None = None
    enough: bool = True
    judged_by: str = ""

    def __post_init__(self) -> None:
        if self.value_ms is None:
            object.__setattr__(self, "low_ms", None)
            object.__setattr__(self, "high_ms", None)
            return
        if self.low_ms is None:
            object.__setattr__(self, "low_ms", self.value_ms)
        if self.high_ms is None:
            object.__setattr__(self, "high_ms", self.value_ms)

    @classmethod
    def from_estimate(cls, night: date, value: Estimate, *, passed: bool | None, fingerprint: str,
                      batch_size: int = 1, **extra: Any) -> NightPoint:
        """A measured night from a ``stats.Estimate`` (its statistic, interval, calls and enough)."""
        return cls(night=night, value_ms=value.value, passed=passed, fingerprint=fingerprint, batch_size=batch_size,
                   statistic=value.statistic, low_ms=value.low, high_ms=value.high, calls=value.calls,
                   enough=value.enough, **extra)

    @property
    def setup(self) -> tuple[str, int, str]:
        """What a baseline must share with tonight: hardware fingerprint, batch size, statistic."""
        return self.fingerprint, self.batch_size, self.statistic

    @property
    def measured(self) -> bool:
        return self.value_ms is not None


@dataclass(frozen=True)
class BaselineStats:
    """The baseline tonight was compared with: median and MAD of the nights' statistic, the top of
    the band (``threshold_ms``), the nights."""

    median_ms: float
    mad_ms: float
    threshold_ms: float
    points: int
    nights: tuple[date, ...]
    statistic: str = "p50"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["nights"] = [night.isoformat() for night in self.nights]
        return data


@dataclass(frozen=True)
class RegressionCheck:
    """The outcome for one variant and night: regressed or not, why, and the numbers behind it
    (tonight's statistic with its interval and calls, its ratio to the baseline median)."""

    regressed: bool
    status: str
    metrics: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    baseline: BaselineStats | None = None
    value_ms: float | None = None
    ratio: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    statistic: str = "p50"
    low_ms: float | None = None
    high_ms: float | None = None
    calls: int | None = None
    enough: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"regressed": self.regressed, "status": self.status, "metrics": list(self.metrics),
                "reasons": list(self.reasons), "baseline": self.baseline.to_dict() if self.baseline else None,
                "statistic": self.statistic, "value_ms": self.value_ms, "low_ms": self.low_ms,
                "high_ms": self.high_ms, "calls": self.calls, "enough": self.enough, "ratio": self.ratio,
                "notes": list(self.notes)}


def baseline_stats(values: Sequence[float], nights: Sequence[date], policy: Policy,
                   statistic: str = "p50") -> BaselineStats:
    """Median, median absolute deviation and the top of the band (see the module docstring)."""
    median = statistics.median(values)
    mad = statistics.median(abs(value - median) for value in values)
    threshold = median + max(policy.min_rise * median, policy.mad_factor * mad)
    return BaselineStats(median_ms=median, mad_ms=mad, threshold_ms=threshold, points=len(values),
                         nights=tuple(nights), statistic=statistic)


def _earlier(tonight: NightPoint, history: Sequence[NightPoint], policy: Policy) -> list[NightPoint]:
    oldest = tonight.night - timedelta(days=policy.max_age_nights)
    return sorted((p for p in history if oldest <= p.night < tonight.night), key=lambda p: p.night)


def _same_limits(a: NightPoint, b: NightPoint) -> bool:
    return not a.judged_by or not b.judged_by or a.judged_by == b.judged_by


def _readiness_flip(tonight: NightPoint, same: list[NightPoint]) -> str | None:
    if tonight.passed is not False:
        return None
    judged = [p for p in same if p.passed is not None and _same_limits(p, tonight)]
    if not judged or judged[-1].passed is not True:
        return None
    why = "; ".join(tonight.failures) or "no reason recorded"
    return f"readiness verdict flipped to fail (passed on {judged[-1].night.isoformat()}): {why}"


def _interval(point: NightPoint) -> str:
    calls = f", {point.calls} calls" if point.calls else ""
    return f"{point.statistic} {point.value_ms:.4g} ms [{point.low_ms:.4g}, {point.high_ms:.4g}]{calls}"


def _latency_rise(tonight: NightPoint, stats: BaselineStats, policy: Policy) -> str | None:
    """The one latency rule: tonight's whole interval above the top of the baseline band."""
    if not tonight.measured or not tonight.enough or tonight.low_ms <= stats.threshold_ms:
        return None
    rise = (tonight.value_ms / stats.median_ms - 1) * 100 if stats.median_ms > 0 else float("inf")
    return (f"{_interval(tonight)} is {rise:.0f} % above the {stats.points}-night median {stats.median_ms:.4g} ms: "
            f"its whole interval lies above the band's top {stats.threshold_ms:.4g} ms (median + max("
            f"{policy.min_rise:.0%}, {policy.mad_factor:g} × MAD {stats.mad_ms:.3g} ms))")


def _latency_notes(tonight: NightPoint, stats: BaselineStats | None) -> tuple[str, ...]:
    if not tonight.measured:
        return ()
    if not tonight.enough:
        return (f"{tonight.statistic} rests on {tonight.calls} calls, too few for a latency judgment tonight",)
    if stats is not None and tonight.value_ms > stats.threshold_ms >= tonight.low_ms:
        return (f"{_interval(tonight)} is above the band's top {stats.threshold_ms:.4g} ms but its interval "
                f"reaches into the band: within noise, not flagged",)
    return ()


def _setup_notes(tonight: NightPoint, earlier: list[NightPoint], same: list[NightPoint]) -> tuple[str, ...]:
    if earlier and earlier[-1].setup != tonight.setup:
        before = earlier[-1]
        where = "an earlier baseline of this setup" if same else "a new baseline"
        return (f"setup changed since {before.night.isoformat()} (fingerprint {before.fingerprint} batch "
                f"{before.batch_size} {before.statistic} -> {tonight.fingerprint} batch {tonight.batch_size} "
                f"{tonight.statistic}): compared with {where}",)
    return ()


def detect(tonight: NightPoint, history: Sequence[NightPoint], policy: Policy | None = None) -> RegressionCheck:
    """Compare tonight with the variant's recent nights on the same setup (see the module docstring)."""
    policy = policy or Policy()
    earlier = _earlier(tonight, history, policy)
    same = [p for p in earlier if p.setup == tonight.setup]
    measured = [p for p in same if p.measured and p.enough][-policy.window:]
    stats = (baseline_stats([p.value_ms for p in measured], [p.night for p in measured], policy, tonight.statistic)
             if measured else None)
    found = {READINESS: _readiness_flip(tonight, same)}
    warm = stats is not None and len(measured) >= policy.min_points
    if warm:
        found[latency_metric(tonight.statistic)] = _latency_rise(tonight, stats, policy)
    flagged = {metric: reason for metric, reason in found.items() if reason}
    ratio = tonight.value_ms / stats.median_ms if stats and tonight.measured and stats.median_ms > 0 else None
    return RegressionCheck(
        regressed=bool(flagged), status=_status(bool(flagged), same, measured, policy), metrics=tuple(flagged),
        reasons=tuple(flagged.values()), baseline=stats, value_ms=tonight.value_ms, ratio=ratio,
        notes=_setup_notes(tonight, earlier, same) + _latency_notes(tonight, stats if warm else None),
        statistic=tonight.statistic, low_ms=tonight.low_ms, high_ms=tonight.high_ms, calls=tonight.calls,
        enough=tonight.enough,
    )


def _status(regressed: bool, same: list[NightPoint], measured: list[NightPoint], policy: Policy) -> str:
    if regressed:
        return REGRESSED
    if not same:
        return NEW_BASELINE
    return OK if len(measured) >= policy.min_points else WARM_UP
