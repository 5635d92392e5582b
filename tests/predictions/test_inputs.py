"""Every bad input is a 4xx JSON answer naming the input and the problem; never a 500, never a run
(RELIABILITY.md C1-C5)."""

from __future__ import annotations

import base64
import io
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from tests.onnx_graphs import sqrt_onnx
from tests.predictions.conftest import sample

pytestmark = pytest.mark.django_db

GOOD = {"x": [[1, 2, 3]], "mask": [[True, False, True]], "ids": [[1, 2]]}


def _inputs(**changes: Any) -> bytes:
    inputs = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    return orjson.dumps({"inputs": inputs})


def _b64(array: np.ndarray, dtype: str | None = None, shape: list[int] | None = None) -> dict[str, Any]:
    return {"b64": base64.b64encode(array.tobytes()).decode(), "dtype": dtype or array.dtype.name,
            "shape": shape if shape is not None else list(array.shape)}


def _npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


JSON = "application/json"
# (case id, model, body bytes, content type, settings, status, words the error must contain)
CASES = [
    ("missing-input", "multi", _inputs(ids=None), JSON, {}, 400, ["missing", "'ids'"]),
    ("extra-input", "multi", _inputs(bogus=[[1]]), JSON, {}, 400, ["unknown", "'bogus'"]),
    ("wrong-rank", "multi", _inputs(x=[1, 2, 3]), JSON, {}, 400, ["'x'", "rank"]),
    ("wrong-fixed-dim", "multi", _inputs(x=[[1, 2]]), JSON, {}, 400, ["'x'", "axis 1", "3"]),
    ("scalar", "multi", _inputs(x=5), JSON, {}, 400, ["'x'"]),
    ("ragged-lists", "multi", _inputs(x=[[1, 2, 3], [1, 2]]), JSON, {}, 400, ["'x'", "ragged"]),
    ("strings", "multi", _inputs(x=[["a", "b", "c"]]), JSON, {}, 400, ["'x'"]),
    ("null", "multi", _inputs(x=[[None, 1, 2]]), JSON, {}, 400, ["'x'"]),
    ("dict-in-list", "multi", _inputs(x=[[{"a": 1}, 1, 2]]), JSON, {}, 400, ["'x'"]),
    ("floats-to-int-input", "multi", _inputs(ids=[[1.5, 2]]), JSON, {}, 400, ["'ids'", "integers"]),
    ("integral-floats-to-int-input", "multi", _inputs(ids=[[1.0, 2.0]]), JSON, {}, 400, ["'ids'", "integers"]),
    ("bools-to-float-input", "multi", _inputs(x=[[True, False, True]]), JSON, {}, 400, ["'x'", "bool"]),
    ("ints-to-bool-input", "multi", _inputs(mask=[[1, 0, 1]]), JSON, {}, 400, ["'mask'", "bool"]),
    ("int-out-of-range", "multi", _inputs(ids=[[2**63 + 5, 2**63 + 6]]), JSON, {}, 400, ["'ids'", "range"]),
    ("batch-mismatch", "multi", _inputs(x=[[1, 2, 3], [4, 5, 6]]), JSON, {}, 400, ["'mask'", "batch", "'x'"]),
    ("batch-over-cap", "multi", _inputs(x=[[1, 2, 3]] * 3, mask=[[True] * 3] * 3, ids=[[1, 2]] * 3), JSON,
     {"MODELHUB_SERVING_MAX_BATCH": 2}, 413, ["'x'", "batch of 3", "limit is 2"]),
    ("elements-over-cap", "multi", _inputs(x=[[1, 2, 3]] * 2, mask=[[True] * 3] * 2, ids=[[1, 2]] * 2), JSON,
     {"MODELHUB_SERVING_MAX_ELEMENTS": 5}, 413, ["'x'", "6 elements"]),
    ("nan-literal", "multi", b'{"inputs": {"x": [[NaN, 1, 2]], "mask": [[true, true, true]], "ids": [[1, 2]]}}',
     JSON, {}, 400, ["NaN"]),
    ("infinity-literal", "multi", b'{"inputs": {"x": [[Infinity, 1, 2]]}}', JSON, {}, 400, ["Infinity"]),
    ("minus-infinity-literal", "multi", b'{"inputs": {"x": [[-Infinity, 1, 2]]}}', JSON, {}, 400, ["Infinity"]),
    ("float-overflowing-double", "multi", b'{"inputs": {"x": [[1e400, 1, 2]]}}', JSON, {}, 400, ["too large"]),
    ("float-overflowing-float32", "multi", _inputs(x=[[1e300, 1, 2]]), JSON, {}, 400, ["'x'", "float32"]),
    ("100k-digit-integer", "multi", b'{"inputs": {"x": [[' + b"9" * 100_000 + b', 1, 2]]}}', JSON, {}, 400,
     ["too large"]),
    ("150k-deep-nesting", "multi", b'{"inputs": {"x": ' + b"[" * 150_000 + b"]" * 150_000 + b"}}", JSON, {}, 400,
     ["nested too deeply"]),
    ("not-json", "multi", b"hello", JSON, {}, 400, ["not valid JSON"]),
    ("empty-body", "multi", b"", JSON, {}, 400, ["empty"]),
    ("top-level-list", "multi", b"[1, 2]", JSON, {}, 400, ['"inputs"']),
    ("inputs-not-an-object", "multi", b'{"inputs": [1, 2]}', JSON, {}, 400, ['"inputs"']),
    ("unknown-top-level-field", "multi", b'{"inputs": {}, "extra": 1}', JSON, {}, 400, ["extra"]),
    ("b64-nan", "multi", _inputs(x=_b64(np.array([[np.nan, 1, 2]], np.float32))), JSON, {}, 400, ["'x'", "NaN"]),
    ("b64-inf", "multi", _inputs(x=_b64(np.array([[np.inf, 1, 2]], np.float32))), JSON, {}, 400, ["'x'", "NaN"]),
    ("b64-wrong-length", "multi", _inputs(x=_b64(np.zeros((1, 2), np.float32), shape=[1, 3])), JSON, {}, 400,
     ["'x'", "bytes"]),
    ("b64-not-base64", "multi", _inputs(x={"b64": "!!!!", "dtype": "float32", "shape": [1, 3]}), JSON, {}, 400,
     ["'x'", "base64"]),
    ("b64-unknown-dtype", "multi", _inputs(x={"b64": "", "dtype": "complex64", "shape": [1, 3]}), JSON, {}, 400,
     ["'x'", "complex64"]),
    ("b64-negative-shape", "multi", _inputs(x={"b64": "", "dtype": "float32", "shape": [-1, 3]}), JSON, {}, 400,
     ["'x'", "shape"]),
    ("b64-huge-declared-shape", "multi", _inputs(x={"b64": "AAAA", "dtype": "float32", "shape": [10**9, 3]}), JSON,
     {}, 413, ["'x'", "elements"]),
    ("b64-empty-batch", "multi", _inputs(x={"b64": "", "dtype": "float32", "shape": [0, 3]}), JSON, {}, 400,
     ["'x'", "empty"]),
    ("b64-bool-not-0-or-1", "multi", _inputs(mask=_b64(np.array([[7, 0, 1]], np.uint8), dtype="bool")), JSON, {},
     400, ["'mask'", "0 or 1"]),
    ("binary-form-missing-field", "multi", _inputs(x={"b64": ""}), JSON, {}, 400, ["'x'", "dtype"]),
    ("npy-for-a-multi-input-model", "multi", _npy(np.zeros((1, 3), np.float32)), "application/x-npy", {}, 400,
     ["x-npz", "x, mask, ids"]),
    ("npz-with-a-pickled-object-array", "multi",
     _npz(x=np.array([[1, 2, 3]], dtype=object), mask=np.ones((1, 3), bool), ids=np.ones((1, 2), np.int64)),
     "application/x-npz", {}, 400, ["'x'", "object"]),
    ("npz-missing-an-array", "multi", _npz(x=np.zeros((1, 3), np.float32), mask=np.ones((1, 3), bool)),
     "application/x-npz", {}, 400, ["'ids'"]),
    ("npz-garbage", "multi", b"PK\x03\x04garbage", "application/x-npz", {}, 400, [".npz"]),
    ("npy-pickled-object", "sqrt", _npy(np.array([[1]], dtype=object), allow_pickle=True), "application/x-npy", {},
     400, ["'x'", "object"]),
    ("npy-declaring-a-billion-elements", "sqrt", _npy_header((10**9, 1)) + b"\0" * 16, "application/x-npy", {}, 413,
     ["'x'", "elements"]),
    ("npy-short-data", "sqrt", _npy_header((4, 1)) + b"\0" * 8, "application/x-npy", {}, 400, ["'x'", "bytes"]),
    ("npy-not-npy", "sqrt", b"not an array", "application/x-npy", {}, 400, ["'x'", ".npy"]),
    ("unsupported-content-type", "multi", b"1,2,3", "text/csv", {}, 415, ["text/csv"]),
    ("body-over-the-cap", "multi", _inputs(x=[[1, 2, 3]]) + b" " * 300_000, JSON,
     {"DATA_UPLOAD_MAX_MEMORY_SIZE": 256 * 1024}, 413, ["larger than the limit"]),
]


@pytest.fixture
def serve(registry: Any, multi_input_onnx: Any, tmp_path: Any) -> Any:
    """Register and promote one of the small models; returns a token for it."""

    def serve(name: str) -> str:
        path = multi_input_onnx if name == "multi" else sqrt_onnx(tmp_path / "sqrt.onnx", safe=True)
        registry.promote(registry.original(registry.register(path, name=name)))
        return registry.token(name)

    return serve


@pytest.fixture
def served(serve: Any) -> dict[str, str]:
    return {"token": serve("multi")}


@pytest.mark.parametrize(("model", "body", "content_type", "overrides", "status", "words"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_bad_input_is_a_4xx_json_answer_naming_the_problem(
        serve: Any, make_caller: Any, settings: Any, model: str, body: bytes, content_type: str,
        overrides: dict[str, Any], status: int, words: list[str]) -> None:
    """C1 (dtype, rank, shape, missing/extra names), C2 (batch and element caps before the run), C3 (body
    over the cap), C4 (NaN/Infinity literals, non-finite binary tensors), C5 (deep nesting, huge integers)."""
    token = serve(model)
    for name, value in overrides.items():
        setattr(settings, name, value)
    response = make_caller(token).post(model, raw=body, content_type=content_type)
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    for word in words:
        assert word.lower() in error.lower(), error


def test_the_good_input_of_those_cases_is_answered(served: dict[str, str], make_caller: Any) -> None:
    response = make_caller(served["token"]).post("multi", raw=_inputs(), content_type=JSON)
    assert response.status_code == 200, response.content


def test_a_body_just_under_the_cap_is_answered(served: dict[str, str], make_caller: Any, settings: Any) -> None:
    """C3: a body of exactly the cap is answered (one byte more is the 413 case above)."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024
    body = _inputs() + b" " * (256 * 1024 - len(_inputs()))
    assert len(body) == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = make_caller(served["token"]).post("multi", raw=body, content_type=JSON)
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(("query", "word"), [("?version=abc", "version"), ("?alias=a%20b", "alias"),
                                             ("?alias=staging&version=1", "either")])
def test_a_bad_selector_is_a_400(served: dict[str, str], make_caller: Any, query: str, word: str) -> None:
    response = make_caller(served["token"]).post("multi", raw=_inputs(), content_type=JSON, query=query)
    assert response.status_code == 400 and word in response.json()["error"]


def test_get_is_refused_with_405_json(served: dict[str, str], make_caller: Any) -> None:
    response = make_caller(served["token"]).client.get("/api/v1/models/multi/predict",
                                                       HTTP_AUTHORIZATION=f"Bearer {served['token']}")
    assert response.status_code == 405 and response.json() == {"error": "Use POST."}


def test_a_model_emitting_nan_gets_an_error_and_a_metric_never_a_nan_answer(
        registry: Any, make_caller: Any, tmp_path: Any) -> None:
    """C4: a non-finite output is a 422 error and a metric, never a NaN prediction."""
    registry.promote(registry.original(registry.register(sqrt_onnx(tmp_path / "nan.onnx", safe=False), name="root")))
    caller = make_caller(registry.token("root"))
    assert caller.post("root", {"inputs": {"x": [[4.0]]}}).json()["outputs"] == {"y": [[2.0]]}
    before = sample("modelhub_predict_non_finite_outputs_total", {"model": "root", "variant": "v1/original"})
    response = caller.post("root", {"inputs": {"x": [[-1.0]]}})
    assert response.status_code == 422
    assert "output 'y'" in response.json()["error"] and "NaN" in response.json()["error"]
    assert sample("modelhub_predict_non_finite_outputs_total",
                  {"model": "root", "variant": "v1/original"}) == before + 1
