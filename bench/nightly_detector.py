"""The nightly regression detector on real measurements of this host: false alarms and a 20 % step.

    .venv/bin/python bench/nightly_detector.py [--nights 10] [--budget 0.3] [--step 1.2] [--statistic p50]

1. Unchanged nights. A sample model (quality_mlp) is measured ``--nights`` times in a row with
   ``bench.benchmark``, each time in a fresh process as the nightly service does. Nothing changes
   between these "nights", so every alarm is a false one. Each night is fed to
   ``regression.detect`` with the nights before it as history.
2. A step. A night's real rounds multiplied by ``--step`` (the model that much slower, with this
   host's own noise) against the nights before it: once for a fresh measurement taken after the
   last night, and once for every night that has ``min_points`` nights of history.
3. A stationary host. Each real night replayed ``--trials`` times as ``--nights`` nights whose
   rounds are drawn at random from that one night's rounds: nights that differ only by the
   sampling within a night, as on a host where nothing at all changes between nights (what an
   idle host comes close to), with that night's own noise; and the step on each of them.

Side by side, for the same data:

- new: the declared statistic (``--statistic``; p50, like a profile that declares none) with its
  95 % interval; tonight regresses when its whole interval lies above the band of earlier nights.
- new on p95: the same rule on p95 with its interval.
- old: the rule before intervals: the p95 *point* above median + max(10 %, 3 × MAD). It is the
  same detector fed points without an interval (low = high = value).

The load average is printed: on a shared host, another process's burst is a real slowdown of the
night it falls on, which no rule on one night's numbers can tell from a step. Pure engine: no
Django, no database.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers import formats  # noqa: E402
from workers.evaluation import bench, stats  # noqa: E402
from workers.evaluation.regression import NightPoint, Policy, RegressionCheck, detect  # noqa: E402
from workers.samples import build_sample  # noqa: E402

START = date(2025, 6, 1)
BATCH = 1
HOST = "this-host"
POLICY = Policy()
RULES = ("new", "new on p95", "old")


@dataclass
class Night:
    """One night's raw rounds at batch 1 (real, or drawn from real ones), and what each rule sees."""

    index: int
    rounds: list[list[float]]
    statistic: str

    @property
    def night(self) -> date:
        return START + timedelta(days=self.index)

    def points(self, factor: float = 1.0) -> dict[str, NightPoint]:
        rounds = [[t * factor for t in r] for r in self.rounds]
        declared, p95 = stats.estimate(rounds, self.statistic), stats.estimate(rounds, "p95")
        return {
            "new": NightPoint.from_estimate(self.night, declared, passed=True, fingerprint=HOST, batch_size=BATCH),
            "new on p95": NightPoint.from_estimate(self.night, p95, passed=True, fingerprint=HOST, batch_size=BATCH),
            "old": NightPoint(self.night, p95.value, True, HOST, BATCH, statistic="p95"),  # a point, no interval
        }


def measure(count: int, budget: float, statistic: str) -> list[Night]:
    with tempfile.TemporaryDirectory() as tmp:
        sample = build_sample("quality_mlp", Path(tmp))
        signature = formats.signature_from_onnx(sample.onnx)
        config = bench.BenchConfig(batch_sizes=(BATCH,), time_budget_s=budget)
        nights = []
        for index in range(count):
            report = bench.benchmark(sample.onnx, signature, config, data=sample.validation)
            nights.append(Night(index=index, rounds=report.rounds(BATCH), statistic=statistic))
            print(f"  measured night {index + 1}/{count}", file=sys.stderr)
        return nights


def _check(tonight: NightPoint, history: list[NightPoint]) -> RegressionCheck:
    return detect(tonight, history, POLICY)


def _cell(point: NightPoint, check: RegressionCheck) -> str:
    interval = f" [{point.low_ms:.4f}, {point.high_ms:.4f}]" if point.low_ms != point.high_ms else ""
    return f"{point.value_ms:.4f}{interval} {'REGRESSED' if check.regressed else check.status}"


def alarms(nights: list[Night], *, show: bool = False) -> dict[str, int]:
    """Every night against the nights before it; the alarms per rule (and a row per night)."""
    points = [night.points() for night in nights]
    count = dict.fromkeys(RULES, 0)
    widths = {"new": 38, "new on p95": 38, "old": 22}
    if show:
        heads = {"new": f"new ({nights[0].statistic} ms)", "new on p95": "new on p95 (ms)", "old": "old (p95 ms)"}
        print(f"{'night':>5} {'calls':>5}  " + "  ".join(f"{heads[rule]:{widths[rule]}}" for rule in RULES))
    for i in range(len(nights)):
        cells = []
        for rule in RULES:
            check = _check(points[i][rule], [p[rule] for p in points[:i]])
            count[rule] += check.regressed
            cells.append(f"{_cell(points[i][rule], check):{widths[rule]}}")
        if show:
            print(f"{i + 1:>5} {points[i]['new'].calls:>5}  " + "  ".join(cells))
    return count


def steps(nights: list[Night], factor: float) -> dict[str, tuple[int, int]]:
    """Each night with enough history, ×factor, against the nights before it: (flagged, tries)."""
    history = [night.points() for night in nights]
    hits = dict.fromkeys(RULES, 0)
    tries = range(POLICY.min_points, len(nights))
    for i in tries:
        tonight = nights[i].points(factor)
        for rule in RULES:
            hits[rule] += _check(tonight[rule], [p[rule] for p in history[:i]]).regressed
    return {rule: (hits[rule], len(tries)) for rule in RULES}


def fresh_step(nights: list[Night], fresh: Night, factor: float) -> dict[str, RegressionCheck]:
    history = [night.points() for night in nights]
    slowed = fresh.points(factor)
    return {rule: _check(slowed[rule], [p[rule] for p in history]) for rule in RULES}


def stationary(nights: list[Night], count: int, trials: int, seed: int = 0) -> list[list[Night]]:
    """For each real night, ``trials`` runs of ``count`` nights whose rounds are drawn from its own."""
    rng = np.random.default_rng(seed)
    runs = []
    for real in nights:
        pool = real.rounds
        for _ in range(trials):
            runs.append([Night(index=i, rounds=[pool[k] for k in rng.integers(0, len(pool), len(pool))],
                               statistic=real.statistic) for i in range(count)])
    return runs


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=10)
    parser.add_argument("--budget", type=float, default=0.3, help="time_budget_s of each measurement")
    parser.add_argument("--step", type=float, default=1.2)
    parser.add_argument("--statistic", default="p50", choices=stats.STATISTICS)
    parser.add_argument("--trials", type=int, default=3, help="stationary runs per real night")
    args = parser.parse_args()
    before = _load()
    measured = measure(args.nights + 1, args.budget, args.statistic)
    nights, fresh = measured[:-1], measured[-1]
    fresh.index = len(nights)
    print(f"quality_mlp, batch {BATCH}, time_budget_s {args.budget}, {POLICY}")
    print(f"host: {before} before, {_load()} after")

    print(f"\n1. {args.nights} real unchanged nights (value [95 % interval] and status, per rule)")
    real = alarms(nights, show=True)
    tries = steps(nights, args.step)
    fresh_checks = fresh_step(nights, fresh, args.step)
    new = fresh_checks["new"]
    print(f"\n2. step x{args.step}: a fresh night {new.value_ms / args.step:.4f} ms ×{args.step} = "
          f"{new.value_ms:.4f} [{new.low_ms:.4f}, {new.high_ms:.4f}] against the band's top "
          f"{new.baseline.threshold_ms:.4f} ms (median {new.baseline.median_ms:.4f})")

    runs = stationary(nights, args.nights, args.trials)
    flat = dict.fromkeys(RULES, 0)
    flat_steps = {rule: [0, 0] for rule in RULES}
    for run in runs:
        for rule, count in alarms(run).items():
            flat[rule] += count
        for rule, (hit, total) in steps(run, args.step).items():
            flat_steps[rule][0] += hit
            flat_steps[rule][1] += total

    step_head = f"step x{args.step}"
    print(f"\n{'rule':11} | {'real: false alarms':>18} {step_head + ', fresh night':>20} {step_head + ', each night':>20}"
          f" | {'stationary: false alarms':>24} {step_head + ' caught':>16}")
    for rule in RULES:
        hit, total = tries[rule]
        sim_hit, sim_total = flat_steps[rule]
        print(f"{rule:11} | {real[rule]:>10} of {len(nights):<5} "
              f"{'flagged' if fresh_checks[rule].regressed else 'missed':>20} {hit:>13} of {total:<4} | "
              f"{flat[rule]:>15} of {args.nights * len(runs):<6} {sim_hit:>9} of {sim_total:<4}")
    print("\ngoal: the new rule raises 0 false alarms on unchanged nights and flags the step.")


if __name__ == "__main__":
    main()
