"""The node target for real: Debian's node running onnxruntime-node from the project's node_modules."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.workers.targets import graphs
from workers.evaluation import accuracy
from workers.evaluation.bench import BenchConfig, ToMeasure
from workers.formats import signature_from_onnx
from workers.samples import SampleModel
from workers.targets import fidelity, runner

pytestmark = pytest.mark.slow
QUICK = BenchConfig(batch_sizes=(1, 8), rounds=4, processes=1, time_budget_s=0.3, iterations=400)


def test_node_measures_a_variant_with_the_native_report_shape_and_names_its_runtime(quality_mlp: SampleModel) -> None:
    """(G15) Two models measured together in onnxruntime-node: per batch size p50 / p95 / p99 with
    intervals from interleaved rounds of raw call times, load time, peak memory as node reports
    it, and a fingerprint naming node, its version, onnxruntime-node's version, backend, threads."""
    items = [ToMeasure(key=key, model=quality_mlp.onnx, signature=signature_from_onnx(quality_mlp.onnx))
             for key in ("a", "b")]
    run = runner.benchmark_many(items, QUICK, "node", data=quality_mlp.validation)
    assert run.errors == {}
    report = run.reports["a"]
    assert report.batch_sizes == [1, 8] and report.run["id"] == run.reports["b"].run["id"]
    figures = report.at(8)
    assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
    assert figures["intervals"]["p95"]["low"] <= figures["p95_ms"] <= figures["intervals"]["p95"]["high"]
    assert len(report.rounds(8)) >= 3 and report.load_time_ms > 0
    assert report.peak_memory_mb > 0 and "maxRSS" in report.memory_method
    fingerprint = report.fingerprint
    assert fingerprint["provider"] == "onnxruntime-node (cpu)" and fingerprint["runtime"] == "node"
    assert fingerprint["runtime_version"].split(".")[0].isdigit() and fingerprint["onnxruntime"] == "1.30.0"
    assert fingerprint["backend"] == "cpu" and fingerprint["threads"] == 1


def test_a_variant_node_cannot_load_is_left_out_with_a_reason_naming_the_op(tmp_path: Path,
                                                                             quality_mlp: SampleModel) -> None:
    """(E1) The load check: a model whose op (com.microsoft Rfft) has no CPU kernel never reaches a
    round; its error names Rfft and the node, and the variant beside it is still measured."""
    bad = graphs.rfft(tmp_path / "rfft.onnx")
    items = [ToMeasure(key="bad", model=bad, signature=signature_from_onnx(bad)),
             ToMeasure(key="good", model=quality_mlp.onnx, signature=signature_from_onnx(quality_mlp.onnx))]
    run = runner.benchmark_many(items, QUICK, "node")
    assert set(run.reports) == {"good"}
    assert "no kernel for Rfft (node 'spectrum'" in str(run.errors["bad"])
    assert "onnxruntime-node" in str(run.errors["bad"])


def test_node_answers_as_native_onnxruntime_does_on_the_validation_set(tmp_path: Path) -> None:
    """(G13) Accuracy on the target itself: the out-of-range float-to-int model, run in node on the
    validation rows, matches native onnxruntime exactly (both are x86 builds), INT_MIN included."""
    model = graphs.saturating_cast(tmp_path / "cast.onnx")
    reference = accuracy.run_reference(model, graphs.cast_dataset(tmp_path / "validation.npz"))
    report = fidelity.compare_on_target(reference, model, "node", task="regression")
    assert report.samples == 32 and report.metrics["max_abs_error"] == 0.0
    outputs = runner.outputs("node", model, {"x": reference.arrays["x"][:4]}, 2)
    assert outputs[0][0, 0] == np.float32(-2**31)


def _bundle_of_the_original(owner_name: str, sample: SampleModel, destination: Path) -> Path:
    """The bundle of a fresh version's original, unpacked into ``destination``."""
    from modelhub import bundles
    from tests import factories

    version = factories.version(factories.user(owner_name, "maintainer"), sample, f"{owner_name}-model")
    with zipfile.ZipFile(io.BytesIO(bundles.bundle_bytes(version.variants.get(name="original")))) as archive:
        archive.extractall(destination)
    return destination


@pytest.mark.django_db
def test_the_node_bundle_predicts_from_a_clean_directory_as_native_onnxruntime_does(
        tmp_path: Path, quality_mlp: SampleModel) -> None:
    """(G10) The bundle's Node part: its package.json pins onnxruntime-node 1.30.0, and
    node/predict.mjs, run from the unpacked bundle alone, answers the validation rows as native
    onnxruntime does. (``npm ci`` needs the registry, so the test links the project's own
    node_modules, the very install ``npm ci`` of that pin makes.)"""
    bundle = _bundle_of_the_original("nora", quality_mlp, tmp_path / "bundle")
    package = json.loads((bundle / "node" / "package.json").read_text())
    assert package["dependencies"] == {"onnxruntime-node": "1.30.0"}
    (bundle / "node" / "node_modules").symlink_to(runner.ROOT / "node_modules")
    name = signature_from_onnx(quality_mlp.onnx).inputs[0].name
    x = np.load(quality_mlp.validation)[name][:3]
    (tmp_path / "inputs.json").write_text(json.dumps({name: {"data": x.ravel().tolist(), "dims": list(x.shape)}}))
    done = subprocess.run([shutil.which("node") or "node", "predict.mjs", str(tmp_path / "inputs.json")],  # noqa: S603
                          cwd=bundle / "node", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (answer,) = json.loads(done.stdout).values()
    native = accuracy.run_reference(quality_mlp.onnx, quality_mlp.validation, max_samples=3).outputs[0]
    assert answer["dims"] == list(native.shape)
    assert np.allclose(np.array(answer["data"]).reshape(native.shape), native, atol=1e-5)


@pytest.mark.django_db
def test_a_node_job_judges_every_variant_in_onnxruntime_node(quality_mlp: SampleModel) -> None:
    """(G15) A job under a node profile: the original and its INT8 variant are each loaded,
    benchmarked and their accuracy measured in onnxruntime-node, and judged there: the target
    check names onnxruntime-node, and the stored report says which target measured it."""
    from modelhub.models import BenchmarkResult
    from tests import factories

    owner = factories.user("noel", "maintainer")
    profile = factories.profile("node-service", target="node", max_p95_ms=5000.0, max_accuracy_drop=0.05)
    version = factories.optimized_version(owner, quality_mlp, "node-mlp", profile=profile)
    results = BenchmarkResult.objects.filter(variant__version=version, profile=profile)
    assert sorted(result.variant.name for result in results) == ["int8", "original"]
    for result in results:
        assert result.fingerprint["runtime"] == "node" and result.report["config"]["target"] == "node"
        target = next(check for check in result.verdict["checks"] if check["rule"] == "target")
        assert target["passed"] and "onnxruntime-node (cpu)" in target["measured"]
        assert result.accuracy["samples"] > 0 and result.passed is not None  # judged (its calls vary with load)
