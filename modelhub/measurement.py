"""Measuring variants of a version: what a job and the nightly re-benchmark share.

One way to set up, measure and record a variant, whoever asks: the variants of one run are
benchmarked together in interleaved rounds (``workers.evaluation.bench.benchmark_many``), their
accuracy is checked against the reference on the validation set, and each gets its verdict under
the profile, or "measured, not judged" when there is none.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from modelhub import artifacts
from modelhub.models import ReadinessProfile, Variant
from workers import formats
from workers.evaluation import accuracy, bench, readiness
from workers.targets import capabilities, fidelity, runner


@dataclass
class EvaluationSetup:
    """What measuring variants of one version needs: the profile (None: measure, do not judge),
    its spec, the signature, the validation data and the reference: its outputs on that data,
    computed once per setup, and its own score."""

    profile: ReadinessProfile | None
    spec: readiness.ProfileSpec
    signature: formats.Signature
    validation: Path | None
    reference: Variant | None
    reference_run: accuracy.ReferenceRun | None
    reference_accuracy: Any
    task: str

    @property
    def judged(self) -> bool:
        return self.profile is not None


@dataclass
class Measurement:
    """One variant measured: its bench report, accuracy (None without validation data) and verdict."""

    report: bench.BenchReport
    accuracy: Any
    verdict: readiness.Verdict


def reference_of(version: Any) -> Variant | None:
    """What accuracy is measured against: the original, or its ONNX export for TorchScript."""
    ready = version.variants.filter(status=Variant.Status.READY)
    original = ready.filter(name=Variant.ORIGINAL).first()
    if original is not None and original.format == "onnx":
        return original
    return ready.filter(pass_name="export").order_by("created_at").first()


def evaluation_setup(version: Any, profile: ReadinessProfile | None,
                     spec: readiness.ProfileSpec | None = None, validation: Path | None = None) -> EvaluationSetup:
    """Prepare measuring variants of ``version`` under ``profile``: the reference runs on the
    validation data here, once, and every variant is compared with those outputs.
    ``spec`` stands in for a profile that no longer exists (its limits kept by a baseline);
    ``validation`` replaces the version's validation rows (a job's held-out split)."""
    if validation is None:
        dataset = version.dataset("validation")
        validation = artifacts.local_path(dataset.storage_key, dataset.sha256) if dataset else None
    reference = reference_of(version)
    task = version.model.task
    run = ref_accuracy = None
    spec = profile.to_spec() if profile is not None else spec or readiness.ProfileSpec()
    if reference is not None and validation is not None:
        # Accuracy is judged at the batch latency is judged at, where a model's outputs depend on it.
        run = accuracy.run_reference(artifacts.local_model(reference), validation, batch=spec.batch_size)
        ref_accuracy = run.itself(task=task)
        task = ref_accuracy.task
    return EvaluationSetup(profile=profile, spec=spec, signature=formats.Signature.from_dict(version.signature),
                           validation=validation, reference=reference, reference_run=run,
                           reference_accuracy=ref_accuracy, task=task)


def bench_config(overrides: dict[str, Any], spec: readiness.ProfileSpec) -> bench.BenchConfig:
    """The bench settings of a run: the profile's batch size, threads and target, enough calls for
    the statistics the profile uses, plus the run's own options."""
    overrides = dict(overrides or {})
    batch_sizes = overrides.pop("batch_sizes", None) or sorted({1, spec.batch_size, 8})
    iterations = max(int(overrides.pop("iterations", bench.BenchConfig.iterations)), spec.min_calls)
    # node and browser-wasm run on the CPU; their runner takes the target from the profile itself.
    provider = capabilities.native_provider(spec.target)
    return bench.BenchConfig(batch_sizes=tuple(batch_sizes), threads=spec.threads, provider=provider,
                             iterations=iterations,
                             **{"time_budget_s": settings.MODELHUB_BENCH_BUDGET_S,
                                "processes": settings.MODELHUB_BENCH_PROCESSES, **overrides})


def _variant_signature(path: Path, fallback: formats.Signature) -> formats.Signature:
    try:
        return formats.signature_from_onnx(path)
    except Exception:  # noqa: BLE001 - the bench child reports unreadable files itself
        return fallback


def _accuracy(setup: EvaluationSetup, variant: Variant) -> Any:
    if setup.reference_run is None:
        return None
    if capabilities.is_js(setup.spec.target):  # answered by the target's runtime, the original too
        return fidelity.compare_on_target(setup.reference_run, artifacts.local_model(variant), setup.spec.target,
                                          task=setup.task, threads=setup.spec.threads)
    if setup.reference is not None and variant.pk == setup.reference.pk:
        return setup.reference_accuracy
    return setup.reference_run.compare(artifacts.local_model(variant), task=setup.task)


def _judge(setup: EvaluationSetup, report: bench.BenchReport, acc: Any, parent: bench.BenchReport | None,
           variant: Variant) -> readiness.Verdict:
    if not setup.judged:
        return readiness.unjudged(acc)
    return readiness.verdict(setup.spec, bench=report, accuracy=acc, reference_accuracy=setup.reference_accuracy,
                             parent_bench=parent, size_bytes=variant.size_bytes)


def _benchmark(items: list[bench.ToMeasure], config: bench.BenchConfig, setup: EvaluationSetup) -> bench.Run:
    """The interleaved run: native ONNX Runtime for cpu / cuda, the target's own runtime for node
    and browser-wasm (each variant's session is created there first: the load check)."""
    if capabilities.is_js(setup.spec.target):
        return runner.benchmark_many(items, config, setup.spec.target, data=setup.validation)
    return bench.benchmark_many(items, config, data=setup.validation)


def measure_variants(variants: list[Variant], setup: EvaluationSetup, config: bench.BenchConfig, *,
                     parents: dict[int, bench.BenchReport] | None = None
                     ) -> tuple[dict[int, Measurement], dict[int, str]]:
    """Benchmark ``variants`` together in interleaved rounds, check each one's accuracy and judge it.
    Returns (measurements by variant id, errors by variant id for those that could not be measured).
    ``parents``: reports of parents measured elsewhere (for the speed-up rule)."""
    items = []
    for variant in variants:
        path = artifacts.local_model(variant)
        items.append(bench.ToMeasure(key=str(variant.pk), model=path, signature=_variant_signature(path, setup.signature)))
    run = _benchmark(items, config, setup)
    reports = {**(parents or {}), **{int(key): report for key, report in run.reports.items()}}
    measured: dict[int, Measurement] = {}
    errors = {int(key): str(exc) for key, exc in run.errors.items()}
    for variant in variants:
        report = reports.get(variant.pk)
        if report is None or str(variant.pk) not in run.reports:
            continue
        try:
            acc = _accuracy(setup, variant)
        except Exception as exc:  # noqa: BLE001 - a variant that cannot answer the rows fails alone, with why
            errors[variant.pk] = f"its accuracy could not be measured on the validation rows: {str(exc)[:500]}"
            continue
        verdict = _judge(setup, report, acc, reports.get(variant.parent_id), variant)
        measured[variant.pk] = Measurement(report=report, accuracy=acc, verdict=verdict)
    return measured, errors


def measure_variant(variant: Variant, setup: EvaluationSetup, config: bench.BenchConfig, *,
                    parent_bench: bench.BenchReport | None = None) -> Measurement:
    """Measure one variant alone (BenchError when it cannot be measured)."""
    parents = {variant.parent_id: parent_bench} if parent_bench is not None and variant.parent_id else None
    measured, errors = measure_variants([variant], setup, config, parents=parents)
    if variant.pk in errors:
        raise bench.BenchError(errors[variant.pk])
    return measured[variant.pk]


def jsonable(value: Any) -> Any:
    """Strict JSON of engine results (numpy scalars become numbers)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def fingerprint_hash(fingerprint: dict[str, Any]) -> str:
    """A short stable digest of a hardware fingerprint (results compare only within one)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:16]


def result_fields(variant: Variant, setup: EvaluationSetup, measurement: Measurement) -> dict[str, Any]:
    """The BenchmarkResult columns of a measurement: figures at the profile's batch size, throughput
    at the largest batch measured (and which one), the judgment's profile limits."""
    report, spec = measurement.report, setup.spec
    batch = spec.batch_size if spec.batch_size in report.batch_sizes else report.batch_sizes[0]
    at, largest = report.at(batch), max(report.batch_sizes)
    return {
        "batch_size": batch, "statistic": spec.statistic, "p50_ms": at["p50_ms"], "p95_ms": at["p95_ms"],
        "p99_ms": at["p99_ms"], "intervals": jsonable(at["intervals"]), "throughput": report.at(largest)["throughput"],
        "throughput_batch": largest, "peak_memory_mb": report.peak_memory_mb, "size_bytes": variant.size_bytes,
        "report": jsonable(report.to_dict()),
        "accuracy": jsonable(measurement.accuracy.to_dict()) if measurement.accuracy else {},
        "verdict": jsonable(measurement.verdict.to_dict()), "passed": measurement.verdict.passed,
        "profile_spec": spec.to_dict() if setup.judged else {},
        "fingerprint": jsonable(report.fingerprint), "fingerprint_hash": fingerprint_hash(report.fingerprint),
    }
