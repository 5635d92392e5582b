"""The predict endpoint answers JSON, binary, .npy and .npz inputs, and chooses alias or version."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from tests.onnx_graphs import onnx_copy
from tests.predictions.conftest import sample

pytestmark = pytest.mark.django_db


def _reference(quality_mlp: Any, features: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(quality_mlp.onnx), providers=["CPUExecutionProvider"])
    return session.run(None, {"features": features})[0]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_a_json_prediction_answers_the_production_variant(caller: Any, features: np.ndarray, quality_mlp: Any) -> None:
    response = caller.post("mlp", {"inputs": {"features": features.tolist()}})
    assert response.status_code == 200, response.content
    body = response.json()
    assert {k: body[k] for k in ("model", "version", "variant", "cached", "fallback")} == {
        "model": "mlp", "version": 1, "variant": "original", "cached": False, "fallback": False}
    assert body["server_ms"] > 0
    np.testing.assert_allclose(np.array(body["outputs"]["quality"]), _reference(quality_mlp, features), rtol=1e-5)


def test_the_binary_form_gives_the_same_answer(caller: Any, features: np.ndarray, quality_mlp: Any) -> None:
    binary = {"b64": base64.b64encode(features.astype("<f4").tobytes()).decode(), "dtype": "float32",
              "shape": list(features.shape)}
    response = caller.post("mlp", {"inputs": {"features": binary}})
    assert response.status_code == 200, response.content
    np.testing.assert_allclose(np.array(response.json()["outputs"]["quality"]), _reference(quality_mlp, features),
                               rtol=1e-5)


def test_an_npy_body_feeds_a_single_input_model(caller: Any, features: np.ndarray, quality_mlp: Any) -> None:
    response = caller.post("mlp", raw=_npy(features), content_type="application/x-npy")
    assert response.status_code == 200, response.content
    np.testing.assert_allclose(np.array(response.json()["outputs"]["quality"]), _reference(quality_mlp, features),
                               rtol=1e-5)


def test_an_npz_body_feeds_arrays_by_input_name(registry: Any, multi_input_onnx: Any, make_caller: Any) -> None:
    registry.promote(registry.original(registry.register(multi_input_onnx, name="multi")))
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    mask = np.array([[True, False, True], [False, True, False]])
    ids = np.array([[1, 2], [3, 4]], np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, mask=mask, ids=ids)
    response = make_caller(registry.token("multi")).post("multi", raw=buffer.getvalue(),
                                                         content_type="application/x-npz")
    assert response.status_code == 200, response.content
    assert response.json()["outputs"] == {"y": [[1, 0, 3], [0, 5, 0]], "z": [[2, 3], [4, 5]]}


def test_ints_feed_a_float_input_and_bools_a_bool_input(registry: Any, multi_input_onnx: Any,
                                                        make_caller: Any) -> None:
    registry.promote(registry.original(registry.register(multi_input_onnx, name="multi")))
    response = make_caller(registry.token("multi")).post(
        "multi", {"inputs": {"x": [[1, 2, 3]], "mask": [[True, True, False]], "ids": [[0, 9]]}})
    assert response.status_code == 200, response.content
    assert response.json()["outputs"] == {"y": [[1.0, 2.0, 0.0]], "z": [[1, 10]]}


def test_alias_and_version_choose_the_variant(registry: Any, mlp: Any, quality_mlp: Any, caller: Any,
                                              features: np.ndarray) -> None:
    second = registry.register(_other_file(registry, quality_mlp))
    registry.promote(registry.original(second), alias="staging")
    body = {"inputs": {"features": features[:1]}}
    assert caller.post("mlp", body).json()["version"] == 1
    assert caller.post("mlp", body, query="?alias=staging").json()["version"] == 2
    assert caller.post("mlp", body, query="?version=2").json()["version"] == 2
    assert caller.post("mlp", body, query="?version=1").json()["version"] == 1
    missing = caller.post("mlp", body, query="?alias=canary")
    assert missing.status_code == 404 and "canary" in missing.json()["error"]
    assert caller.post("mlp", body, query="?version=9").status_code == 404


def test_version_n_serves_the_variant_an_approver_chose_never_a_jobs_best(registry: Any, mlp: Any, caller: Any,
                                                                         features: np.ndarray) -> None:
    """G2: a newer job calling another variant best does not move ?version=N; a promotion does."""
    from modelhub.models import OptimizationJob

    graph = registry.copy_variant(mlp, name="graph")
    OptimizationJob.objects.create(version=mlp, status=OptimizationJob.Status.SUCCEEDED, result={"best": "graph"})
    body = {"inputs": {"features": features[:1]}}
    assert caller.post("mlp", body, query="?version=1").json()["variant"] == "original"
    registry.promote(graph, alias="staging")
    assert caller.post("mlp", body, query="?version=1").json()["variant"] == "graph"


def test_answers_are_counted_in_the_latency_histogram(caller: Any, features: np.ndarray) -> None:
    labels = {"model": "mlp", "version": "1", "variant": "original"}
    before = sample("modelhub_predict_latency_seconds_count", labels)
    caller.post("mlp", {"inputs": {"features": features[:1]}})
    assert sample("modelhub_predict_latency_seconds_count", labels) == before + 1


def test_the_response_cache_answers_a_repeated_input_when_the_model_opts_in(caller: Any, mlp: Any,
                                                                           features: np.ndarray) -> None:
    from predictions import services

    services.config_set(model=mlp.model, cache_responses=True, cache_ttl_s=60)
    body = {"inputs": {"features": features[:2]}}
    first, second = caller.post("mlp", body).json(), caller.post("mlp", body).json()
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["outputs"] == second["outputs"]
    assert caller.post("mlp", {"inputs": {"features": features[2:4]}}).json()["cached"] is False


def test_without_opting_in_nothing_is_cached(caller: Any, features: np.ndarray) -> None:
    body = {"inputs": {"features": features[:1]}}
    assert [caller.post("mlp", body).json()["cached"] for _ in range(2)] == [False, False]


def _other_file(registry: Any, quality_mlp: Any) -> Any:
    return onnx_copy(quality_mlp.onnx, registry.tmp / "v2.onnx", note="second upload")
