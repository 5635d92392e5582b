"""How the nightly regression detector behaves on simulated histories: false alarms and detections.

    python bench/nightly_detector.py [--nights 3000] [--trials 400] [--step 1.3] [--seed 0]

For each noise model (night-to-night variation of a steady p95), the detector runs every night
against the nights before it, as the nightly service does, and the table gives the share of
steady nights flagged (false alarms) and the share of trials where a sudden step (``--step``,
default +30 %) is flagged on its first night. Policies: the default (window 7, min 10 %, 3 × MAD)
and, for comparison, 3 × the normal-consistent MAD (1.4826 × MAD). Pure: no Django, no clock.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.evaluation.regression import NightPoint, Policy, detect  # noqa: E402

START = date(2020, 1, 1)
Noise = Callable[[np.random.Generator, int], np.ndarray]
NOISE: dict[str, Noise] = {
    "normal 2 %": lambda rng, n: 1 + rng.normal(0, 0.02, n),
    "normal 3 %": lambda rng, n: 1 + rng.normal(0, 0.03, n),
    "normal 5 %": lambda rng, n: 1 + rng.normal(0, 0.05, n),
    "uniform +-5 %": lambda rng, n: 1 + rng.uniform(-0.05, 0.05, n),
    "uniform +-8 %": lambda rng, n: 1 + rng.uniform(-0.08, 0.08, n),
    "lognormal 4 %, 5 % of nights +25 %": lambda rng, n: np.exp(rng.normal(0, 0.04, n))
    * np.where(rng.random(n) < 0.05, 1.25, 1.0),
}
POLICIES = {"3 x MAD (default)": Policy(), "3 x 1.4826 MAD": Policy(mad_factor=3 * 1.4826)}


def _points(values: np.ndarray) -> list[NightPoint]:
    return [NightPoint(START + timedelta(days=i), float(v), True, "hw") for i, v in enumerate(values)]


def false_alarms(noise: Noise, policy: Policy, nights: int, seed: int) -> float:
    """Share of steady nights flagged, once a full window of history exists."""
    points = _points(10.0 * noise(np.random.default_rng(seed), nights))
    first = policy.window + 1
    flagged = sum(detect(p, points[i - policy.window - 1:i], policy).regressed for i, p in enumerate(points) if i >= first)
    return flagged / (nights - first)


def detections(noise: Noise, policy: Policy, trials: int, step: float, seed: int) -> float:
    """Share of trials where a step on the night after a full window is flagged that night."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(trials):
        values = np.append(10.0 * noise(rng, policy.window), 10.0 * step * noise(rng, 1))
        points = _points(values)
        hits += detect(points[-1], points[:-1], policy).regressed
    return hits / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=3000)
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--step", type=float, default=1.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'noise':36} {'policy':20} {'false alarms / night':>21} {'step x' + str(args.step) + ' caught':>16}")
    for name, noise in NOISE.items():
        for label, policy in POLICIES.items():
            fa = false_alarms(noise, policy, args.nights, args.seed)
            caught = detections(noise, policy, args.trials, args.step, args.seed + 1)
            print(f"{name:36} {label:20} {fa:>20.2%} {caught:>16.1%}")


if __name__ == "__main__":
    main()
