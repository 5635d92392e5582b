"""Plain-language advice on a set of ranked variants, derived only from their numbers (pure: no Django).

One line per variant worth a remark, then a closing line on the choice, e.g.
"int8-static: 2.4x faster (p50 at batch 1, 95 % interval 2.2–2.6x), 3.9x smaller, −0.3 % agreement,
recommended" or "prune-structured: 1.9x smaller but fails accuracy: try a lower ratio (0.25)".

Speed claims follow the statistics: "faster" / "slower" only when the whole interval of the paired
ratio lies beyond the noise band (``stats.claim``), else "same speed (within noise)". Every speed
claim names its statistic and batch size; a pick that was tied with others says so and why it won.

A step is recommended only when it exists and passes: "prefer int8-static" names an int8-static
variant of this job that passed the profile; a step that failed (``failed``: step name -> pass
name, the job's steps that produced no model) or that was measured and failed the profile is never
suggested; a pass this job did not try is named as the pass to use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.evaluation import stats
from workers.planner import ORIGINAL, Candidate, Ranking, rank, speed_ratio

# Metrics on a 0..1 scale, stated in percentage points.
_FRACTION_METRICS = {"agreement", "accuracy", "cosine_mean", "cosine_min", "pearson"}
# Sizes are exact, but a change this small is not worth a word.
_NOTICEABLE = 1 + stats.NOISE_BAND
_WIDTH_STEP = 0.25


@dataclass
class _Options:
    """What a hint may point at: the candidates that passed, by pass, and the passes whose step failed."""

    passing: dict[str, list[str]] = field(default_factory=dict)
    measured: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, candidates: list[Candidate], failed: Mapping[str, str] | None) -> _Options:
        """The options of one set of candidates and the job's failed steps (step name -> pass name)."""
        options = cls(measured={c.pass_name for c in candidates}, failed=set((failed or {}).values()))
        for c in candidates:
            if c.passed and c.finite:
                options.passing.setdefault(c.pass_name, []).append(c.name)
        return options

    def alternative(self, pass_name: str, words: str) -> str:
        """'prefer <a passing variant of pass_name>' (or the pass, when the job did not try it); 'drop it'
        when its step failed or its variants fail the profile."""
        if self.passing.get(pass_name):
            return f"prefer {self.passing[pass_name][0]}"
        if pass_name in self.failed:
            return f"drop it ({words} failed in this job too)"
        if pass_name in self.measured:
            return f"drop it ({words} fails the profile too)"
        return f"prefer {words}"  # not tried in this job: the pass, not a variant, is what is named


def _ratio_words(ratio: float, more: str, less: str) -> str | None:
    if not math.isfinite(ratio) or ratio <= 0:
        return None
    if ratio >= _NOTICEABLE:
        return f"{ratio:.1f}x {more}"
    if ratio <= 1 / _NOTICEABLE:
        return f"{1 / ratio:.1f}x {less}"
    return None


def speed_words(candidate: Candidate, other: Candidate, paired: dict[str, Any] | None = None) -> str:
    """'2.4x faster (p50 at batch 1, 95 % interval 2.2–2.6x)' or 'same speed (within noise) (p50 at batch 1)'."""
    ratio = speed_ratio(candidate, other, paired)
    where = f"{candidate.statistic} at batch {candidate.batch_size}"
    verdict = stats.claim(ratio)
    if verdict == stats.SAME:
        return f"{verdict} ({where})"
    shown = ratio.value if verdict == stats.FASTER else 1 / ratio.value
    low, high = (ratio.low, ratio.high) if verdict == stats.FASTER else (1 / ratio.high, 1 / ratio.low)
    if low == high:
        return f"{shown:.1f}x {verdict} ({where})"
    return f"{shown:.1f}x {verdict} ({where}, 95 % interval {low:.2f}–{high:.2f}x)"


def _signed(value: float, digits: int) -> str:
    text = f"{abs(value):.{digits}f}"
    return ("−" if value < 0 and float(text) != 0 else "+") + text


def _accuracy_delta(candidate: Candidate, reference: Candidate) -> str | None:
    if candidate.accuracy is None or reference.accuracy is None or not candidate.metric:
        return None
    delta = candidate.accuracy - reference.accuracy
    if candidate.metric in _FRACTION_METRICS:
        return f"{_signed(delta * 100, 1)} % {candidate.metric}"
    return f"{candidate.metric} {_signed(delta, 4)}"


def _versus(candidate: Candidate, reference: Candidate | None) -> list[str]:
    """'2.4x faster', '3.9x smaller', '−0.3 % agreement' against the reference."""
    if reference is None or candidate is reference:
        return []
    parts = [
        speed_words(candidate, reference, candidate.speedup),
        _ratio_words(reference.size_bytes / max(candidate.size_bytes, 1), "smaller", "larger"),
        _accuracy_delta(candidate, reference),
    ]
    return [p for p in parts if p]


def _accuracy_shortfall(candidate: Candidate) -> float | None:
    """How far the metric is from its limit (positive = misses it); None when unknown."""
    if candidate.accuracy_limit is None or candidate.accuracy is None:
        return None
    if not math.isfinite(candidate.accuracy):
        return math.inf
    gap = candidate.accuracy_limit - candidate.accuracy
    return gap if candidate.higher_is_better else -gap


def _shortfall_words(candidate: Candidate, gap: float) -> str:
    if not math.isfinite(gap):
        return "has no usable accuracy"
    if candidate.metric in _FRACTION_METRICS:
        return f"misses accuracy by {gap * 100:.1f} points"
    return f"misses {candidate.metric} by {gap:.4g}"


def _pass_advice(candidate: Candidate, parent: Candidate | None, target: str, options: _Options) -> str | None:
    """What to try next for a variant, from its pass and its numbers (only steps that exist and pass,
    or were not tried, are pointed at)."""
    gap = _accuracy_shortfall(candidate)
    fails_accuracy = gap is not None and gap > 0
    ratio = speed_ratio(candidate, parent, candidate.parent_speedup) if parent not in (None, candidate) else None
    claim = stats.claim(ratio) if ratio is not None else None
    if candidate.pass_name == "fp16" and target == "cpu" and claim is not None and claim != stats.FASTER:
        return (f"{candidate.name}: fp16 on this CPU is no faster ({ratio.value:.2f}x, {candidate.statistic} at batch "
                f"{candidate.batch_size}): use it on CUDA targets")
    if candidate.pass_name == "quantize_dynamic" and claim == stats.SLOWER:
        # Dynamic int8 quantizes activations on every call; small or conv-heavy models pay more than they gain.
        return (f"{candidate.name}: {speed_words(candidate, parent, candidate.parent_speedup)} than {parent.name}: "
                "per-call activation quantization costs more than int8 saves here; "
                f"{options.alternative('quantize_static', 'int8-static')}")
    if not fails_accuracy:
        return None
    if candidate.pass_name == "distill":
        width = float(candidate.options.get("width", 0.5))
        if width >= 1.0:
            return f"{candidate.name}: distilled student {_shortfall_words(candidate, gap)} even at full width: drop distillation"
        return (f"{candidate.name}: distilled student {_shortfall_words(candidate, gap)}: "
                f"try width {min(width + _WIDTH_STEP, 1.0):g}")
    if candidate.pass_name == "prune_structured":
        ratio = float(candidate.options.get("ratio", 0.5))
        smaller = _ratio_words(parent.size_bytes / max(candidate.size_bytes, 1), "smaller", "larger") if parent else None
        lead = f"{smaller} but fails accuracy" if smaller else "fails accuracy"
        return f"{candidate.name}: {lead}: try a lower ratio ({ratio / 2:g})"
    if candidate.pass_name in ("quantize_dynamic", "quantize_static"):
        if "quantize_search" in options.failed:
            return f"{candidate.name}: int8 {_shortfall_words(candidate, gap)} (quantize_search failed in this job): keep float"
        return (f"{candidate.name}: int8 {_shortfall_words(candidate, gap)}: try quantize_search, "
                "which keeps the most sensitive layers in float")
    return None


def _variant_line(candidate: Candidate, reference: Candidate | None, ranking: Ranking) -> str | None:
    if not candidate.finite:
        return f"{candidate.name}: outputs contain NaN or Inf: never deploy it"
    if candidate is reference:
        return None  # the closing line speaks of the reference
    if candidate.name in ranking.rejected:
        return f"{candidate.name}: {ranking.rejected[candidate.name]} (slower, not smaller, not more accurate): drop it"
    if candidate.name in ranking.ordered:
        gains = ", ".join(_versus(candidate, reference)) or "no measurable change"
        if not ranking.judged:
            return f"{candidate.name}: {gains}, measured, not judged (no profile)"
        return f"{candidate.name}: {gains}, {'recommended' if candidate.name == ranking.best else 'passes'}"
    if not candidate.passed:
        return f"{candidate.name}: fails ({'; '.join(candidate.failures)})"
    return None


def _tie_line(ranking: Ranking) -> str | None:
    tied = ranking.ties.get(ranking.best or "")
    if not tied:
        return None
    return (f"{ranking.best} is tied on {ranking.statistic} latency at batch {ranking.batch_size} with "
            f"{', '.join(tied)} (their speed ratio is within noise): chosen by size, then accuracy, then fewest passes")


def _closing_line(by_name: dict[str, Candidate], ranking: Ranking, reference: str) -> str | None:
    if not ranking.judged:
        return ("no profile: variants were measured, not judged; run under the model's governing profile to "
                "choose one")
    if ranking.best is None:
        if ranking.best_effort is None:
            return "no variant passes the profile and none could be measured"
        failures = "; ".join(by_name[ranking.best_effort].failures)
        return f"no variant passes the profile; best effort is {ranking.best_effort} (fails: {failures})"
    if ranking.best == reference:
        return f"the {reference} model is the best that passes: no variant beats it under this profile"
    return None


def advise(
    candidates: list[Candidate],
    *,
    reference: str = ORIGINAL,
    target: str = "cpu",
    fingerprint: dict[str, Any] | None = None,
    ranking: Ranking | None = None,
    failed: Mapping[str, str] | None = None,
) -> list[str]:
    """Recommendations for a person choosing a variant; every line follows from the numbers.
    ``failed``: the job's steps that produced no model (step name -> pass name), never recommended."""
    ranking = ranking or rank(candidates)
    options = _Options.of(candidates, failed)
    by_name = {c.name: c for c in candidates}
    ref = by_name.get(reference)
    order = ranking.ordered + [c.name for c in candidates if c.name not in ranking.ordered]
    lines: list[str] = []
    for name in order:
        candidate = by_name[name]
        line = _variant_line(candidate, ref, ranking)
        if line:
            lines.append(line)
        hint = _pass_advice(candidate, by_name.get(candidate.parent or "", ref), target, options)
        if hint:
            lines.append(hint)
    lines.extend(line for line in (_tie_line(ranking), _closing_line(by_name, ranking, reference)) if line)
    if fingerprint and not fingerprint.get("isa", {}).get("avx512_vnni") and not fingerprint.get("isa", {}).get("avx_vnni"):
        if any(c.pass_name in ("quantize_dynamic", "quantize_static") for c in candidates):
            lines.append("this CPU has no VNNI instructions: int8 speed-ups here understate what VNNI CPUs get")
    return lines


_TARGET_RUNTIME = {"browser-wasm": "wasm", "node": "node", "cuda": "cuda", "cpu": "native"}


def target_line(target: str, ratio: stats.Estimate, p95_ms: float, batch: int, limit_ms: float | None = None) -> str:
    """How a variant runs on ``target`` against native ONNX Runtime on the same machine, e.g. "wasm
    is 2.3x slower than native here: p95 at batch 1 is 41 ms against a 30 ms limit". ``ratio`` is
    the target's speed-up over native (``stats.speedup`` of native's rounds and the target's: < 1
    when the target is slower); "slower" / "faster" only beyond noise (``stats.claim``)."""
    runtime = _TARGET_RUNTIME.get(target, target)
    claimed = stats.claim(ratio)
    if claimed == stats.SLOWER:
        speed = (f"{runtime} is {1 / ratio.value:.1f}x slower than native here "
                 f"(95 % interval {1 / ratio.high:.1f}–{1 / ratio.low:.1f}x)")
    elif claimed == stats.FASTER:
        speed = f"{runtime} is {ratio.value:.1f}x faster than native here (95 % interval {ratio.low:.1f}–{ratio.high:.1f}x)"
    else:
        speed = f"{runtime} runs at native speed here (within noise)"
    figure = f"p95 at batch {batch} is {p95_ms:.3g} ms"
    if limit_ms is None:
        return f"{speed}: {figure}"
    return f"{speed}: {figure} {'against' if p95_ms > limit_ms else 'within'} a {limit_ms:.3g} ms limit"
