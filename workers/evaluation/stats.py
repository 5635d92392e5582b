"""Latency statistics with their uncertainty (pure: no Django).

Measurements come as *rounds*: in each round every variant of a job is timed for a few calls, in
an order rotated from round to round, so that drift of a shared machine hits all variants alike.

- ``estimate`` gives a percentile of the pooled calls with a 95 % interval: the union of a
  bootstrap over rounds (which sees drift between rounds) and the order-statistic interval of the
  pooled calls (which sees sampling within them). A percentile needs ``min_calls`` calls: fewer
  than ``MIN_TAIL`` calls beyond it would make it a handful of samples, and it is then marked
  ``enough=False`` and shown as "too few calls", never as a number to trust.
- ``speedup`` is ``statistic(reference) / statistic(candidate)`` with its interval from a paired
  bootstrap: the same resampled rounds for both, so shared drift cancels.
- ``claim`` turns a ratio into words only when its interval leaves the noise band around 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

STATISTICS = ("p50", "p95", "p99")
QUANTILE = {"p50": 50.0, "p95": 95.0, "p99": 99.0}
CONFIDENCE = 0.95
MIN_TAIL = 10  # a percentile needs at least this many calls beyond it
# Ratios within 10 % of 1 are "the same" even when one run's interval is narrower: on a shared
# 2-core host the same variant's p50 moves 4-9 % between separate runs (bench/stability.py), and a
# verdict must hold from one rerun to the next, not only within the run that made it.
NOISE_BAND = 0.10
RESAMPLES = 400
FASTER, SLOWER, SAME = "faster", "slower", "same speed (within noise)"

Rounds = Sequence[Sequence[float]]


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95 % interval and the number of calls behind it.

    ``enough`` is False when the sample is too small for the statistic to mean anything
    (see ``min_calls``); ``value`` is then still the computed figure, but pages say "too few calls".
    """

    statistic: str
    value: float
    low: float
    high: float
    calls: int
    enough: bool = True

    @property
    def width(self) -> float:
        """The interval's width relative to the value (0.04 = ±2 %)."""
        return (self.high - self.low) / self.value if self.value else math.inf

    def overlaps(self, other: Estimate) -> bool:
        return self.low <= other.high and other.low <= self.high

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        return cls(**{k: data[k] for k in ("statistic", "value", "low", "high", "calls")},
                   enough=bool(data.get("enough", True)))


def min_calls(statistic: str) -> int:
    """Calls a percentile needs: MIN_TAIL beyond it (p50: 20, p95: 200, p99: 1,000)."""
    return math.ceil(MIN_TAIL / (1 - QUANTILE[statistic] / 100) - 1e-9)


def _check_statistic(statistic: str) -> None:
    if statistic not in QUANTILE:
        raise ValueError(f"Unknown statistic {statistic!r}; use one of {', '.join(STATISTICS)}.")


def _arrays(rounds: Rounds) -> list[np.ndarray]:
    arrays = [np.asarray(r, dtype=float) for r in rounds if len(r)]
    if not arrays:
        raise ValueError("No timed calls to compute a statistic from.")
    return arrays


def _order_interval(pooled: np.ndarray, q: float) -> tuple[float, float]:
    """The distribution-free interval of a quantile: the ranks a binomial(n, q) puts 95 % between."""
    n = len(pooled)
    ordered = np.sort(pooled)
    spread = 1.96 * math.sqrt(n * q * (1 - q))
    low = max(int(math.floor(n * q - spread)) - 1, 0)
    high = min(int(math.ceil(n * q + spread)), n - 1)
    return float(ordered[low]), float(ordered[high])


def _resampled(arrays: list[np.ndarray], picks: np.ndarray, q: float) -> np.ndarray:
    return np.array([np.percentile(np.concatenate([arrays[i] for i in pick]), q) for pick in picks])


def _picks(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, count, size=(RESAMPLES, count))


def _bounds(samples: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def estimate(rounds: Rounds, statistic: str, *, seed: int = 0) -> Estimate:
    """A percentile of the pooled calls of ``rounds`` with its 95 % interval (module docstring)."""
    _check_statistic(statistic)
    arrays = _arrays(rounds)
    pooled = np.concatenate(arrays)
    q = QUANTILE[statistic]
    value = float(np.percentile(pooled, q))
    low, high = _order_interval(pooled, q / 100)
    if len(arrays) >= 2:
        boot_low, boot_high = _bounds(_resampled(arrays, _picks(len(arrays), seed), q))
        low, high = min(low, boot_low), max(high, boot_high)
    return Estimate(statistic=statistic, value=value, low=min(low, value), high=max(high, value), calls=len(pooled),
                    enough=len(pooled) >= min_calls(statistic))


def speedup(reference: Rounds, candidate: Rounds, statistic: str, *, paired: bool = True, seed: int = 0) -> Estimate:
    """How many times faster ``candidate`` is than ``reference`` (>1: faster), with a 95 % interval.

    Rounds measured together (``paired``, and as many on both sides: one interleaved run) are
    resampled in pairs; otherwise each side is resampled on its own, which gives the wider interval
    two separate runs deserve.
    """
    _check_statistic(statistic)
    ref, cand = _arrays(reference), _arrays(candidate)
    q = QUANTILE[statistic]
    value = float(np.percentile(np.concatenate(ref), q) / np.percentile(np.concatenate(cand), q))
    ref_picks = _picks(len(ref), seed)
    cand_picks = ref_picks if paired and len(ref) == len(cand) else _picks(len(cand), seed + 1)
    ratios = _resampled(ref, ref_picks, q) / _resampled(cand, cand_picks, q)
    low, high = _bounds(ratios)
    calls = min(sum(map(len, ref)), sum(map(len, cand)))
    return Estimate(statistic=f"{statistic} speed-up", value=value, low=min(low, value), high=max(high, value),
                    calls=calls, enough=calls >= min_calls(statistic))


def claim(ratio: Estimate, band: float = NOISE_BAND) -> str:
    """FASTER / SLOWER only when the whole interval lies beyond the noise band; else SAME."""
    if ratio.enough and ratio.low > 1 + band:
        return FASTER
    if ratio.enough and ratio.high < 1 / (1 + band):
        return SLOWER
    return SAME


def describe(value: Estimate, unit: str = "ms") -> str:
    """'p50 0.412 ms [0.405, 0.420] (200 calls)', or the statistic flagged as having too few calls."""
    if not value.enough:
        return f"{value.statistic}: too few calls ({value.calls}; needs {min_calls(value.statistic.split()[0])})"
    return (f"{value.statistic} {value.value:.3g} {unit} [{value.low:.3g}, {value.high:.3g}] "
            f"({value.calls} calls)").replace("  ", " ")
