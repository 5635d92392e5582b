"""Plain-language advice on a set of ranked variants, derived only from their numbers (pure: no Django).

One line per variant worth a remark, then a closing line on the choice, e.g.
"int8-static: 2.4x faster, 3.9x smaller, −0.3 % agreement, recommended" or
"prune-structured: 1.9x smaller but fails accuracy: try a lower ratio (0.25)".
"""

from __future__ import annotations

import math
from typing import Any

from workers.planner import ORIGINAL, Candidate, Ranking, rank

# Metrics on a 0..1 scale, stated in percentage points.
_FRACTION_METRICS = {"agreement", "accuracy", "cosine_mean", "cosine_min", "pearson"}
# Ratios closer to 1 than this are "as fast" / "the same size": within measurement noise.
_NOTICEABLE = 1.1
_WIDTH_STEP = 0.25


def _ratio_words(ratio: float, more: str, less: str) -> str | None:
    if not math.isfinite(ratio) or ratio <= 0:
        return None
    if ratio >= _NOTICEABLE:
        return f"{ratio:.1f}x {more}"
    if ratio <= 1 / _NOTICEABLE:
        return f"{1 / ratio:.1f}x {less}"
    return None


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
        _ratio_words(reference.latency_ms / candidate.latency_ms, "faster", "slower"),
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


def _pass_advice(candidate: Candidate, parent: Candidate | None, target: str) -> str | None:
    """What to try next for a variant, from its pass and its numbers."""
    gap = _accuracy_shortfall(candidate)
    fails_accuracy = gap is not None and gap > 0
    speedup = parent.latency_ms / candidate.latency_ms if parent is not None and parent is not candidate else None
    if candidate.pass_name == "fp16" and target == "cpu" and speedup is not None and speedup < _NOTICEABLE:
        return f"{candidate.name}: fp16 on this CPU is no faster ({speedup:.2f}x): use it on CUDA targets"
    if candidate.pass_name == "quantize_dynamic" and speedup is not None and speedup <= 1 / _NOTICEABLE:
        # Dynamic int8 quantizes activations on every call; small or conv-heavy models pay more than they gain.
        return (f"{candidate.name}: {1 / speedup:.1f}x slower than {parent.name}: per-call activation "
                "quantization costs more than int8 saves here; prefer int8-static")
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
        return f"{candidate.name}: {gains}, {'recommended' if candidate.name == ranking.best else 'passes'}"
    if not candidate.passed:
        return f"{candidate.name}: fails ({'; '.join(candidate.failures)})"
    return None


def _closing_line(by_name: dict[str, Candidate], ranking: Ranking, reference: str) -> str | None:
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
) -> list[str]:
    """Recommendations for a person choosing a variant; every line follows from the numbers."""
    ranking = ranking or rank(candidates)
    by_name = {c.name: c for c in candidates}
    ref = by_name.get(reference)
    order = ranking.ordered + [c.name for c in candidates if c.name not in ranking.ordered]
    lines: list[str] = []
    for name in order:
        candidate = by_name[name]
        line = _variant_line(candidate, ref, ranking)
        if line:
            lines.append(line)
        hint = _pass_advice(candidate, by_name.get(candidate.parent or "", ref), target)
        if hint:
            lines.append(hint)
    closing = _closing_line(by_name, ranking, reference)
    if closing:
        lines.append(closing)
    if fingerprint and not fingerprint.get("isa", {}).get("avx512_vnni") and not fingerprint.get("isa", {}).get("avx_vnni"):
        if any(c.pass_name in ("quantize_dynamic", "quantize_static") for c in candidates):
            lines.append("this CPU has no VNNI instructions: int8 speed-ups here understate what VNNI CPUs get")
    return lines
