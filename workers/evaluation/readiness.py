"""Is a variant ready for production under a profile? Every failed rule is stated (pure: no Django).

``verdict`` checks one variant's measurements against a ``ProfileSpec`` and returns each check with
its measured value and limit; ``compatibility`` names the signature changes that would break the
callers of the production model.

Units: sizes and memory in MB of 2**20 bytes, latencies in ms at the profile's batch size.
Accuracy rules read one metric (the profile's, else the task's default):
- ``min_accuracy`` is a bound in the metric's good direction: value >= bound for higher-is-better
  metrics (agreement, accuracy, cosine ...), value <= bound for lower-is-better ones (mae ...);
- ``max_accuracy_drop`` bounds how much worse than the reference the variant is: reference − value
  for higher-is-better, value − reference for lower-is-better. Metrics measured against the
  reference's own outputs have a known perfect value there (agreement and cosine 1, errors 0);
  metrics against labels (accuracy, pearson, label_mae) take the reference's from
  ``reference_accuracy``.
- ``min_speedup`` compares the profile's declared statistic (``statistic``, p50 unless it says
  otherwise) with the parent's at the profile batch size, paired round by round; a variant without
  a parent (the original) has no speed-up rule.
- latency limits (``max_p95_ms``, ``max_p99_ms``) compare the percentile with the limit; a
  percentile from too few calls to mean anything fails its rule with that reason, never silently.
Every latency check records its 95 % interval and the calls behind it beside the point value.
Non-finite outputs always fail, whatever the profile says. Without a profile nothing is judged:
``unjudged`` records the measurement with ``passed=None`` ("measured, not judged").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from workers.evaluation import stats
from workers.evaluation.accuracy import HIGHER_IS_BETTER, AccuracyReport, default_metric
from workers.evaluation.bench import BenchReport
from workers.formats import Signature, TensorSpec
from workers.targets.capabilities import PROVIDER_OF_TARGET

MB = 1024 * 1024
# Metrics compared with the reference's own outputs: the reference scores this against itself.
_SELF_VALUE = {"agreement": 1.0, "cosine_mean": 1.0, "cosine_min": 1.0, "mae": 0.0, "max_abs_error": 0.0, "rel_l2": 0.0}
_PROVIDER_OF_TARGET = PROVIDER_OF_TARGET  # cpu, cuda, node, browser-wasm: the targets' one home


# Limits that bound a measurement from above or below: each must be a finite number > 0 (0 and
# below would refuse every variant, or in min_speedup's case mean nothing); a drop may be 0.
POSITIVE_LIMITS = ("max_size_mb", "max_p95_ms", "max_p99_ms", "max_peak_memory_mb", "min_speedup")
NON_NEGATIVE_LIMITS = ("max_accuracy_drop",)


def profile_problems(fields: dict[str, Any]) -> dict[str, str]:
    """What is wrong with a profile's fields, per field name (empty: nothing); the one rule the API,
    the services and ``ProfileSpec`` share. Absent or None limits are fine (the limit is off)."""
    problems: dict[str, str] = {}
    for name in POSITIVE_LIMITS + NON_NEGATIVE_LIMITS + ("min_accuracy",):
        value = fields.get(name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            problems[name] = f"{name} must be a finite number."
        elif name in POSITIVE_LIMITS and value <= 0:
            problems[name] = f"{name} must be greater than 0 (leave it empty for no limit)."
        elif name in NON_NEGATIVE_LIMITS and value < 0:
            problems[name] = f"{name} must be 0 or more."
    metric = fields.get("accuracy_metric")
    if metric and metric not in HIGHER_IS_BETTER:
        problems["accuracy_metric"] = (f"Unknown accuracy metric {metric!r}; use one of "
                                       f"{', '.join(HIGHER_IS_BETTER)} (or leave it empty for the task's default).")
    return problems


@dataclass(frozen=True)
class ProfileSpec:
    """The bounds a variant must meet to be promoted; every bound is optional."""

    max_size_mb: float | None = None
    max_p95_ms: float | None = None
    max_p99_ms: float | None = None
    batch_size: int = 1
    max_peak_memory_mb: float | None = None
    accuracy_metric: str | None = None
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None
    min_speedup: float | None = None
    target: str = "cpu"
    threads: int = 1
    statistic: str = "p50"  # the latency statistic that ranks variants and measures speed-ups

    def __post_init__(self) -> None:
        if self.statistic not in stats.STATISTICS:
            raise ValueError(f"Unknown statistic {self.statistic!r}; use one of {', '.join(stats.STATISTICS)}.")
        if self.accuracy_metric is not None and self.accuracy_metric not in HIGHER_IS_BETTER:
            raise ValueError(f"Unknown accuracy metric {self.accuracy_metric!r}; use one of {', '.join(HIGHER_IS_BETTER)}.")
        if self.target not in _PROVIDER_OF_TARGET:
            raise ValueError(f"Unknown target {self.target!r}; use one of {', '.join(_PROVIDER_OF_TARGET)}.")
        if self.batch_size < 1 or self.threads < 1:
            raise ValueError("batch_size and threads must be at least 1.")

    def metric_for(self, task: str) -> str:
        return self.accuracy_metric or default_metric(task)

    def accuracy_limit(self, metric: str, reference: float | None) -> float | None:
        """The value ``metric`` must reach: the tighter of min_accuracy and reference − max drop
        (+ for lower-is-better metrics); None when the profile bounds neither."""
        higher = HIGHER_IS_BETTER[metric]
        limits = [self.min_accuracy] if self.min_accuracy is not None else []
        if self.max_accuracy_drop is not None and reference is not None:
            limits.append(reference - self.max_accuracy_drop if higher else reference + self.max_accuracy_drop)
        if not limits:
            return None
        return max(limits) if higher else min(limits)

    @property
    def min_calls(self) -> int:
        """Timed calls the profile's statistics need at its batch size (p99 limits need 1,000)."""
        used = [self.statistic] + [s for s, limit in (("p95", self.max_p95_ms), ("p99", self.max_p99_ms)) if limit]
        return max(stats.min_calls(s) for s in used)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileSpec:
        return cls(**data)


@dataclass
class Verdict:
    """Whether a variant passes (None: measured, not judged: there was no profile), each failure as
    a sentence, and every check that was made."""

    passed: bool | None
    failures: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "judged": self.judged, "failures": list(self.failures),
                "checks": [dict(c) for c in self.checks]}

    @property
    def judged(self) -> bool:
        return self.passed is not None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        passed = data.get("passed")
        return cls(passed=None if passed is None else bool(passed), failures=list(data.get("failures", [])),
                   checks=[dict(c) for c in data.get("checks", [])])


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"


def _numbers(measured: Any, limit: Any) -> tuple[str, str]:
    """Both numbers with as few digits as keep them apart ("0.1163 > 0.116", not "0.116 > 0.116")."""
    if not all(isinstance(x, (int, float)) for x in (measured, limit)):
        return str(measured), str(limit)
    for digits in range(3, 8):
        shown = _number(measured, digits), _number(limit, digits)
        if shown[0] != shown[1]:
            break
    return shown


class _Checks:
    """Collects checks; a failed one also adds its sentence (``failure`` with {measured} and
    {limit} filled in) to the failures."""

    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []
        self.failures: list[str] = []

    def add(self, rule: str, measured: Any, limit: Any, passed: bool, failure: str, **extra: Any) -> None:
        self.checks.append({"rule": rule, "measured": measured, "limit": limit, "passed": passed, **extra})
        if not passed:
            shown_measured, shown_limit = _numbers(measured, limit)
            self.failures.append(failure.format(measured=shown_measured, limit=shown_limit))

    def at_most(self, rule: str, measured: float, limit: float | None, failure: str) -> None:
        if limit is not None:
            self.add(rule, measured, limit, measured <= limit, failure)

    def verdict(self) -> Verdict:
        return Verdict(passed=not self.failures, failures=self.failures, checks=self.checks)


def _check_target(checks: _Checks, profile: ProfileSpec, bench: BenchReport) -> None:
    want = _PROVIDER_OF_TARGET[profile.target]
    got = bench.fingerprint.get("provider", want)
    threads = bench.fingerprint.get("threads", profile.threads)
    checks.add("target", f"{got}, {threads} threads", f"{want}, {profile.threads} threads",
               got == want and threads == profile.threads,
               f"measured on {got} with {threads} threads, but the profile is for {want} with {profile.threads}")


def _interval(value: stats.Estimate) -> dict[str, Any]:
    return {"statistic": value.statistic, "interval": [value.low, value.high], "calls": value.calls}


def _check_percentile(checks: _Checks, value: stats.Estimate, limit: float | None, batch: int) -> None:
    if limit is None:
        return
    name = value.statistic
    if not value.enough:
        checks.add(f"{name}_ms", None, limit, False, f"{name} at batch {batch} rests on {value.calls} calls, too few "
                   f"to judge (it needs {stats.min_calls(name)}): measure longer", **_interval(value))
        return
    checks.add(f"{name}_ms", value.value, limit, value.value <= limit,
               f"{name} {{measured}} ms > {{limit}} ms at batch {batch}", **_interval(value))


def _check_latency(checks: _Checks, profile: ProfileSpec, bench: BenchReport) -> None:
    batch = profile.batch_size
    if profile.max_p95_ms is None and profile.max_p99_ms is None:
        return
    if batch not in bench.results:
        checks.add("latency", None, batch, False, f"latency was not measured at batch {batch}")
        return
    _check_percentile(checks, bench.estimate("p95", batch), profile.max_p95_ms, batch)
    _check_percentile(checks, bench.estimate("p99", batch), profile.max_p99_ms, batch)


def reference_value(metric: str, reference_accuracy: AccuracyReport | None) -> float | None:
    """The reference model's value of a metric: from its report, else its perfect self-score."""
    if reference_accuracy is not None and metric in reference_accuracy.metrics:
        return reference_accuracy.value(metric)
    return _SELF_VALUE.get(metric)


def _check_accuracy(
    checks: _Checks, profile: ProfileSpec, accuracy: AccuracyReport | None, reference_accuracy: AccuracyReport | None
) -> None:
    if accuracy is not None and not accuracy.finite:
        checks.add("finite", False, True, False, "outputs contain NaN or Inf")
    if profile.min_accuracy is None and profile.max_accuracy_drop is None:
        return
    if accuracy is None:
        checks.add("accuracy", None, None, False, "accuracy was not measured (no validation dataset)")
        return
    metric = profile.metric_for(accuracy.task)
    if metric not in accuracy.metrics:
        checks.add("accuracy", None, metric, False, f"{metric} was not measured for this {accuracy.task} model")
        return
    value, higher = accuracy.value(metric), HIGHER_IS_BETTER[metric]
    if profile.min_accuracy is not None:
        bound = profile.min_accuracy
        ok = math.isfinite(value) and (value >= bound if higher else value <= bound)
        sign = "<" if higher else ">"
        checks.add("min_accuracy", value, bound, ok, f"{metric} {{measured}} {sign} {{limit}}")
    if profile.max_accuracy_drop is not None:
        ref = reference_value(metric, reference_accuracy)
        if ref is None:
            checks.add("accuracy_drop", None, profile.max_accuracy_drop, False,
                       f"no reference {metric} to measure a drop against")
            return
        drop = ref - value if higher else value - ref
        ok = math.isfinite(drop) and drop <= profile.max_accuracy_drop
        checks.add("accuracy_drop", drop, profile.max_accuracy_drop, ok,
                   f"accuracy drop {{measured}} > {{limit}} ({metric})")


def _check_speedup(checks: _Checks, profile: ProfileSpec, bench: BenchReport, parent: BenchReport | None) -> None:
    if profile.min_speedup is None or parent is None:
        return
    batch = profile.batch_size
    if batch not in bench.results or batch not in parent.results:
        checks.add("speedup", None, profile.min_speedup, False, f"speed-up was not measured at batch {batch}")
        return
    ratio = bench.speedup(parent, profile.statistic, batch)
    checks.add("speedup", ratio.value, profile.min_speedup, ratio.value >= profile.min_speedup,
               f"speed-up {{measured}}x < {{limit}}x over parent ({profile.statistic} at batch {batch})",
               **_interval(ratio))


def verdict(
    profile: ProfileSpec,
    *,
    bench: BenchReport,
    accuracy: AccuracyReport | None,
    reference_accuracy: AccuracyReport | None = None,
    parent_bench: BenchReport | None = None,
    size_bytes: int | None = None,
) -> Verdict:
    """Check one variant against the profile; see the module docstring for each rule."""
    checks = _Checks()
    _check_target(checks, profile, bench)
    size_mb = (size_bytes if size_bytes is not None else bench.file_size_bytes) / MB
    checks.at_most("size_mb", size_mb, profile.max_size_mb, "size {measured} MB > {limit} MB")
    _check_latency(checks, profile, bench)
    checks.at_most("peak_memory_mb", bench.peak_memory_mb, profile.max_peak_memory_mb,
                   "peak memory {measured} MB > {limit} MB")
    _check_accuracy(checks, profile, accuracy, reference_accuracy)
    _check_speedup(checks, profile, bench, parent_bench)
    return checks.verdict()


def unjudged(accuracy: AccuracyReport | None) -> Verdict:
    """The verdict of a measurement made under no profile: not judged (None), except that
    non-finite outputs fail whatever the profile."""
    if accuracy is not None and not accuracy.finite:
        return Verdict(passed=False, failures=["outputs contain NaN or Inf"],
                       checks=[{"rule": "finite", "measured": False, "limit": True, "passed": False}])
    return Verdict(passed=None)


# --- signature compatibility --------------------------------------------------------------------


def _shape_changes(kind: str, old: TensorSpec, new: TensorSpec) -> list[str]:
    if len(old.shape) != len(new.shape):
        return [f"{kind} {old.name!r} rank changed {len(old.shape)} -> {len(new.shape)}"]
    changes = []
    for axis, (was, now) in enumerate(zip(old.shape, new.shape, strict=True)):
        fixed_before, fixed_now = isinstance(was, int), isinstance(now, int)
        # A fixed dim that becomes symbolic accepts everything it did: not breaking.
        if (fixed_before and fixed_now and was != now) or (fixed_now and not fixed_before):
            changes.append(f"{kind} {old.name!r} dim {axis} changed {was} -> {now}")
    return changes


def _tensor_changes(kind: str, production: tuple[TensorSpec, ...], candidate: tuple[TensorSpec, ...]) -> list[str]:
    new_by_name = {t.name: t for t in candidate}
    old_names = [t.name for t in production]
    gone = [t for t in production if t.name not in new_by_name]
    added = [t for t in candidate if t.name not in old_names]
    changes = []
    for old in production:
        new = new_by_name.get(old.name)
        if new is None:
            continue
        if old.dtype != new.dtype:
            changes.append(f"{kind} {old.name!r} dtype changed {old.dtype} -> {new.dtype}")
        changes.extend(_shape_changes(kind, old, new))
    # Same count, same position, new name: a rename, which is how a caller would see it.
    if len(gone) == len(added):
        changes.extend(f"{kind} {old.name!r} renamed to {new.name!r}" for old, new in zip(gone, added, strict=True))
        return changes
    changes.extend(f"{kind} {t.name!r} removed" for t in gone)
    if kind == "input":  # a new output is ignored by callers; a new input must be fed
        changes.extend(f"input {t.name!r} added" for t in added)
    return changes


def compatibility(candidate: Signature, production: Signature) -> list[str]:
    """The changes that would break callers of ``production`` if ``candidate`` replaced it.

    Breaking: an input renamed, removed or added; an output renamed or removed; a dtype changed;
    a fixed dimension changed (or a symbolic one fixed). Relaxing a fixed dimension to a symbolic
    one and adding an output are compatible. Empty list: compatible.
    """
    return _tensor_changes("input", production.inputs, candidate.inputs) + _tensor_changes(
        "output", production.outputs, candidate.outputs
    )
