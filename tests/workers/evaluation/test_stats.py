"""Latency statistics carry their uncertainty, and speed claims are made only beyond it.

All data here is seeded numpy, never timing: rounds of calls drawn from a lognormal around a
median, each round shifted by a drift that (when shared) hits every variant of the round alike.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from workers.evaluation import stats
from workers.evaluation.stats import (
    FASTER,
    NOISE_BAND,
    SAME,
    SLOWER,
    Estimate,
    claim,
    describe,
    estimate,
    min_calls,
    speedup,
)


def _rounds(rng: np.random.Generator, count: int, calls: int, *, median: float = 1.0, sigma: float = 0.1,
            drift: np.ndarray | None = None) -> list[list[float]]:
    """``count`` rounds of ``calls`` lognormal call times; ``drift`` multiplies each round."""
    drift = np.ones(count) if drift is None else drift
    return [list(median * drift[i] * rng.lognormal(0.0, sigma, calls)) for i in range(count)]


def _ratio(value: float, low: float, high: float, *, calls: int = 1000) -> Estimate:
    return Estimate("p50 speed-up", value, low, high, calls, calls >= min_calls("p50"))


# --- estimates ---------------------------------------------------------------------------------------


def test_an_estimates_interval_contains_its_value_and_narrows_with_more_rounds() -> None:
    rng = np.random.default_rng(1)
    drift = rng.lognormal(0.0, 0.05, 80)
    few = estimate(_rounds(rng, 4, 20, drift=drift[:4]), "p50")
    many = estimate(_rounds(rng, 80, 20, drift=drift), "p50")
    for value in (few, many):
        assert value.low <= value.value <= value.high
        assert value.enough
    assert many.calls == 1600 and few.calls == 80
    assert many.width < few.width / 1.5
    assert many.low <= 1.0 <= many.high  # the true median of the data


def test_every_statistic_is_bracketed_by_its_interval() -> None:
    rounds = _rounds(np.random.default_rng(2), 15, 80, sigma=0.3)
    pooled = np.concatenate(rounds)
    for statistic, q in stats.QUANTILE.items():
        value = estimate(rounds, statistic)
        assert value.statistic == statistic
        assert value.value == pytest.approx(np.percentile(pooled, q))
        assert value.low <= value.value <= value.high


def test_a_single_round_still_gets_an_order_statistic_interval() -> None:
    value = estimate([list(np.linspace(1.0, 2.0, 101))], "p50")
    assert value.value == pytest.approx(1.5)
    assert value.low < 1.5 < value.high and value.high - value.low < 0.3


def test_a_p99_from_fewer_than_1000_calls_is_not_enough() -> None:
    rng = np.random.default_rng(3)
    assert (min_calls("p50"), min_calls("p95"), min_calls("p99")) == (20, 200, 1000)
    assert estimate(_rounds(rng, 9, 111), "p99").enough is False  # 999 calls
    assert estimate(_rounds(rng, 10, 100), "p99").enough is True  # 1,000 calls
    assert estimate(_rounds(rng, 10, 19), "p95").enough is False
    assert estimate(_rounds(rng, 1, 19), "p50").enough is False


def test_a_statistic_with_too_few_calls_is_described_as_such() -> None:
    thin = estimate(_rounds(np.random.default_rng(4), 3, 10), "p99")
    assert describe(thin) == "p99: too few calls (30; needs 1000)"
    full = estimate([[1.0] * 50], "p50")
    assert describe(full) == "p50 1 ms [1, 1] (50 calls)"


def test_unknown_statistics_and_empty_rounds_are_refused() -> None:
    with pytest.raises(ValueError, match="Unknown statistic 'p90'"):
        estimate([[1.0]], "p90")
    with pytest.raises(ValueError, match="No timed calls"):
        estimate([[], []], "p50")


def test_estimates_round_trip_and_old_dicts_default_to_enough() -> None:
    value = estimate(_rounds(np.random.default_rng(5), 4, 30), "p95")
    assert Estimate.from_dict(value.to_dict()) == value
    old = {"statistic": "p50", "value": 1.0, "low": 0.9, "high": 1.1, "calls": 40}
    assert Estimate.from_dict(old).enough is True


# --- claims ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "low", "high"), [
    (1.3, 0.9, 1.8),  # a big point ratio whose interval includes 1
    (1.0, 0.99, 1.01),  # a narrow interval around 1
    (1.04, 1.02, 1.049),  # beyond 1 but within the noise band
    (0.97, 1 / 1.049, 0.99),  # slower, but within the band
    (1.2, 1.04, 1.4),  # the interval's low end is inside the band
])
def test_a_ratio_whose_interval_includes_one_or_stays_within_the_band_is_called_the_same_speed(
        value: float, low: float, high: float) -> None:
    assert claim(_ratio(value, low, high)) == SAME == "same speed (within noise)"


def test_faster_and_slower_are_said_only_when_the_whole_interval_leaves_the_band() -> None:
    assert claim(_ratio(2.4, 2.2, 2.6)) == FASTER
    assert claim(_ratio(1.1, 1 + NOISE_BAND + 1e-6, 1.2)) == FASTER
    assert claim(_ratio(1.1, 1 + NOISE_BAND, 1.2)) == SAME  # on the band's edge is not beyond it
    assert claim(_ratio(0.5, 0.45, 0.55)) == SLOWER
    assert claim(_ratio(0.9, 0.85, 1 / (1 + NOISE_BAND) + 1e-6)) == SAME


def test_a_ratio_from_too_few_calls_claims_nothing() -> None:
    assert claim(_ratio(3.0, 2.9, 3.1, calls=10)) == SAME


# --- speed-ups ---------------------------------------------------------------------------------------


def test_shared_drift_cancels_in_a_paired_speedup_but_widens_an_unpaired_one() -> None:
    """Two variants of one speed, measured in the same 20 rounds; the machine drifts ±15 % from round
    to round, alike for both. Paired, the ratio's interval is narrow and covers 1; the same data
    compared without the pairing (rounds out of step) gives a much wider interval."""
    rng = np.random.default_rng(7)
    drift = rng.lognormal(0.0, 0.15, 20)
    reference = _rounds(rng, 20, 25, drift=drift, sigma=0.05)
    candidate = _rounds(rng, 20, 25, drift=drift, sigma=0.05)
    paired = speedup(reference, candidate, "p50")
    assert paired.low <= 1.0 <= paired.high
    assert claim(paired) == SAME
    out_of_step = speedup(reference, candidate[::-1], "p50")  # the same calls, the pairing broken
    unpaired = speedup(reference, candidate[:-1], "p50")  # counts differ: each side resampled alone
    assert out_of_step.value == pytest.approx(paired.value)
    assert paired.width < out_of_step.width / 2
    assert paired.width < unpaired.width / 2


def test_a_clearly_faster_candidate_is_called_faster_with_its_interval() -> None:
    rng = np.random.default_rng(8)
    drift = rng.lognormal(0.0, 0.1, 15)
    ratio = speedup(_rounds(rng, 15, 20, median=2.4, drift=drift), _rounds(rng, 15, 20, median=1.0, drift=drift), "p50")
    assert ratio.statistic == "p50 speed-up" and ratio.calls == 300 and ratio.enough
    assert ratio.low <= ratio.value <= ratio.high
    assert ratio.low <= 2.4 <= ratio.high
    assert claim(ratio) == FASTER
    slower = speedup(_rounds(rng, 15, 20, median=1.0, drift=drift), _rounds(rng, 15, 20, median=2.4, drift=drift), "p50")
    assert claim(slower) == SLOWER


def test_a_speedup_of_a_tail_statistic_needs_the_tails_calls() -> None:
    rng = np.random.default_rng(9)
    ratio = speedup(_rounds(rng, 10, 50, median=2.0), _rounds(rng, 10, 50), "p99")
    assert ratio.calls == 500 and ratio.enough is False
    assert claim(ratio) == SAME


def test_estimates_are_reproducible() -> None:
    rounds = _rounds(np.random.default_rng(10), 8, 30)
    assert estimate(rounds, "p95") == estimate(rounds, "p95")
    assert speedup(rounds, rounds, "p50") == speedup(rounds, rounds, "p50")
    same = speedup(rounds, rounds, "p50")
    assert same.value == 1.0 and math.isclose(same.low, 1.0) and math.isclose(same.high, 1.0)
