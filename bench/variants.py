"""Variant tables for the sample models, and how repeatable the latency measurement is.

    python bench/variants.py [--budget 1.0] [--samples quality_mlp,digits_cnn] [--threads 1]
                             [--rounds 15] [--iterations 300]

Builds the sample models in a temporary directory, runs a few passes on each (graph,
quantize_dynamic, quantize_static, prune_structured for classifiers and regressors), then measures
the original and every variant of a sample together, in one interleaved run
(``workers.evaluation.bench.benchmark_many``: one process per model, the order rotated every
round), checks accuracy on the validation set and prints, per sample: size, p50 at batch 1 with
its 95 % interval and the calls behind it, p95/p99 (or "too few calls"), throughput at batch 8,
peak memory, the paired speed-up over the original in words, the accuracy metric and the verdict
against a demo profile; then the planner's ranking (with its ties) and the advisor's lines.
Last, the repeatability: quality_mlp's variants measured again in a second run of the same
composition (the same models interleaved, so that cache pressure is alike); for the original and
the int8 variant, per batch size, the p50 difference in % and whether each run's interval covers
the other run's p50 (target: difference <= 5 %). Pure: no Django.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.evaluation import stats  # noqa: E402
from workers.evaluation.accuracy import AccuracyReport, default_metric, evaluate  # noqa: E402
from workers.evaluation.advisor import advise, speed_words  # noqa: E402
from workers.evaluation.bench import BenchConfig, BenchReport, ToMeasure, benchmark_many  # noqa: E402
from workers.evaluation.readiness import MB, ProfileSpec, verdict  # noqa: E402
from workers.formats import signature_from_onnx  # noqa: E402
from workers.planner import ORIGINAL, make_candidate, rank  # noqa: E402
from workers.samples import SAMPLE_NAMES, SampleModel, build_sample  # noqa: E402

# (step name, pass, options); prune_structured only where the task allows it (see default_plan).
PASSES = [
    ("graph", "graph", {"level": "extended"}),
    ("int8-dynamic", "quantize_dynamic", {"per_channel": True}),
    ("int8-static", "quantize_static", {"format": "qdq", "method": "minmax"}),
    ("prune-structured", "prune_structured", {"ratio": 0.5}),
]
# The demo profile's accuracy bound per task: drop of the task's default metric.
DEMO_DROP = {"classification": 0.01, "regression": 0.01, "embedding": 0.01}
REPEAT = ("original", "int8-dynamic")  # compared in the repeatability section
REPEAT_TARGET_PCT = 5.0


@dataclass
class Variant:
    name: str
    pass_name: str
    options: dict
    path: Path
    bench: BenchReport | None = None
    accuracy: AccuracyReport | None = None
    error: str | None = None


def make_variants(sample: SampleModel, workdir: Path) -> tuple[list[Variant], list[str]]:
    """The original plus every pass that applies; the reasons of those skipped."""
    from workers.passes import get_pass, make_config
    from workers.passes.base import PassError

    variants = [Variant(ORIGINAL, ORIGINAL, {}, sample.onnx)]
    skipped = []
    for name, pass_name, options in PASSES:
        if pass_name == "prune_structured" and sample.task == "embedding":
            skipped.append(f"{name}: not planned for embeddings")
            continue
        try:
            module = get_pass(pass_name)
            config = make_config(pass_name, options, calibration_data=sample.calibration,
                                 validation_data=sample.validation)
            started = time.perf_counter()
            result = module.run(sample.onnx, workdir / sample.name / name, config)
        except ImportError as exc:
            skipped.append(f"{name}: pass module missing ({exc})")
            continue
        except PassError as exc:
            skipped.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        print(f"  {name}: built in {time.perf_counter() - started:.1f} s", flush=True)
        variants.append(Variant(name, pass_name, options, Path(result.artifact)))
    return variants, skipped


def measure(variants: list[Variant], sample: SampleModel, config: BenchConfig) -> dict[str, BenchReport]:
    """All of ``variants`` in one interleaved run; a variant that fails keeps its error."""
    items = [ToMeasure(key=v.name, model=v.path, signature=signature_from_onnx(v.path)) for v in variants]
    started = time.perf_counter()
    run = benchmark_many(items, config, data=sample.validation)
    for v in variants:
        if v.name in run.errors:
            v.error = str(run.errors[v.name])
            print(f"  {v.name}: benchmark failed: {v.error}")
    first = next(iter(run.reports.values()), None)
    if first is not None:
        print(f"  measured {len(run.reports)} models together in {time.perf_counter() - started:.1f} s: "
              f"{first.run['rounds']} rounds of up to {first.run['calls_per_round']} calls per batch size, "
              f"order {first.run['order']}", flush=True)
    return run.reports


def demo_profile(sample: SampleModel, original: BenchReport) -> ProfileSpec:
    """At most 40 % of the original's size, no slower at p95, and a small accuracy drop."""
    return ProfileSpec(
        max_size_mb=round(0.4 * original.file_size_bytes / MB, 3),
        max_p95_ms=round(original.p95(1) * 1.1, 3),
        accuracy_metric=default_metric(sample.task),
        max_accuracy_drop=DEMO_DROP[sample.task],
    )


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) if i == 0 or i == len(cells) - 1 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


def _p50(report: BenchReport, batch: int) -> str:
    value = report.estimate("p50", batch)
    return f"{value.value:.3f} [{value.low:.3f}–{value.high:.3f}] ({value.calls})"


def _tail(report: BenchReport, statistic: str, batch: int) -> str:
    value = report.estimate(statistic, batch)
    return f"{value.value:.3f}" if value.enough else f"too few ({value.calls})"


def report_sample(sample: SampleModel, variants: list[Variant]) -> None:
    original = variants[0]
    profile = demo_profile(sample, original.bench)
    reference_accuracy = original.accuracy
    metric = profile.accuracy_metric
    print(f"\n{sample.name} ({sample.task}); demo profile: size <= {profile.max_size_mb} MB, "
          f"p95 <= {profile.max_p95_ms} ms at batch 1, {metric} drop <= {profile.max_accuracy_drop}")
    header = ["variant", "size MB", "p50 ms [95 % interval] (calls)", "p95 ms", "p99 ms", "thr b8 /s", "peak MB",
              "vs original", metric, "verdict"]
    rows, candidates = [], []
    for v in variants:
        if v.bench is None:
            continue
        parent = None if v is original else original
        result = verdict(profile, bench=v.bench, accuracy=v.accuracy, reference_accuracy=reference_accuracy,
                         parent_bench=parent.bench if parent else None)
        candidate = make_candidate(name=v.name, parent=parent.name if parent else None, pass_name=v.pass_name,
                                   profile=profile, bench=v.bench, accuracy=v.accuracy, verdict=result,
                                   reference_accuracy=reference_accuracy, options=v.options,
                                   reference_bench=original.bench, parent_bench=parent.bench if parent else None,
                                   depth=0 if parent is None else 1)
        candidates.append(candidate)
        value = v.accuracy.metrics.get(metric) if v.accuracy else None
        versus = "-" if parent is None else speed_words(candidate, candidates[0], candidate.speedup)
        rows.append([
            v.name, f"{v.bench.file_size_bytes / MB:.3f}", _p50(v.bench, 1), _tail(v.bench, "p95", 1),
            _tail(v.bench, "p99", 1), f"{v.bench.at(8)['throughput']:.0f}", f"{v.bench.peak_memory_mb:.1f}",
            versus, "-" if value is None else f"{value:.4f}",
            "PASS" if result.passed else "fails: " + "; ".join(result.failures),
        ])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(_row(header, widths))
    for row in rows:
        print(_row(row, widths))
    ranking = rank(candidates)
    print(f"ranking ({ranking.statistic} at batch {ranking.batch_size}): {ranking.ordered or '-'}; "
          f"ties: {ranking.ties or '-'}; pareto: {sorted(ranking.pareto)}; best: {ranking.best}; "
          f"best effort: {ranking.best_effort}")
    for line in advise(candidates, fingerprint=original.bench.fingerprint, ranking=ranking):
        print(f"  advice: {line}")


def repeatability(first: dict[str, BenchReport], again: dict[str, BenchReport]) -> float:
    """Print, per variant and batch size, the p50 difference in % between two runs and whether each
    run's interval covers the other's p50; return the worst difference."""
    worst = 0.0
    print("\nrepeatability (quality_mlp: two separate interleaved runs of the same variants, p50):")
    for name, report in first.items():
        if name not in REPEAT:
            continue
        if name not in again:
            print(f"  {name}: not measured the second time")
            continue
        for batch in report.batch_sizes:
            a, b = report.estimate("p50", batch), again[name].estimate("p50", batch)
            diff = abs(a.value - b.value) / min(a.value, b.value) * 100
            worst = max(worst, diff)
            covers = (a.low <= b.value <= a.high, b.low <= a.value <= b.high)
            print(f"  {name:14s} batch {batch}: {a.value:.3f} [{a.low:.3f}–{a.high:.3f}] ms vs "
                  f"{b.value:.3f} [{b.low:.3f}–{b.high:.3f}] ms -> {diff:.1f} %; "
                  f"1st interval covers 2nd p50: {'yes' if covers[0] else 'no'}, "
                  f"2nd covers 1st: {'yes' if covers[1] else 'no'}")
    verdict_word = "OK" if worst <= REPEAT_TARGET_PCT else "OVER TARGET"
    print(f"  worst p50 difference: {worst:.1f} % (target <= {REPEAT_TARGET_PCT:g} %): {verdict_word}")
    _ratio_repeatability(first, again)
    return worst


def _ratio_repeatability(first: dict[str, BenchReport], again: dict[str, BenchReport]) -> None:
    """What verdicts rest on: each variant's paired p50 speed-up over the original, run against run.
    A drift of the whole host moves every variant's p50 together and cancels here."""
    print("  paired p50 speed-up over the original (what rankings and claims use), run 1 vs run 2:")
    base_first, base_again = first.get("original"), again.get("original")
    if base_first is None or base_again is None:
        return
    for name in first:
        if name == "original" or name not in again:
            continue
        for batch in first[name].batch_sizes:
            a, b = first[name].speedup(base_first, "p50", batch), again[name].speedup(base_again, "p50", batch)
            diff = abs(a.value - b.value) / min(a.value, b.value) * 100
            print(f"  {name:14s} batch {batch}: {a.value:.2f}x [{a.low:.2f}–{a.high:.2f}] vs {b.value:.2f}x "
                  f"[{b.low:.2f}–{b.high:.2f}] -> {diff:.1f} %; intervals overlap: "
                  f"{'yes' if a.low <= b.high and b.low <= a.high else 'no'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1.0,
                        help="seconds of timed calls per batch size and model, shared out over the rounds")
    parser.add_argument("--samples", default=",".join(SAMPLE_NAMES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=BenchConfig.rounds)
    parser.add_argument("--iterations", type=int, default=BenchConfig.iterations,
                        help="timed calls per batch size and model at most (p95 needs 200, p99 1,000)")
    args = parser.parse_args()
    config = BenchConfig(batch_sizes=(1, 8), threads=args.threads, time_budget_s=args.budget, rounds=args.rounds,
                         iterations=args.iterations)
    repeat: list[Variant] = []
    repeat_sample: SampleModel | None = None
    fingerprint = None
    with tempfile.TemporaryDirectory(prefix="modelhub-bench-") as tmp:
        root = Path(tmp)
        # onnxruntime's quantization tools drop temporary files in the working directory.
        os.chdir(root)
        for name in [n for n in args.samples.split(",") if n]:
            print(f"building {name} ...", flush=True)
            sample = build_sample(name, root / "samples")
            variants, skipped = make_variants(sample, root / "variants")
            for reason in skipped:
                print(f"  skipped {reason}")
            reports = measure(variants, sample, config)
            for v in variants:
                v.bench = reports.get(v.name)
                if v.bench is not None:
                    v.accuracy = evaluate(sample.onnx, v.path, sample.validation, task=sample.task)
            if variants[0].bench is None:
                print(f"  {name}: the original could not be measured; no table")
                continue
            fingerprint = fingerprint or variants[0].bench.fingerprint
            report_sample(sample, variants)
            if name == "quality_mlp":
                repeat = [v for v in variants if v.bench]
                repeat_sample = sample
        if any(v.name in REPEAT for v in repeat) and repeat_sample is not None:
            print("\nmeasuring again for repeatability ...", flush=True)
            repeatability({v.name: v.bench for v in repeat}, measure(repeat, repeat_sample, config))
    print(f"\nhardware: {fingerprint}")
    print(f"method: p50 of pooled calls; 95 % interval = bootstrap over rounds ∪ order statistics; claims beyond "
          f"a {stats.NOISE_BAND:.0%} noise band only")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
