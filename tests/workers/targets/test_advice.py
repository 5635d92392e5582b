"""The advisor's sentence on a JavaScript target against native ONNX Runtime (pure numbers)."""

from __future__ import annotations

from workers.evaluation import stats
from workers.evaluation.advisor import target_line


def _speedup(value: float, low: float, high: float) -> stats.Estimate:
    return stats.Estimate("p95 speed-up", value, low, high, 2000, True)


def test_a_target_beyond_noise_is_called_slower_with_its_p95_against_the_limit() -> None:
    """(G15) wasm at 1/2.3 of native speed, interval clear of the noise band: "2.3x slower",
    its interval, and the p95 against the profile's limit, in the issue's own words."""
    line = target_line("browser-wasm", _speedup(1 / 2.3, 1 / 2.6, 1 / 2.0), 41.0, 1, 30.0)
    assert line == ("wasm is 2.3x slower than native here (95 % interval 2.0–2.6x): "
                    "p95 at batch 1 is 41 ms against a 30 ms limit")


def test_a_ratio_within_noise_claims_no_difference_and_a_met_limit_says_within() -> None:
    """(G15) An interval that reaches into the noise band gives no speed claim; a p95 under the
    limit is "within" it; without a limit only the figure is given."""
    noisy = _speedup(0.8, 0.6, 1.05)
    assert target_line("node", noisy, 3.2, 8, 5.0) == (
        "node runs at native speed here (within noise): p95 at batch 8 is 3.2 ms within a 5 ms limit")
    assert target_line("node", noisy, 3.2, 8).endswith("p95 at batch 8 is 3.2 ms")
