"""Regression detection respects noise: steady noise is quiet, a real step is flagged once, new hardware is a new baseline."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pytest

from workers.evaluation.regression import (
    NEW_BASELINE,
    OK,
    P95,
    READINESS,
    REGRESSED,
    WARM_UP,
    NightPoint,
    Policy,
    baseline_stats,
    detect,
)

START = date(2025, 3, 1)
HARDWARE = "a1b2c3d4e5f60718"


def night(index: int, p95: float | None, *, fingerprint: str = HARDWARE, passed: bool | None = True,
          batch: int = 1, failures: tuple[str, ...] = ()) -> NightPoint:
    return NightPoint(night=START + timedelta(days=index), p95_ms=p95, passed=passed, fingerprint=fingerprint,
                      batch_size=batch, failures=failures)


def run_nights(values: list[float]) -> list:
    """Detect each night against the nights before it, as the nightly service does."""
    points = [night(i, v) for i, v in enumerate(values)]
    return [detect(point, points[:i]) for i, point in enumerate(points)]


def noisy(n: int, *, median: float = 10.0, sigma: float = 0.03, seed: int = 11) -> list[float]:
    """A steady p95 with the night-to-night noise of a shared machine (normal, 3 % by default)."""
    rng = np.random.default_rng(seed)
    return [float(v) for v in median * (1 + rng.normal(0, sigma, n))]


def test_a_steady_noisy_history_raises_nothing_over_two_months() -> None:
    checks = run_nights(noisy(60))
    assert [c for c in checks if c.regressed] == []
    assert [c.status for c in checks[:4]] == [NEW_BASELINE, WARM_UP, WARM_UP, OK]
    assert all(c.status == OK for c in checks[3:])


def test_a_wide_but_steady_spread_widens_the_band_beyond_ten_percent() -> None:
    values = [9.0, 11.0, 9.4, 10.8, 9.2, 11.2, 10.0, 9.6, 10.6, 9.1, 11.1, 9.5, 10.9, 11.4, 9.3, 11.6]
    checks = run_nights(values)[7:]  # once a full week of nights makes the baseline
    assert [c for c in checks if c.regressed] == []
    over_ten_percent = [c for c in checks if c.baseline and c.value_ms > 1.10 * c.baseline.median_ms]
    assert over_ten_percent, "a bare 10 % rule would have raised alarms on this history"
    assert checks[-1].baseline.threshold_ms > 1.10 * checks[-1].baseline.median_ms


def test_a_real_thirty_percent_step_is_flagged_on_its_first_night_with_its_numbers() -> None:
    values = noisy(12) + [13.0] * 8
    checks = run_nights(values)
    flagged = [i for i, c in enumerate(checks) if c.regressed]
    assert flagged[0] == 12
    first = checks[12]
    assert first.status == REGRESSED and first.metrics == (P95,)
    assert first.ratio == pytest.approx(1.3, abs=0.05)
    assert first.baseline.points == 7 and first.baseline.threshold_ms < 13.0
    assert "above the 7-night median" in first.reasons[0]


def test_a_step_that_persists_becomes_the_new_normal_once_it_holds_the_median() -> None:
    checks = run_nights(noisy(12) + [13.0] * 8)
    assert [c.regressed for c in checks[12:15]] == [True, True, True]
    assert [c.regressed for c in checks[16:]] == [False, False, False, False]
    assert checks[16].baseline.median_ms == 13.0


def test_a_hardware_change_starts_a_new_baseline_instead_of_an_alarm() -> None:
    history = [night(i, v) for i, v in enumerate(noisy(7))]
    other = "ffffeeeeddddcccc"
    tonight = night(7, 14.0, fingerprint=other)
    check = detect(tonight, history)
    assert not check.regressed and check.status == NEW_BASELINE and check.baseline is None
    assert "setup changed" in check.notes[0] and other in check.notes[0]
    later = history + [tonight, night(8, 14.2, fingerprint=other)]
    assert detect(night(9, 14.1, fingerprint=other), later).status == WARM_UP


def test_a_batch_size_change_is_a_new_setup_too() -> None:
    history = [night(i, 10.0) for i in range(7)]
    assert detect(night(7, 40.0, batch=8), history).status == NEW_BASELINE


def test_returning_to_known_hardware_compares_with_that_hardware_s_own_nights() -> None:
    history = [night(i, 10.0) for i in range(5)] + [night(5, 20.0, fingerprint="other"), night(6, 20.0, fingerprint="other")]
    check = detect(night(7, 13.0), history)
    assert check.regressed and check.baseline.median_ms == 10.0
    assert "earlier baseline" in check.notes[0]


def test_fewer_than_three_nights_is_a_warm_up_and_raises_no_latency_alarm() -> None:
    check = detect(night(2, 20.0), [night(0, 10.0), night(1, 10.0)])
    assert not check.regressed and check.status == WARM_UP
    assert check.ratio == pytest.approx(2.0)


def test_a_readiness_verdict_that_flips_to_fail_is_a_regression_even_while_warming_up() -> None:
    tonight = night(1, 10.1, passed=False, failures=("p95 10.1 ms > 10 ms at batch 1",))
    check = detect(tonight, [night(0, 9.9)])
    assert check.regressed and check.metrics == (READINESS,)
    assert "flipped to fail" in check.reasons[0] and "p95 10.1 ms > 10 ms" in check.reasons[0]


def test_a_variant_that_could_not_be_measured_flips_its_verdict() -> None:
    history = [night(i, 10.0) for i in range(5)]
    check = detect(night(5, None, passed=False, failures=("could not be measured: crashed",)), history)
    assert check.regressed and check.metrics == (READINESS,) and check.value_ms is None


def test_a_verdict_that_already_failed_yesterday_is_not_news() -> None:
    history = [night(i, 10.0) for i in range(4)] + [night(4, 10.0, passed=False)]
    assert not detect(night(5, 10.0, passed=False), history).regressed


def test_nights_older_than_the_age_limit_are_not_a_baseline() -> None:
    old = [night(i, 10.0) for i in range(5)]
    check = detect(night(60, 30.0), old)
    assert not check.regressed and check.status == NEW_BASELINE


def test_the_band_is_median_plus_the_larger_of_ten_percent_and_three_mads() -> None:
    steady = baseline_stats([10.0, 10.0, 10.1, 9.9, 10.0], [START] * 5, Policy())
    assert steady.threshold_ms == pytest.approx(11.0)
    noisy_stats = baseline_stats([10.0, 12.0, 8.0, 11.0, 9.0], [START] * 5, Policy())
    assert noisy_stats.mad_ms == pytest.approx(1.0) and noisy_stats.threshold_ms == pytest.approx(13.0)


def test_the_check_serializes_to_json() -> None:
    check = run_nights(noisy(12) + [13.0])[-1]
    data = json.loads(json.dumps(check.to_dict()))
    assert data["regressed"] is True and data["metrics"] == [P95] and len(data["baseline"]["nights"]) == 7


def test_a_policy_with_impossible_bounds_is_refused() -> None:
    with pytest.raises(ValueError, match="min_points"):
        Policy(window=3, min_points=5)
