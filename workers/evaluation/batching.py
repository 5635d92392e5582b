"""Does server-side batching pay for a variant? Read from its benchmark (pure: no Django).

Batching joins concurrent batch-1 requests into one run of up to 8 rows. It pays when both hold:

- throughput: rows per second at batch 8 beat batch 1 beyond noise. The gain is
  ``8 × p50(batch 1) / p50(batch 8)`` with its interval from ``stats.speedup`` (unpaired: the
  bench measures each batch size in its own phase), and it counts only when ``stats.claim`` says
  FASTER, i.e. the whole interval lies above 1 + the noise band;
- latency: a batched request takes about the window plus a batch-8 run, so the upper end of the
  p95 interval at batch 8 plus the window must stay within the profile's ``max_p95_ms`` (a p95 from
  too few calls cannot show that). A profile without a p95 limit bounds nothing here.

Anything else (not measured at both sizes, raw timings not kept, a gain within noise, a p95 that
may pass the limit) is "does not pay", with the reason: the switch is offered only on evidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from workers.evaluation import stats
from workers.evaluation.bench import BenchReport
from workers.evaluation.readiness import ProfileSpec

BATCH = 8  # the batch a job's benchmark always measures beside batch 1 (modelhub.measurement)


@dataclass(frozen=True)
class BatchingAdvice:
    """Whether batching pays, why (one sentence), the throughput gain and the batch-8 p95 behind it."""

    pays: bool
    reason: str
    gain: dict[str, Any] | None = None  # stats.Estimate.to_dict of rows/s at batch 8 ÷ rows/s at batch 1
    p95_ms: dict[str, Any] | None = None  # stats.Estimate.to_dict of p95 at batch 8
    limit_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (pages, API)."""
        return asdict(self)


def throughput_gain(bench: BenchReport, batch: int = BATCH) -> stats.Estimate | None:
    """Rows/s at ``batch`` ÷ rows/s at batch 1 (p50-based, with its interval); None without raw rounds."""
    single, joined = (bench.rounds(1), bench.rounds(batch)) if {1, batch} <= set(bench.results) else ([], [])
    if not single or not joined:
        return None
    per_batch = [[t * batch for t in r] for r in single]  # time `batch` rows take one at a time
    return stats.speedup(per_batch, joined, "p50", paired=False)


def _latency_reason(p95: stats.Estimate, limit: float | None, window_ms: float) -> str | None:
    """Why the batch-8 p95 rules batching out, or None when it stays within the profile."""
    if limit is None:
        return None
    if not p95.enough:
        return f"the p95 at batch {BATCH} rests on {p95.calls} calls, too few to show it stays within {limit:g} ms"
    if p95.high + window_ms > limit:
        return (f"p95 at batch {BATCH} may reach {p95.high:.3g} ms + the {window_ms:g} ms window, beyond the "
                f"profile's {limit:g} ms")
    return None


def batching_pays(bench: BenchReport, profile: ProfileSpec | None, window_ms: float = 0.0) -> BatchingAdvice:
    """The rule of the module docstring for one variant's benchmark under its profile (or none)."""
    gain = throughput_gain(bench)
    if gain is None:
        return BatchingAdvice(False, f"not measured at batch 1 and {BATCH} with raw timings: no evidence")
    limit = profile.max_p95_ms if profile is not None else None
    p95 = bench.estimate("p95", BATCH)
    seen = {"gain": gain.to_dict(), "p95_ms": p95.to_dict(), "limit_ms": limit}
    words = f"rows/s at batch {BATCH} are {gain.value:.2f}× batch 1 [{gain.low:.2f}, {gain.high:.2f}]"
    if stats.claim(gain) != stats.FASTER:
        return BatchingAdvice(False, f"{words}: not beyond noise, so it does not pay", **seen)
    slow = _latency_reason(p95, limit, window_ms)
    if slow is not None:
        return BatchingAdvice(False, f"{words}, but {slow}", **seen)
    bound = f"p95 within {limit:g} ms" if limit is not None else "no p95 limit in the profile"
    return BatchingAdvice(True, f"{words}, {bound}: batching pays", **seen)
