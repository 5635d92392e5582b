"""When the production variant cannot answer, the fallback chain does, and says so."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.test import Client

from modelhub import artifacts
from predictions import breaker, router, routing_table, runtime
from tests import factories
from tests.onnx_graphs import onnx_copy, sqrt_onnx
from tests.predictions.conftest import OtherProcess, sample
from tests.real_services import RedisServer

pytestmark = pytest.mark.django_db


def _corrupt(variant: Any) -> bytes:
    """Flip one byte in the middle of a stored model file (its weights); returns the original bytes."""
    path = artifacts.local_path(variant.storage_key)
    original = path.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return original


def _fallbacks(reason: str) -> float:
    return sample("modelhub_predict_fallbacks_total", {"model": "mlp", "reason": reason})


def _staff_readyz() -> Any:
    """/readyz as staff see it: per-model details (the public body names no model)."""
    client = Client()
    client.force_login(factories.user("ops", staff=True))
    return client.get("/readyz")


def test_a_corrupted_production_file_is_refused_and_its_parent_answers_flagged(
        registry: Any, mlp: Any, caller: Any, features: np.ndarray) -> None:
    """E1/A13: a flipped byte fails the sha256 check; the parent answers, flagged by header and metric, and
    /readyz says degraded."""
    child = registry.copy_variant(mlp, name="graph")
    registry.promote(child)
    body = {"inputs": {"features": features[:2]}}
    healthy = caller.post("mlp", body).json()
    assert (healthy["variant"], healthy["fallback"]) == ("graph", False)

    _corrupt(child)
    runtime.RUNTIMES.clear()  # a fresh process: nothing loaded yet
    fallbacks, mismatches = _fallbacks("load_error"), sample("modelhub_runtime_load_failures_total",
                                                             {"reason": "hash_mismatch"})
    response = caller.post("mlp", body)
    assert response.status_code == 200
    answer = response.json()
    assert (answer["variant"], answer["fallback"], answer["fallback_reason"]) == ("original", True, "load_error")
    assert answer["fallback_from"] == ["v1/graph: load_error"]
    assert response["X-Modelhub-Fallback"] == "load_error"
    assert answer["outputs"] == healthy["outputs"]
    assert _fallbacks("load_error") == fallbacks + 1
    assert sample("modelhub_runtime_load_failures_total", {"reason": "hash_mismatch"}) == mismatches + 1

    ready = _staff_readyz()
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded" and ready.json()["models"]["mlp"].startswith("fallback: v1/original")


def test_the_breaker_skips_a_failing_variant_and_tries_it_again_later(
        registry: Any, mlp: Any, caller: Any, features: np.ndarray, monkeypatch: pytest.MonkeyPatch,
        settings: Any) -> None:
    now = [1000.0]
    monkeypatch.setattr(breaker, "clock", lambda: now[0])
    child = registry.copy_variant(mlp, name="graph")
    registry.promote(child)
    good_bytes = _corrupt(child)
    runtime.RUNTIMES.clear()
    body = {"inputs": {"features": features[:1]}}

    def load_failures() -> float:
        return sample("modelhub_runtime_load_failures_total", {"reason": "hash_mismatch"})

    assert caller.post("mlp", body).json()["fallback_reason"] == "load_error"
    failures = load_failures()
    assert caller.post("mlp", body).json()["fallback_reason"] == "circuit_open"
    assert load_failures() == failures  # not loaded again while the breaker is open

    artifacts.local_path(child.storage_key).write_bytes(good_bytes)  # repaired
    assert caller.post("mlp", body).json()["fallback_reason"] == "circuit_open"
    now[0] += settings.MODELHUB_SERVING_BREAKER_OPEN_S + 1
    answer = caller.post("mlp", body).json()
    assert (answer["variant"], answer["fallback"]) == ("graph", False)


def test_the_previous_production_variant_answers_when_the_new_one_cannot(
        registry: Any, mlp: Any, caller: Any, features: np.ndarray, quality_mlp: Any) -> None:
    """E1: the previous production version answers when the promoted one fails to load."""
    second = registry.register(onnx_copy(quality_mlp.onnx, registry.tmp / "v2.onnx", note="v2"))
    registry.promote(registry.original(second))
    body = {"inputs": {"features": features[:1]}}
    assert caller.post("mlp", body).json()["version"] == 2

    _corrupt(registry.original(second))
    runtime.RUNTIMES.clear()
    answer = caller.post("mlp", body).json()
    assert (answer["version"], answer["variant"], answer["fallback_reason"]) == (1, "original", "load_error")


def test_a_promoted_variant_that_cannot_load_never_answers_and_its_chain_does(
        serving_redis: RedisServer, registry: Any, mlp: Any, features: np.ndarray, other_process: OtherProcess,
        caplog: pytest.LogCaptureFixture) -> None:
    """E1: a variant whose file is damaged after its promotion: each serving process finds out when it
    warms the new primary: the failure is counted and logged, the route still moves, and the original
    answers (flagged) instead of the variant that cannot load."""
    from modelhub.models import Deployment

    other = other_process
    graph = registry.copy_variant(mlp, name="graph")
    registry.promote(graph)
    _corrupt(graph)
    assert Deployment.objects.get(model=mlp.model).variant.name == "graph"
    runtime.RUNTIMES.clear()
    labels = {"model": "mlp", "reason": "hash_mismatch"}
    failures = sample("modelhub_serving_warm_failures_total", labels)

    other.next_check()
    with caplog.at_level(logging.WARNING, logger="predictions.routing_table"):
        route = other.route()
    assert route.chain[0].name == "graph" and not runtime.RUNTIMES.loaded(graph.sha256)
    assert sample("modelhub_serving_warm_failures_total", labels) == failures + 1
    assert "the new primary v1/graph cannot serve" in caplog.text
    answer = router.run_chain(route, {"features": features[:1]})
    assert (answer.variant.name, answer.fallback_reason) == ("original", "circuit_open")


def test_a_variant_emitting_nan_falls_back_to_its_parent(registry: Any, make_caller: Any, tmp_path: Path) -> None:
    version = registry.register(sqrt_onnx(tmp_path / "safe.onnx", safe=True), name="root")
    risky = registry.add_variant(version, sqrt_onnx(tmp_path / "risky.onnx", safe=False), name="fast")
    registry.promote(risky)
    caller = make_caller(registry.token("root"))
    before = sample("modelhub_predict_non_finite_outputs_total", {"model": "root", "variant": "v1/fast"})

    plain = caller.post("root", {"inputs": {"x": [[9.0]]}}).json()
    assert (plain["variant"], plain["outputs"], plain["fallback"]) == ("fast", {"y": [[3.0]]}, False)
    rescued = caller.post("root", {"inputs": {"x": [[-4.0]]}}).json()
    assert (rescued["variant"], rescued["outputs"], rescued["fallback_reason"]) == ("original", {"y": [[2.0]]},
                                                                                      "non_finite")
    assert sample("modelhub_predict_non_finite_outputs_total", {"model": "root", "variant": "v1/fast"}) == before + 1


def test_one_clients_nan_inputs_do_not_switch_a_model_off(registry: Any, make_caller: Any, tmp_path: Path,
                                                          settings: Any) -> None:
    registry.promote(registry.original(registry.register(sqrt_onnx(tmp_path / "nan.onnx", safe=False), name="root")))
    caller = make_caller(registry.token("root"))
    for _ in range(settings.MODELHUB_SERVING_BREAKER_FAILURES + 2):
        assert caller.post("root", {"inputs": {"x": [[-1.0]]}}).status_code == 422
    assert caller.post("root", {"inputs": {"x": [[4.0]]}}).json()["outputs"] == {"y": [[2.0]]}


def test_a_tampered_file_is_never_loaded(registry: Any, mlp: Any) -> None:
    """A13: one flipped byte of a stored model file is a hash mismatch and nothing is loaded."""
    spec = runtime.VariantSpec.from_variant(registry.original(mlp))
    _corrupt(registry.original(mlp))
    runtime.RUNTIMES.clear()
    with pytest.raises(runtime.LoadError, match="sha256") as caught:
        runtime.get(spec)
    assert caught.value.reason == "hash_mismatch" and not runtime.RUNTIMES.loaded(spec.sha256)


def test_torchscript_serves_only_when_enabled_and_then_as_the_last_fallback(
        registry: Any, make_user: Any, quality_mlp: Any, settings: Any, make_caller: Any) -> None:
    registry.maintainer = make_user("tess", "maintainer", torchscript=True)
    version = registry.register(quality_mlp.torchscript, name="ts")
    original = registry.original(version)
    export = registry.add_variant(version, quality_mlp.onnx, name="export", parent=original, pass_name="export")
    registry.promote(export)
    spec = runtime.VariantSpec.from_variant(original)
    with pytest.raises(runtime.LoadError) as caught:
        runtime.get(spec)
    assert caught.value.reason == "torchscript_disabled"

    settings.MODELHUB_SERVING_TORCHSCRIPT = True
    routing_table.TABLE.clear()
    _corrupt(export)
    runtime.RUNTIMES.clear()
    name = version.signature["inputs"][0]["name"]
    features = np.load(quality_mlp.validation)["features"][:2]
    answer = make_caller(registry.token("ts")).post("ts", {"inputs": {name: features}}).json()
    assert (answer["variant"], answer["fallback_reason"]) == ("original", "load_error")
    reference = runtime.get(runtime.VariantSpec.from_variant(original)).run({name: features})
    np.testing.assert_allclose(np.array(next(iter(answer["outputs"].values()))),
                               next(iter(reference.values())), rtol=1e-5)


def test_a_replaced_external_data_file_is_refused_and_the_previous_version_answers(
        registry: Any, make_caller: Any, tmp_path: Path) -> None:
    """A13/E1: the sha256 recorded at upload covers every file of a model, not only the .onnx: swapping the
    production version's external-data file is a hash mismatch, version 1 answers flagged, /readyz degrades."""
    from tests.onnx_graphs import WEIGHTS, add_model, external_model_dir, make_zip, write_model

    first = registry.register(write_model(add_model(), tmp_path / "plain" / "model.onnx"), name="adder")
    registry.promote(registry.original(first))
    root = external_model_dir(tmp_path / "external")
    archive = make_zip(tmp_path / "model.zip", {name: (root / name).read_bytes() for name in ("model.onnx",
                                                                                           "weights.bin")})
    second = registry.original(registry.register(archive, name="adder"))
    registry.promote(second)
    caller = make_caller(registry.token("adder"))
    body = {"inputs": {"x": [[1.0, 1.0, 1.0, 1.0]]}}
    healthy = caller.post("adder", body).json()
    assert (healthy["version"], healthy["fallback"], healthy["outputs"]) == (2, False, {"y": [[1.0, 2.0, 3.0, 4.0]]})

    data = next(f for f in second.files if f["path"] == "weights.bin")
    artifacts.local_path(data["key"]).write_bytes((WEIGHTS * 1000).tobytes())  # same size, other weights
    runtime.RUNTIMES.clear()
    mismatches = sample("modelhub_runtime_load_failures_total", {"reason": "hash_mismatch"})
    with pytest.raises(runtime.LoadError, match="weights.bin") as caught:
        runtime.get(runtime.VariantSpec.from_variant(second))
    assert caught.value.reason == "hash_mismatch"
    response = caller.post("adder", body)
    answer = response.json()
    assert (answer["version"], answer["fallback_reason"], answer["outputs"]) == (1, "load_error",
                                                                                 {"y": [[1.0, 2.0, 3.0, 4.0]]})
    assert response["X-Modelhub-Fallback"] == "load_error"
    assert sample("modelhub_runtime_load_failures_total", {"reason": "hash_mismatch"}) == mismatches + 2
    ready = _staff_readyz().json()
    assert ready["status"] == "degraded" and ready["models"]["adder"].startswith("fallback: v1/original")
