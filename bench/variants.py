"""Variant tables for the sample models, and how repeatable the latency measurement is.

    python bench/variants.py [--budget 1.0] [--samples quality_mlp,digits_cnn] [--threads 1]

Builds the sample models in a temporary directory, runs a few passes on each (graph,
quantize_dynamic, quantize_static, prune_structured for classifiers and regressors), benchmarks the
original and every variant in fresh processes, checks accuracy on the validation set and prints,
per sample: size, p50/p95/p99 at batch 1, throughput at batch 8, peak memory, the accuracy metric
and the verdict against a demo profile; then the planner's ranking and the advisor's lines.
Last, the repeatability: quality_mlp's original and int8 variant measured again, p50 difference
in % against the first measurement (target: <= 10 %). Pure: no Django.
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

from workers.evaluation.accuracy import AccuracyReport, default_metric, evaluate  # noqa: E402
from workers.evaluation.advisor import advise  # noqa: E402
from workers.evaluation.bench import BenchConfig, BenchError, BenchReport, benchmark  # noqa: E402
from workers.evaluation.readiness import MB, ProfileSpec, verdict  # noqa: E402
from workers.formats import signature_from_onnx  # noqa: E402
from workers.planner import make_candidate, rank  # noqa: E402
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


@dataclass
class Variant:
    name: str
    pass_name: str
    options: dict
    path: Path
    bench: BenchReport | None = None
    accuracy: AccuracyReport | None = None


def make_variants(sample: SampleModel, workdir: Path) -> tuple[list[Variant], list[str]]:
    """The original plus every pass that applies; the reasons of those skipped."""
    from workers.passes import get_pass, make_config
    from workers.passes.base import PassError

    variants = [Variant("original", "original", {}, sample.onnx)]
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


def measure(variant: Variant, sample: SampleModel, config: BenchConfig) -> BenchReport:
    return benchmark(variant.path, signature_from_onnx(variant.path), config, data=sample.validation)


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


def report_sample(sample: SampleModel, variants: list[Variant]) -> None:
    original = variants[0]
    profile = demo_profile(sample, original.bench)
    reference_accuracy = original.accuracy
    metric = profile.accuracy_metric
    print(f"\n{sample.name} ({sample.task}); demo profile: size <= {profile.max_size_mb} MB, "
          f"p95 <= {profile.max_p95_ms} ms at batch 1, {metric} drop <= {profile.max_accuracy_drop}")
    header = ["variant", "size MB", "p50 ms", "p95 ms", "p99 ms", "thr b8 /s", "peak MB", metric, "verdict"]
    rows, candidates = [], []
    for v in variants:
        if v.bench is None:
            continue
        result = verdict(profile, bench=v.bench, accuracy=v.accuracy, reference_accuracy=reference_accuracy,
                         parent_bench=None if v is original else original.bench)
        candidates.append(make_candidate(name=v.name, parent=None if v is original else "original",
                                         pass_name=v.pass_name, profile=profile, bench=v.bench, accuracy=v.accuracy,
                                         verdict=result, reference_accuracy=reference_accuracy, options=v.options))
        value = v.accuracy.metrics.get(metric) if v.accuracy else None
        rows.append([
            v.name, f"{v.bench.file_size_bytes / MB:.3f}", f"{v.bench.p50(1):.3f}", f"{v.bench.p95(1):.3f}",
            f"{v.bench.p99(1):.3f}", f"{v.bench.at(8)['throughput']:.0f}", f"{v.bench.peak_memory_mb:.1f}",
            "-" if value is None else f"{value:.4f}",
            "PASS" if result.passed else "fails: " + "; ".join(result.failures),
        ])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(_row(header, widths))
    for row in rows:
        print(_row(row, widths))
    ranking = rank(candidates)
    print(f"ranking: {ranking.ordered or '-'}; pareto: {sorted(ranking.pareto)}; best: {ranking.best}; "
          f"best effort: {ranking.best_effort}")
    for line in advise(candidates, fingerprint=original.bench.fingerprint, ranking=ranking):
        print(f"  advice: {line}")


def repeatability(first: dict[str, BenchReport], again: dict[str, BenchReport]) -> float:
    """Print p50 difference in % between two measurements of the same variants; return the worst."""
    worst = 0.0
    print("\nrepeatability (quality_mlp, two fresh-process measurements, p50):")
    for name, report in first.items():
        for batch in (1, 8):
            a, b = report.p50(batch), again[name].p50(batch)
            diff = abs(a - b) / min(a, b) * 100
            worst = max(worst, diff)
            print(f"  {name:14s} batch {batch}: {a:.3f} ms vs {b:.3f} ms -> {diff:.1f} %")
    print(f"  worst p50 difference: {worst:.1f} % (target <= 10 %): {'OK' if worst <= 10 else 'OVER TARGET'}")
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of timed calls per batch size")
    parser.add_argument("--samples", default=",".join(SAMPLE_NAMES))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    config = BenchConfig(batch_sizes=(1, 8), threads=args.threads, time_budget_s=args.budget)
    repeat: list[tuple[Variant, SampleModel]] = []  # measured again at the end
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
            for v in variants:
                try:
                    v.bench = measure(v, sample, config)
                except BenchError as exc:
                    print(f"  {v.name}: benchmark failed: {exc}")
                    continue
                v.accuracy = evaluate(sample.onnx, v.path, sample.validation, task=sample.task)
            if variants[0].bench is None:
                print(f"  {name}: the original could not be measured; no table")
                continue
            fingerprint = fingerprint or variants[0].bench.fingerprint
            report_sample(sample, variants)
            if name == "quality_mlp":
                repeat = [(v, sample) for v in variants if v.name in ("original", "int8-dynamic") and v.bench]
        if repeat:
            repeatability({v.name: v.bench for v, _ in repeat}, {v.name: measure(v, s, config) for v, s in repeat})
    print(f"\nhardware: {fingerprint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
