"""The browser-wasm target for real: Debian's Chromium, driven by Playwright, loading the product's
measuring page and onnxruntime-web 1.30.0 (wasm, SIMD) from a local cross-origin-isolated server.
The browser and slow markers come from this folder's conftest."""

from __future__ import annotations

import html
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
from django.test import Client

from modelhub.dashboard.pages.targets import target_rows
from modelhub.models import BenchmarkResult
from tests import factories
from tests.workers.targets import graphs
from workers.evaluation import accuracy, readiness
from workers.evaluation.bench import BenchConfig, ToMeasure
from workers.formats import signature_from_onnx
from workers.samples import SampleModel
from workers.targets import fidelity, runner
from workers.targets.server import IsolatedServer

QUICK = BenchConfig(batch_sizes=(1,), rounds=4, processes=1, time_budget_s=0.3, iterations=400)


def _item(key: str, model: Path) -> ToMeasure:
    return ToMeasure(key=key, model=model, signature=signature_from_onnx(model))


def test_wasm_measures_a_variant_isolated_with_the_native_report_shape(quality_mlp: SampleModel) -> None:
    """(G15) In Chromium the page is cross-origin isolated, so wasm runs on the profile's 2
    threads; the report has the native shape (intervals, raw rounds, load time), its memory is the
    renderer's peak, and its fingerprint names Chromium's version, onnxruntime-web's, wasm, SIMD.
    The browser's profile does not outlive the run (its child is killed right after answering)."""
    config = BenchConfig(batch_sizes=(1, 8), rounds=4, processes=1, time_budget_s=0.3, iterations=400, threads=2)
    scratch = set(Path(tempfile.gettempdir()).glob("modelhub-target-*"))
    run = runner.benchmark_many([_item("mlp", quality_mlp.onnx)], config, "browser-wasm", data=quality_mlp.validation)
    assert run.errors == {}
    assert set(Path(tempfile.gettempdir()).glob("modelhub-target-*")) <= scratch
    report = run.reports["mlp"]
    assert report.batch_sizes == [1, 8] and len(report.rounds(1)) >= 3
    assert report.estimate("p95", 8).low <= report.p95(8) <= report.estimate("p95", 8).high
    assert "renderer VmHWM" in report.memory_method and report.peak_memory_mb > 0  # threads: the kernel's count
    fingerprint = report.fingerprint
    assert fingerprint["provider"] == "onnxruntime-web (wasm)" and fingerprint["runtime"] == "chromium"
    assert fingerprint["onnxruntime"] == "1.30.0" and fingerprint["backend"] == "wasm" and fingerprint["simd"]
    assert fingerprint["isolated"] is True and fingerprint["threads"] == 2
    assert fingerprint["runtime_version"].split(".")[0].isdigit()


def test_a_variant_whose_op_wasm_lacks_fails_its_load_check_naming_the_op(tmp_path: Path,
                                                                        digits_cnn: SampleModel) -> None:
    """(E1) digits_cnn as onnxruntime's ORT_ENABLE_ALL level stores it holds x86 NCHWc Conv ops:
    node (a native build) measures it, onnxruntime-web's wasm build cannot create a session, and
    the reason names Conv of domain com.microsoft.nchwc before any round runs."""
    model = graphs.nchwc(digits_cnn.onnx, tmp_path / "nchwc.onnx")
    assert runner.benchmark_many([_item("nchwc", model)], QUICK, "node").errors == {}
    run = runner.benchmark_many([_item("nchwc", model), _item("plain", digits_cnn.onnx)], QUICK, "browser-wasm")
    assert set(run.reports) == {"plain"}
    reason = str(run.errors["nchwc"])
    assert "does not load in onnxruntime-web (wasm)" in reason
    assert "no kernel for Conv (domain com.microsoft.nchwc)" in reason


def test_an_answer_wrong_only_in_the_browser_fails_the_accuracy_rule_there(tmp_path: Path) -> None:
    """(G13) A target-only accuracy failure, made deterministic: the model casts out-of-range
    floats to int32, which C++ leaves undefined; native x86 answers INT_MIN, the wasm build
    saturates to INT_MAX (and NaN to 0). On the CPU the variant matches the original exactly and
    passes; measured in Chromium its max_abs_error is ~4.3e9 and the same profile refuses it."""
    model = graphs.saturating_cast(tmp_path / "cast.onnx")
    reference = accuracy.run_reference(model, graphs.cast_dataset(tmp_path / "validation.npz"))
    on_cpu = reference.compare(model, task="regression")
    in_browser = fidelity.compare_on_target(reference, model, "browser-wasm", task="regression")
    assert on_cpu.metrics["max_abs_error"] == 0.0
    assert in_browser.metrics["max_abs_error"] == pytest.approx(2.0**32, rel=1e-6)
    spec = readiness.ProfileSpec(target="browser-wasm", accuracy_metric="max_abs_error", min_accuracy=1e-3)
    report = runner.benchmark_many([_item("cast", model)], QUICK, "browser-wasm").reports["cast"]
    assert "measureUserAgentSpecificMemory" in report.memory_method  # one thread: the browser's own count
    verdict = readiness.verdict(spec, bench=report, accuracy=in_browser)
    assert verdict.passed is False
    assert [check["rule"] for check in verdict.checks if not check["passed"]] == ["min_accuracy"]
    assert readiness.verdict(spec, bench=report, accuracy=on_cpu).passed is True


@pytest.mark.django_db
def test_a_browser_wasm_job_judges_every_variant_in_chromium(quality_mlp: SampleModel) -> None:
    """(G15) A job under a browser-wasm profile: the original and its INT8 variant are each
    loaded, benchmarked and their accuracy measured in Chromium's onnxruntime-web, and judged
    there (the target check names onnxruntime-web, the accuracy is the browser's answer). After a
    native run of the same version, its page puts each variant's native and browser numbers side
    by side, with the p95 ratio and the advisor's sentence."""
    owner = factories.staff_user("wendy", "maintainer")
    profile = factories.profile("web", target="browser-wasm", max_p95_ms=5000.0, max_accuracy_drop=0.05)
    version = factories.optimized_version(owner, quality_mlp, "web-mlp", profile=profile)
    results = BenchmarkResult.objects.filter(variant__version=version, profile=profile)
    assert sorted(result.variant.name for result in results) == ["int8", "original"]
    for result in results:
        assert result.fingerprint["provider"] == "onnxruntime-web (wasm)", result.variant.name
        assert result.report["config"]["target"] == "browser-wasm"
        target = next(check for check in result.verdict["checks"] if check["rule"] == "target")
        assert target["passed"] and "onnxruntime-web (wasm)" in target["measured"]
        assert result.accuracy["samples"] > 0 and np.isfinite(result.accuracy["metrics"]["mae"])
    factories.job(version, owner, factories.profile("server", max_p95_ms=5000.0), plan=[])  # the original, natively
    client = Client()
    client.force_login(owner)
    page = client.get(f"/dashboard/models/web-mlp/versions/{version.number}/").content.decode()
    assert "Native and browser numbers" in page and "on Browser (onnxruntime-web, wasm)" in html.unescape(page)
    rows = target_rows(version=version)
    assert [(row["variant"], row["target"]) for row in rows] == [("original", "Browser (onnxruntime-web, wasm)"), ("int8", "Browser (onnxruntime-web, wasm)")]
    original = rows[0]
    assert original["ratio"]["low"] <= original["ratio"]["value"] <= original["ratio"]["high"]
    assert original["advice"].startswith("wasm ") and "p95 at batch 1 is" in original["advice"]
    assert original["advice"] in html.unescape(page) and rows[1]["ratio"] is None  # int8 has no native run


@pytest.mark.django_db
def test_the_browser_bundle_loads_and_predicts_in_a_static_page(page: Any, tmp_path: Path,
                                                                quality_mlp: SampleModel) -> None:
    """(G10) The bundle, unpacked and served as plain static files, predicts in Chromium: its
    index.html imports loader.mjs, which loads onnxruntime-web from the bundle's ort/ folder and
    the model named by config.json, and the page shows the outputs native onnxruntime gives for
    the same zeros; nothing is fetched from anywhere but the bundle."""
    from modelhub import bundles

    version = factories.version(factories.user("bea", "maintainer"), quality_mlp, "web-bundle")
    with zipfile.ZipFile(io.BytesIO(bundles.bundle_bytes(version.variants.get(name="original")))) as archive:
        archive.extractall(tmp_path / "bundle")
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    with IsolatedServer() as server:
        base = server.mount("bundle", tmp_path / "bundle")
        page.goto(base + "index.html")
        page.wait_for_function("() => document.getElementById('state').textContent !== 'loading the model…'")
        assert page.text_content("#state") == "predicted"
        shown = json.loads(page.text_content("#outputs"))
    signature = signature_from_onnx(quality_mlp.onnx)
    zeros = np.zeros([1, *signature.inputs[0].shape[1:]], dtype=np.float32)
    native = onnxruntime.InferenceSession(str(quality_mlp.onnx)).run(None, {signature.inputs[0].name: zeros})[0]
    (answer,) = shown.values()
    assert answer["dims"] == list(native.shape)
    assert np.allclose(answer["data"], native.ravel(), atol=1e-5)
    assert all(url.startswith(base) for url in fetched)
