"""Which passes to run for a model, and which of the resulting variants is best (pure: no Django).

A plan is a list of ``PlanStep``: each step runs one pass on the model produced by an earlier step
(or on the uploaded ``original``), or, for the default plan's ``search`` step, the search over many. After benchmarking and the readiness verdict each variant
becomes a ``Candidate``; ``rank`` orders the passing ones (ties declared where the intervals say
two variants cannot be told apart), draws the Pareto frontier and rejects variants that gain
nothing over their parent.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from workers.errors import EngineError
from workers.evaluation import stats
from workers.evaluation.accuracy import HIGHER_IS_BETTER, AccuracyReport
from workers.evaluation.bench import BenchReport
from workers.evaluation.readiness import ProfileSpec, Verdict, reference_value
from workers.passes import PASS_NAMES, make_config
from workers.passes.base import PassInputError
from workers.targets import capabilities

ORIGINAL = "original"
SEARCH = "search"  # the default plan's step: not one pass but the search over them (workers.search)
TARGETS = capabilities.TARGETS
SOURCE_FORMATS = ("onnx", "torchscript")
PRIORITIES = ("latency", "size", "accuracy")


class PlanError(EngineError, ValueError):
    """A plan that cannot run; the message names the step and what is wrong."""


@dataclass(frozen=True)
class PlanStep:
    """One pass to run: its step name (unique in the plan), pass, options and input step."""

    name: str
    pass_name: str
    options: dict[str, Any] = field(default_factory=dict)
    source: str = ORIGINAL

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pass_name": self.pass_name, "options": dict(self.options), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanStep:
        return cls(name=data["name"], pass_name=data["pass_name"], options=dict(data.get("options", {})),
                   source=data.get("source", ORIGINAL))


DEFAULT_SEARCH_BUDGET_S = 360.0  # ReadinessProfile.search_budget_s's default: a 22 M-parameter encoder on 2 cores
MAX_SEARCH_BUDGET_S = 6 * 3600.0


def default_plan(*, target: str, source_format: str, budget_s: float | None = None) -> list[PlanStep]:
    """The plan "Optimize" runs when none is given: a search under a time budget (``workers.search``).

    The search starts from the base model (the original ONNX, or the ONNX export of a TorchScript
    upload): accuracy-free graph fusions first, then the int8 family on top of the fastest of them,
    exclusion of the most sensitive nodes when a recipe misses the accuracy bound, and lossy chains
    (prune / distill, then int8); the target decides which recipes make sense. Among the candidates
    that pass on the selection rows, the fastest few go on to the job's final judgment.
    """
    if target not in TARGETS:
        raise PlanError(f"Unknown target {target!r}; use one of {', '.join(TARGETS)}.")
    if source_format not in SOURCE_FORMATS:
        raise PlanError(f"Cannot plan for a {source_format!r} model; plans start from {' or '.join(SOURCE_FORMATS)}.")
    steps: list[PlanStep] = []
    base = ORIGINAL
    if source_format == "torchscript":
        # Every pass works on ONNX; the export checks its outputs against TorchScript.
        steps.append(PlanStep("export", "export", {"opset": 17}))
        base = "export"
    steps.append(PlanStep("search", SEARCH, {"budget_s": float(budget_s or DEFAULT_SEARCH_BUDGET_S)}, base))
    validate_plan(steps)
    return steps


def _search_problem(step: PlanStep) -> str | None:
    unknown = sorted(set(step.options) - {"budget_s"})
    if unknown:
        return f"the search has no option(s) {', '.join(unknown)}; it takes budget_s (seconds)"
    budget = step.options.get("budget_s", DEFAULT_SEARCH_BUDGET_S)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= MAX_SEARCH_BUDGET_S:
        return f"budget_s must be a number of seconds above 0 and at most {MAX_SEARCH_BUDGET_S:g}; got {budget!r}"
    return None


def _options_problem(step: PlanStep) -> str | None:
    """What is wrong with a step's options, as the pass itself would say at run time (data paths
    are filled by the job, so only the options are checked here)."""
    if step.pass_name == SEARCH:
        return _search_problem(step)
    try:
        make_config(step.pass_name, step.options)
    except PassInputError as exc:
        return str(exc).rstrip(".")
    return None


def validate_plan(steps: list[PlanStep]) -> None:
    """Refuse a plan with duplicate names, unknown passes, sources that do not come earlier or
    options its pass would refuse (before a job is queued, not when its step runs)."""
    seen: set[str] = set()
    for position, step in enumerate(steps, start=1):
        where = f"Step {position} ({step.name!r})"
        if not step.name or step.name == ORIGINAL:
            raise PlanError(f"{where} needs a name other than {ORIGINAL!r}.")
        if step.name in seen:
            raise PlanError(f"{where}: the name is used by an earlier step; step names must be unique.")
        if step.pass_name not in PASS_NAMES and step.pass_name != SEARCH:
            raise PlanError(f"{where}: unknown pass {step.pass_name!r}; known passes: {', '.join(PASS_NAMES)}.")
        if step.source != ORIGINAL and step.source not in seen:
            raise PlanError(f"{where}: source {step.source!r} is not an earlier step or {ORIGINAL!r}.")
        if not isinstance(step.options, dict):
            raise PlanError(f"{where}: options must be a JSON object.")
        problem = _options_problem(step)
        if problem:
            raise PlanError(f"{where}: {problem}.")
        seen.add(step.name)


# --- ranking ------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One variant as the ranking sees it: its lineage, its numbers and its verdict.

    ``latency_ms`` is the profile's declared ``statistic`` (p50 unless it says otherwise) at
    ``batch_size``, with its 95 % interval ``latency_low`` .. ``latency_high`` (equal to the value
    where no interval is known) and ``latency_enough`` False when too few calls stand behind it.
    ``speedup`` / ``parent_speedup`` are paired ratios against the reference and the parent
    (``stats.Estimate`` dicts, >1: faster). ``accuracy`` is the profile's metric (None when not
    measured), ``accuracy_limit`` the value it had to reach, ``depth`` the number of passes from the
    upload, ``passed`` None when the variant was measured but not judged (no profile).
    """

    name: str
    parent: str | None
    pass_name: str
    size_bytes: int
    latency_ms: float
    accuracy: float | None
    higher_is_better: bool
    passed: bool | None
    failures: list[str] = field(default_factory=list)
    finite: bool = True
    metric: str | None = None
    accuracy_limit: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    latency_low: float | None = None
    latency_high: float | None = None
    latency_enough: bool = True
    statistic: str = "p50"
    batch_size: int = 1
    depth: int = 0
    speedup: dict[str, Any] | None = None
    parent_speedup: dict[str, Any] | None = None
    rounds: list[list[float]] | None = None  # raw call times of the run at batch_size: pairs comparisons
    _ratios: dict[str, stats.Estimate] = field(default_factory=dict, repr=False, compare=False)

    @property
    def latency(self) -> stats.Estimate:
        low = self.latency_ms if self.latency_low is None else self.latency_low
        high = self.latency_ms if self.latency_high is None else self.latency_high
        return stats.Estimate(self.statistic, self.latency_ms, low, high, 0, self.latency_enough)

    @property
    def measurable(self) -> bool:
        """Finite outputs and finite numbers from enough calls: comparable with others."""
        numbers = [self.latency_ms, float(self.size_bytes)] + ([self.accuracy] if self.accuracy is not None else [])
        return self.finite and self.latency_enough and all(math.isfinite(x) for x in numbers)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_ratios")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(**{k: v for k, v in data.items() if k != "_ratios"})


def speed_ratio(candidate: Candidate, other: Candidate, paired: dict[str, Any] | None = None) -> stats.Estimate:
    """How many times faster ``candidate`` is than ``other``: ``paired`` when given, else the ratio
    paired round by round where both carry the rounds of one run, else the ratio of the two
    intervals' ends (the widest the two allow). The one rule every speed comparison uses."""
    if paired is not None:
        return stats.Estimate.from_dict(paired)
    if other.name in candidate._ratios:
        return candidate._ratios[other.name]
    if candidate.rounds and other.rounds:
        ratio = stats.speedup(other.rounds, candidate.rounds, candidate.statistic)
    else:
        a, b = candidate.latency, other.latency
        ratio = stats.Estimate(f"{candidate.statistic} speed-up", b.value / a.value, b.low / a.high, b.high / a.low,
                               0, a.enough and b.enough)
    candidate._ratios[other.name] = ratio
    return ratio


def _speedup(bench: BenchReport, other: BenchReport | None, profile: ProfileSpec) -> dict[str, Any] | None:
    batch = profile.batch_size
    if other is None or other is bench or batch not in bench.results or batch not in other.results:
        return None
    return bench.speedup(other, profile.statistic, batch).to_dict()


def make_candidate(
    *,
    name: str,
    parent: str | None,
    pass_name: str,
    profile: ProfileSpec,
    bench: BenchReport,
    accuracy: AccuracyReport | None,
    verdict: Verdict,
    reference_accuracy: AccuracyReport | None = None,
    options: dict[str, Any] | None = None,
    reference_bench: BenchReport | None = None,
    parent_bench: BenchReport | None = None,
    depth: int = 0,
) -> Candidate:
    """Build a Candidate from a variant's measurements and verdict under ``profile``."""
    metric = profile.metric_for(accuracy.task) if accuracy is not None else profile.accuracy_metric
    value = accuracy.metrics.get(metric) if accuracy is not None and metric else None
    batch = profile.batch_size
    limit = profile.accuracy_limit(metric, reference_value(metric, reference_accuracy)) if metric else None
    latency = bench.estimate(profile.statistic, batch) if batch in bench.results else None
    return Candidate(
        name=name, parent=parent, pass_name=pass_name, size_bytes=bench.file_size_bytes,
        latency_ms=latency.value if latency else math.inf,
        latency_low=latency.low if latency else None, latency_high=latency.high if latency else None,
        latency_enough=latency.enough if latency else False, statistic=profile.statistic, batch_size=batch,
        accuracy=value, higher_is_better=HIGHER_IS_BETTER.get(metric, True) if metric else True,
        passed=verdict.passed, failures=list(verdict.failures), finite=accuracy.finite if accuracy is not None else True,
        metric=metric, accuracy_limit=limit, options=dict(options or {}), depth=depth,
        speedup=_speedup(bench, reference_bench, profile), parent_speedup=_speedup(bench, parent_bench, profile),
        rounds=bench.rounds(batch) if batch in bench.results else None,
    )


@dataclass
class Ranking:
    """Ranked variants best first, the ties behind each pick, the Pareto frontier, rejections and
    the choice. ``judged`` is False when no candidate was judged (no profile): ``ordered`` is then
    the measured order and ``best`` stays None ("measured, not judged")."""

    ordered: list[str]
    pareto: set[str]
    rejected: dict[str, str]
    best: str | None
    best_effort: str | None
    ties: dict[str, list[str]] = field(default_factory=dict)
    statistic: str = "p50"
    batch_size: int = 1
    judged: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"ordered": list(self.ordered), "pareto": sorted(self.pareto), "rejected": dict(self.rejected),
                "best": self.best, "best_effort": self.best_effort, "ties": {k: list(v) for k, v in self.ties.items()},
                "statistic": self.statistic, "batch_size": self.batch_size, "judged": self.judged}


def _faster(a: Candidate, b: Candidate) -> bool:
    """a is faster than b beyond doubt: the speed ratio's whole interval lies beyond the noise band."""
    return stats.claim(speed_ratio(a, b)) == stats.FASTER


def _smaller(a: Candidate, b: Candidate) -> bool:
    return a.size_bytes * (1 + stats.NOISE_BAND) < b.size_bytes


def _more_accurate(a: Candidate, b: Candidate) -> bool:
    """a is more accurate than b (unknown accuracy is never better; 4 significant digits decide)."""
    if a.accuracy is None or b.accuracy is None or not (math.isfinite(a.accuracy) and math.isfinite(b.accuracy)):
        return False
    x, y = float(f"{a.accuracy:.4g}"), float(f"{b.accuracy:.4g}")
    return x > y if a.higher_is_better else x < y


_BETTER = {"latency": _faster, "size": _smaller, "accuracy": _more_accurate}


def _dominates(a: Candidate, b: Candidate) -> bool:
    """a is no worse than b on latency, size and accuracy, and better on one of them."""
    better = [rule for rule in _BETTER.values() if rule(a, b)]
    worse = [rule for rule in _BETTER.values() if rule(b, a)]
    return bool(better) and not worse


def _slower(child: Candidate, parent: Candidate) -> bool:
    return stats.claim(speed_ratio(child, parent, child.parent_speedup)) == stats.SLOWER


def _no_gain(child: Candidate, parent: Candidate) -> bool:
    """Slower than its parent beyond noise, no smaller and no more accurate."""
    return _slower(child, parent) and not _smaller(child, parent) and not _more_accurate(child, parent)


def _point(candidate: Candidate, key: str) -> float:
    if key == "latency":
        return candidate.latency_ms
    if key == "size":
        return float(candidate.size_bytes)
    accuracy = candidate.accuracy if candidate.accuracy is not None and math.isfinite(candidate.accuracy) else None
    if accuracy is None:
        return math.inf
    return -accuracy if candidate.higher_is_better else accuracy


def _simplest(group: list[Candidate]) -> Candidate:
    """Fewest passes from the upload; among those the original, then by name."""
    return min(group, key=lambda c: (c.depth, c.pass_name != ORIGINAL, c.name))


def _choose(group: list[Candidate], keys: tuple[str, ...]) -> Candidate:
    """The best of ``group`` by ``keys``: the leader on the first key and every candidate tied with it
    go on to the next key; when the keys run out, the simplest wins."""
    if len(group) == 1 or not keys:
        return _simplest(group)
    key, rest = keys[0], keys[1:]
    leader = min(group, key=lambda c: _point(c, key))
    tied = [c for c in group if not _BETTER[key](leader, c)]
    return _choose(tied, rest)


def _tied_with(pick: Candidate, group: list[Candidate], key: str) -> list[str]:
    """The candidates that went on to the next key with ``pick``: those the leader on ``key`` does not
    beat. Ties are not transitive, so naming the pick's own ties could name one the choice never weighed."""
    leader = min(group, key=lambda c: _point(c, key))
    return [c.name for c in group if c is not pick and not _BETTER[key](leader, c)]


def _order(eligible: list[Candidate], priority: tuple[str, ...]) -> tuple[list[str], dict[str, list[str]]]:
    remaining = list(eligible)
    ordered: list[str] = []
    ties: dict[str, list[str]] = {}
    while remaining:
        pick = _choose(remaining, priority)
        tied = _tied_with(pick, remaining, priority[0])
        if tied:
            ties[pick.name] = tied
        ordered.append(pick.name)
        remaining.remove(pick)
    return ordered, ties


def rank(candidates: list[Candidate], *, priority: tuple[str, ...] = PRIORITIES) -> Ranking:
    """Order the passing candidates by ``priority``. Candidates tied on a priority (latency intervals
    that overlap or lie within the noise band, sizes within it, accuracy equal to 4 digits) go on to
    the next priority, then the simplest wins (fewest passes, the original). Each pick names the
    candidates it was tied with on the first priority. Also: the Pareto frontier over all measurable
    candidates, and rejections of variants slower than their parent beyond doubt while neither
    smaller nor more accurate. When nothing passes, ``best_effort`` is the measurable candidate with
    the fewest failures. When nothing was judged, the measured order is given and ``best`` is None."""
    unknown = [p for p in priority if p not in PRIORITIES]
    if unknown or not priority:
        raise PlanError(f"Unknown priority {', '.join(unknown) or '(empty)'}; use {', '.join(PRIORITIES)}.")
    by_name = {c.name: c for c in candidates}
    rejected = {
        c.name: f"no gain over parent {c.parent}"
        for c in candidates
        if c.parent in by_name and c.measurable and by_name[c.parent].measurable and _no_gain(c, by_name[c.parent])
    }
    measurable = [c for c in candidates if c.measurable]
    pareto = {c.name for c in measurable if not any(_dominates(o, c) for o in measurable if o is not c)}
    # Non-finite outputs fail with or without a profile (``readiness.unjudged``): they say nothing
    # about whether the others were judged, unless nothing else is there.
    finite = [c for c in candidates if c.finite] or candidates
    judged = any(c.passed is not None for c in finite)
    eligible = [c for c in measurable if (c.passed is True if judged else c.passed is None) and c.name not in rejected]
    ordered, ties = _order(eligible, priority)
    best_effort = None
    if judged and not ordered:
        failing = [c for c in measurable if c.passed is False]
        fewest = min((len(c.failures) for c in failing), default=0)
        best_effort = _choose([c for c in failing if len(c.failures) == fewest], priority).name if failing else None
    first = candidates[0] if candidates else None
    return Ranking(ordered=ordered, pareto=pareto, rejected=rejected, best=ordered[0] if ordered and judged else None,
                   best_effort=best_effort, ties=ties, statistic=first.statistic if first else "p50",
                   batch_size=first.batch_size if first else 1, judged=judged)
