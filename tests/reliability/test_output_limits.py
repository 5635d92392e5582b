"""Part B of issue 17: what an answer may hold (G7) and what the session's outputs and the inputs must
be (G13). Real models (built by hand with ``tests.onnx_graphs``), the real intake child, ONNX Runtime
and the serving plane's predict and Open Inference Protocol routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
import pytest
from django.test import Client

from tests import factories
from tests.onnx_graphs import linear_onnx, node, onnx_model, tensor, write_model
from tests.predictions.conftest import Caller, registry, sample, serving_state  # noqa: F401 - fixtures

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

WEIGHTS3 = np.arange(12, dtype=np.float32).reshape(4, 3) / 10


def _proved_big(path: Path) -> Path:
    """x float32 [1, 4] -> y = sum(x) expanded to a constant [6000, 6000], declared free ["h", "w"]."""
    made = onnx_model([node("ReduceSum", ["x"], ["s"], keepdims=0), node("Expand", ["s", "shape"], ["y"])],
                      [tensor("x", "float32", [1, 4])], [tensor("y", "float32", ["h", "w"])],
                      {"shape": np.array([6000, 6000], dtype=np.int64)}, name="big")
    return write_model(made, path, check=True)


def _shaped_by_values(path: Path, declared: list[int | str]) -> Path:
    """x float32 [batch, 4] -> zeros of shape (x[0, 0], x[0, 1]): a size no declaration can bound."""
    made = onnx_model([node("Cast", ["x"], ["i"], to=onnx.TensorProto.INT64), node("Reshape", ["i", "flat"], ["f"]),
                       node("Slice", ["f", "start", "stop"], ["shape"]), node("ConstantOfShape", ["shape"], ["y"])],
                      [tensor("x", "float32", ["batch", 4])], [tensor("y", "float32", declared)],
                      {"flat": np.array([-1], np.int64), "start": np.array([0], np.int64),
                       "stop": np.array([2], np.int64)}, name="by_values")
    return write_model(made, path, check=True)


def _serve(registry: Any, path: Path, name: str) -> tuple[Any, Caller]:  # noqa: F811 - the fixture's value
    version = registry.register(path, name=name)
    registry.promote(registry.original(version))
    return version, Caller(registry.token(name))


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def test_intake_refuses_a_model_whose_output_is_proved_over_the_cap(maintainer: Any, media_root: Path,
                                                                     tmp_path: Path) -> None:
    """G7: a 150-byte ONNX whose output is 6000×6000 for a 1×4 input (declared free, proved by shape
    inference) ends FAILED at intake, with the cap and its setting named."""
    path = _proved_big(tmp_path / "big.onnx")
    assert path.stat().st_size < 300
    version = factories.upload(maintainer, path, name="big")
    assert version.status == "FAILED"
    assert "36,000,000 elements" in version.status_reason
    assert "MODELHUB_SERVING_MAX_OUTPUT_ELEMENTS" in version.status_reason


def test_an_answer_over_the_cap_is_a_small_422_and_memory_stays_flat(registry: Any, tmp_path: Path) -> None:  # noqa: F811
    """G7: an output sized by the input's values (6000×6000 for a 1×4 input) passes intake (its dims
    are free, noted) and is refused before rendering: 422 with a short JSON reason, no 180 MB body,
    and the process's RSS flat over repeated requests; a small answer of the same model is served."""
    version, caller = _serve(registry, _shaped_by_values(tmp_path / "dyn.onnx", ["h", "w"]), "dyn")
    assert any("checked at run time" in note for note in version.inspection["notes"])
    body = {"inputs": {"x": [[6000, 6000, 0, 0]]}}
    first = caller.post("dyn", body)
    assert first.status_code == 422, first.content[:300]
    before = _rss_mb()
    for _ in range(5):
        response = caller.post("dyn", body)
        assert response.status_code == 422
    growth = _rss_mb() - before
    reason = response.json()["error"]
    assert len(response.content) < 2000
    assert "36,000,000 elements" in reason and "MODELHUB_SERVING_MAX_OUTPUT_ELEMENTS" in reason
    assert growth < 16, f"RSS grew {growth:.1f} MB over 5 refused answers"
    assert sample("modelhub_predict_refused_outputs_total",
                  {"model": "dyn", "variant": "v1/original", "reason": "output_too_large"}) >= 6
    small = caller.post("dyn", {"inputs": {"x": [[2, 3, 0, 0]]}})
    assert small.status_code == 200 and small.json()["outputs"]["y"] == [[0.0] * 3] * 2


def test_a_variant_unlike_its_declared_outputs_falls_back_counted(registry: Any, tmp_path: Path) -> None:  # noqa: F811
    """G13: a production variant that returns [batch, 8] where the version declares [batch, 3] is
    refused; its parent answers, flagged, and the refusal and the fallback are counted."""
    version, caller = _serve(registry, linear_onnx(tmp_path / "lin.onnx", WEIGHTS3), "lin")
    broken = registry.add_variant(version, linear_onnx(tmp_path / "wide.onnx", np.ones((4, 8), np.float32)), "wide")
    registry.promote(broken)
    fallbacks = sample("modelhub_predict_fallbacks_total", {"model": "lin", "reason": "output_mismatch"})
    response = caller.post("lin", {"inputs": {"x": [[1, 2, 3, 4], [0, 0, 0, 1]]}})
    assert response.status_code == 200
    answer = response.json()
    assert (answer["variant"], answer["fallback_reason"]) == ("original", "output_mismatch")
    assert np.allclose(answer["outputs"]["y"], np.array([[1, 2, 3, 4], [0, 0, 0, 1]], np.float32) @ WEIGHTS3)
    assert sample("modelhub_predict_fallbacks_total", {"model": "lin", "reason": "output_mismatch"}) == fallbacks + 1
    assert sample("modelhub_predict_refused_outputs_total",
                  {"model": "lin", "variant": "v1/wide", "reason": "output_mismatch"}) >= 1


def test_an_output_unlike_its_declaration_with_no_fallback_is_a_clear_422(registry: Any, tmp_path: Path) -> None:  # noqa: F811
    """G13: a model declaring y [1, 3] that returns [1, 8] (its shape comes from the input's values, so
    intake cannot see it) answers 422 naming the output and both shapes; [1, 3] answers 200."""
    _, caller = _serve(registry, _shaped_by_values(tmp_path / "decl.onnx", [1, 3]), "decl")
    response = caller.post("decl", {"inputs": {"x": [[1, 8, 0, 0]]}})
    assert response.status_code == 422
    reason = response.json()["error"]
    assert "output 'y' has shape [1, 8]; the signature declares [1, 3]" in reason
    assert caller.post("decl", {"inputs": {"x": [[1, 3, 0, 0]]}}).status_code == 200


def test_booleans_feed_only_bool_inputs_on_both_routes(registry: Any, tmp_path: Path) -> None:  # noqa: F811
    """G13: [[true, 1, 2, 3]] into a float input is a 400 naming the input, never fed as 1 (predict
    and Open Inference Protocol routes)."""
    _, caller = _serve(registry, linear_onnx(tmp_path / "lin.onnx", WEIGHTS3), "lin")
    for rows in ([[True, 1, 2, 3]], [[1.5, 2, False, 3]], [[True, True, False, True]]):
        response = caller.post("lin", {"inputs": {"x": rows}})
        assert response.status_code == 400, rows
        assert "Input 'x'" in response.json()["error"]
    infer = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [True, 1, 2, 3]}]}
    response = Client().post("/v2/models/lin/infer", data=orjson.dumps(infer), content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {caller.token}")
    assert response.status_code == 400
    assert "Input 'x'" in response.json()["error"] and "true/false" in response.json()["error"]
    assert caller.post("lin", {"inputs": {"x": [[1, 2, 3, 4]]}}).status_code == 200


def test_non_ascii_digits_are_refused_in_selectors(registry: Any, tmp_path: Path) -> None:  # noqa: F811
    """G13: ?version=١ (an Arabic-Indic one, which int() reads as 1) is a 400 on the predict route and
    on the protocol's /versions/<v>, never version 1; ASCII 1 serves."""
    _, caller = _serve(registry, linear_onnx(tmp_path / "lin.onnx", WEIGHTS3), "lin")
    body = {"inputs": {"x": [[1, 2, 3, 4]]}}
    for query in ("?version=%D9%A1", "?version=%EF%BC%91", "?alias=pr%C3%B6d"):
        response = caller.post("lin", body, query=query)
        assert response.status_code == 400, query
        assert "error" in response.json()
    assert caller.post("lin", body, query="?version=1").status_code == 200
    infer = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    auth = {"HTTP_AUTHORIZATION": f"Bearer {caller.token}"}
    response = Client().post("/v2/models/lin/versions/%D9%A1/infer", data=infer, content_type="application/json",
                             **auth)
    assert response.status_code == 400
    ok = Client().post("/v2/models/lin/versions/1/infer", data=infer, content_type="application/json", **auth)
    assert ok.status_code == 200
