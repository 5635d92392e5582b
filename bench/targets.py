"""Native vs node vs browser-wasm for the sample models: latency with intervals, accuracy, ratios.

    python bench/targets.py [--budget 1.0] [--samples quality_mlp,digits_cnn,tiny_transformer]
                            [--threads 1] [--rounds 12] [--iterations 2000]

Builds the sample models in a temporary directory (or ``--root``), makes an INT8 variant of each
(``quantize_dynamic``; for digits_cnn, which has Conv, with signed and with unsigned weights), then
measures the original and its variants three times: natively (``bench.benchmark_many``, one
onnxruntime process per model), in onnxruntime-node and in headless Chromium on onnxruntime-web's
wasm backend (``workers.targets.runner.benchmark_many``). Within each target the variants are
measured together in interleaved rounds; the targets run one after the other, so the ratios
between them are unpaired (``stats.speedup(paired=False)``, wider intervals). Accuracy: each
variant's validation outputs computed in each runtime and compared with the original's native
outputs (the default metric of the task). Prints, per sample, p50 / p95 at batch 1 with their
95 % intervals side by side, the node/native and wasm/native p50 and p95 ratios with intervals, the
accuracy on each target, and the advisor's sentence for wasm. Pure: no Django.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.evaluation import accuracy, stats  # noqa: E402
from workers.evaluation.advisor import target_line  # noqa: E402
from workers.evaluation.bench import BenchConfig, BenchReport, ToMeasure, benchmark_many  # noqa: E402
from workers.formats import signature_from_onnx  # noqa: E402
from workers.samples import SAMPLE_NAMES, SampleModel, build_sample  # noqa: E402
from workers.targets import fidelity, runner  # noqa: E402

TARGETS = ("native", "node", "browser-wasm")
BATCH = 1


def variants_of(sample: SampleModel, workdir: Path) -> dict[str, Path]:
    """The original and its INT8 variants (signed and unsigned weights where the model has Conv)."""
    from workers.passes import quantize_dynamic

    found = {"original": sample.onnx}
    kinds = ("qint8", "quint8") if sample.name == "digits_cnn" else ("qint8",)
    for kind in kinds:
        name = "int8" if kind == "qint8" else "int8-unsigned"
        result = quantize_dynamic.run(sample.onnx, workdir / sample.name / name, quantize_dynamic.Config(weight_type=kind))
        found[name] = Path(result.artifact)
    return found


def measure(target: str, models: dict[str, Path], config: BenchConfig, data: Path) -> tuple[dict[str, BenchReport], dict]:
    """All of ``models`` in one interleaved run on ``target``; (reports, errors)."""
    items = [ToMeasure(key=name, model=path, signature=signature_from_onnx(path)) for name, path in models.items()]
    started = time.perf_counter()
    run = benchmark_many(items, config, data=data) if target == "native" else \
        runner.benchmark_many(items, config, target, data=data)
    print(f"  {target}: {len(run.reports)} models measured together in {time.perf_counter() - started:.1f} s", flush=True)
    return run.reports, {name: str(error) for name, error in run.errors.items()}


def accuracies(target: str, models: dict[str, Path], reference: accuracy.ReferenceRun, task: str) -> dict[str, float]:
    """The task's default metric of each model's outputs on ``target`` against the original's native outputs."""
    metric = accuracy.default_metric(task)
    found = {}
    for name, path in models.items():
        report = reference.compare(path, task=task) if target == "native" else \
            fidelity.compare_on_target(reference, path, target, task=task)
        found[name] = report.metrics[metric]
    return found


def _interval(report: BenchReport, statistic: str) -> str:
    value = report.estimate(statistic, BATCH)
    return f"{value.value:.3f} [{value.low:.3f}–{value.high:.3f}]"


def _ratio(native: BenchReport, other: BenchReport, statistic: str = "p95") -> tuple[str, stats.Estimate]:
    """other / native with its interval (unpaired: separate runs), and the speed-up behind it."""
    speedup = other.speedup(native, statistic, BATCH)  # native's time over the target's
    return f"{1 / speedup.value:.2f}x [{1 / speedup.high:.2f}–{1 / speedup.low:.2f}]", speedup


def report_sample(sample: SampleModel, reports: dict[str, dict[str, BenchReport]],
                  accuracy_of: dict[str, dict[str, float]]) -> None:
    """The side-by-side table of one sample, then the advisor's sentence per variant for wasm."""
    metric = accuracy.default_metric(sample.task)
    header = ["variant"] + [f"{t} p50 ms" for t in TARGETS] + [f"{t} p95 ms" for t in TARGETS] + \
        ["node/native p50", "wasm/native p50", "node/native p95", "wasm/native p95"] + \
        [f"{metric} {t}" for t in TARGETS]
    rows = []
    for name in reports["native"]:
        if any(name not in reports[t] for t in TARGETS):
            continue
        native, node, wasm = (reports[t][name] for t in TARGETS)
        rows.append([name, *(_interval(r, "p50") for r in (native, node, wasm)),
                     *(_interval(r, "p95") for r in (native, node, wasm)),
                     *(_ratio(native, other, statistic)[0] for statistic in ("p50", "p95") for other in (node, wasm)),
                     *(f"{accuracy_of[t][name]:.5f}" for t in TARGETS)])
    print(f"\n{sample.name} ({sample.task}), batch {BATCH}, ms with 95 % intervals; ratios > 1: slower than native")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    for name in (row[0] for row in rows):
        native, wasm = reports["native"][name], reports["browser-wasm"][name]
        limit = round(native.p95(BATCH) * 1.5, 3)  # a demo limit: 1.5x the native p95
        print(f"  advice ({name}, demo limit {limit} ms): "
              f"{target_line('browser-wasm', _ratio(native, wasm)[1], wasm.p95(BATCH), BATCH, limit)}")


def main() -> None:
    """Parse the options, build the samples and print each sample's table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per batch size and model")
    parser.add_argument("--samples", default=",".join(SAMPLE_NAMES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--root", type=Path, default=None, help="where the samples are built (reused)")
    args = parser.parse_args()
    config = BenchConfig(batch_sizes=(BATCH, 8), threads=args.threads, rounds=args.rounds, iterations=args.iterations,
                         processes=1, time_budget_s=args.budget)
    with tempfile.TemporaryDirectory(prefix="bench-targets-") as scratch:
        root = args.root or Path(scratch) / "samples"
        for name in args.samples.split(","):
            sample = build_sample(name, root)
            print(f"{name}: building variants", flush=True)
            models = variants_of(sample, Path(scratch))
            reference = accuracy.run_reference(sample.onnx, sample.validation)
            reports, accuracy_of = {}, {}
            for target in TARGETS:
                reports[target], errors = measure(target, models, config, sample.validation)
                for failed, reason in errors.items():
                    print(f"    {failed} on {target}: {reason}")
                accuracy_of[target] = accuracies(target, {k: v for k, v in models.items() if k in reports[target]},
                                                 reference, sample.task)
            report_sample(sample, reports, accuracy_of)
            print(f"  fingerprints: native {reports['native']['original'].fingerprint['provider']}, "
                  f"node {reports['node']['original'].fingerprint.get('runtime_version')}, "
                  f"chromium {reports['browser-wasm']['original'].fingerprint.get('runtime_version')} "
                  f"(isolated: {reports['browser-wasm']['original'].fingerprint.get('isolated')})", flush=True)


if __name__ == "__main__":
    main()
