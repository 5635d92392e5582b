"""Run every optimization pass on every sample model and print what each one did.

    python bench/passes.py [--samples DIR] [--search-budget SECONDS] [--only NAME ...]

Builds the sample models (workers.samples) in a temporary directory, or reuses/creates them in
DIR, then for each sample and each pass of workers.passes.PASS_NAMES runs the pass with its
default options and the sample's datasets, and prints: sample, pass, time (s), output size (KB),
size ratio vs the pass's input file, and the validation check — the task's default metric of
workers.evaluation.accuracy (agreement / mae / cosine_min) of the output against the sample's
float ONNX model, plus the max abs error. A pass that refuses the model (UnsupportedModelError)
or whose module is not written yet is skipped with the reason printed.

Pure: imports only the standard library, numpy and workers/ (no Django).
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.passes import PASS_NAMES, make_config  # noqa: E402
from workers.passes.base import PassError, UnsupportedModelError  # noqa: E402
from workers.samples import SAMPLE_NAMES, SampleModel, build_sample  # noqa: E402

COLUMNS = ("sample", "pass", "time (s)", "size (KB)", "ratio", "validation")
WIDTHS = (17, 17, 9, 11, 7, 44)


def _row(values: tuple[str, ...]) -> str:
    return "  ".join(str(v).ljust(w) if i < 2 or i == 5 else str(v).rjust(w)
                     for i, (v, w) in enumerate(zip(values, WIDTHS, strict=True)))


def _module_present(name: str) -> str | None:
    """None when the pass module imports, else why not."""
    try:
        importlib.import_module(f"workers.passes.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"workers.passes.{name}":
            return "module not written yet"
        return f"cannot import: {exc}"
    return None


def _validation(sample: SampleModel, artifact: Path) -> str:
    try:
        from workers.evaluation.accuracy import default_metric, evaluate
    except ImportError:
        return "(workers.evaluation.accuracy missing)"
    try:
        report = evaluate(sample.onnx, artifact, sample.validation, task=sample.task)
    except Exception as exc:  # noqa: BLE001 - report, do not stop the bench
        return f"not evaluated: {str(exc)[:60]}"
    metric = default_metric(report.task)
    return f"{metric}={report.metrics[metric]:.6g} max_abs={report.metrics['max_abs_error']:.3g}"


def _run_one(sample: SampleModel, name: str, out: Path, search_budget: float) -> tuple[str, ...] | str:
    """The table row, or the reason the pass was skipped."""
    missing = _module_present(name)
    if missing:
        return f"skipped: {missing}"
    src = sample.torchscript if name == "export" else sample.onnx
    data: dict[str, Any] = {"validation_data": sample.validation, "calibration_data": sample.calibration}
    if (sample.directory / "train.npz").exists():
        data["train_data"] = sample.directory / "train.npz"
    options = {"time_budget_s": search_budget} if name == "quantize_search" else {}
    try:
        config = make_config(name, options, **data)
        started = time.perf_counter()
        module = importlib.import_module(f"workers.passes.{name}")
        result = module.run(src, out, config)
        seconds = time.perf_counter() - started
    except UnsupportedModelError as exc:
        return f"skipped: {exc}"
    except PassError as exc:
        return f"failed ({type(exc).__name__}): {exc}"
    except Exception as exc:  # noqa: BLE001 - a crash in one pass must not hide the others
        traceback.print_exc(limit=3)
        return f"crashed ({type(exc).__name__}): {exc}"
    size = result.artifact.stat().st_size
    check = _validation(sample, result.artifact)
    if name == "quantize_search":
        check += f" chosen={result.metrics.get('chosen')} passed={result.metrics.get('passed')}"
    return (sample.name, name, f"{seconds:.2f}", f"{size / 1024:,.1f}", f"{size / src.stat().st_size:.3f}", check)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=Path, help="directory to build (or reuse) the sample models in")
    parser.add_argument("--search-budget", type=float, default=120.0, help="quantize_search time_budget_s")
    parser.add_argument("--only", nargs="*", default=None, help="run only these passes")
    args = parser.parse_args(argv)

    temp = Path(tempfile.mkdtemp(prefix="modelhub-bench-"))
    root = args.samples or temp / "samples"
    passes = [p for p in PASS_NAMES if args.only is None or p in args.only]
    try:
        print(f"samples in {root}", flush=True)
        samples = []
        for sample_name in SAMPLE_NAMES:
            started = time.perf_counter()
            samples.append(build_sample(sample_name, root))
            print(f"  {sample_name}: ready in {time.perf_counter() - started:.1f} s", flush=True)
        print()
        print(_row(COLUMNS))
        print(_row(tuple("-" * w for w in WIDTHS)))
        for sample in samples:
            for name in passes:
                outcome = _run_one(sample, name, temp / "out" / sample.name / name, args.search_budget)
                if isinstance(outcome, str):
                    print(f"{sample.name:<17}  {name:<17}  {outcome[:300]}", flush=True)
                else:
                    print(_row(outcome), flush=True)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
