"""The Open Inference Protocol (KServe V2) REST API: an unmodified tritonclient, plain HTTP, bad tensors.

The live tests run one serving plane (gunicorn, DEBUG=0, Redis, its own SQLite) prepared by the
bench scripts' stack (``bench/_server.py``: quality_mlp as "mlp", its INT8 variant promoted to
production, a predict token); the original is put under the "staging" alias here. A management
plane and a serving plane that requires https run beside it.
"""

from __future__ import annotations

import gzip
import http.client
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tests.real_services import bench_module

tritonclient_http = pytest.importorskip("tritonclient.http")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException

_SETUP = ("import json\n"
          "from django.contrib.auth.models import User\n"
          "from rest_framework.authtoken.models import Token\n"
          "from modelhub import services\n"
          "from modelhub.models import RegisteredModel\n"
          "admin = User.objects.get(username='bench')\n"
          "model = RegisteredModel.objects.get(name='mlp')\n"
          "original = model.versions.get(number=1).variants.get(name='original')\n"
          "services.deployment_promote(model=model, variant=original, by=admin, alias='staging', force=True,\n"
          "                            reason='test: an alias reached through /versions/<alias>')\n"
          "print(json.dumps({'drf': Token.objects.create(user=admin).key}))\n")


class Live:
    """The running planes, the predict token, rows of the validation set and reference outputs."""

    def __init__(self, stack: Any, info: dict[str, Any], drf: str, original: Path) -> None:
        self.stack, self.info, self.drf = stack, info, drf
        self.serving = stack.start_gunicorn(workers=1, threads=4, plane="serving")
        self.loaded_at_start = self.get(self.serving, "/metrics", {"Authorization": f"Bearer {_METRICS}"})[2]
        self.management = stack.start_gunicorn(workers=1, threads=2, plane="all")
        stack.env["SECURE_SSL_REDIRECT"] = "1"
        self.https_only = stack.start_gunicorn(workers=1, threads=2, plane="serving")
        stack.env["SECURE_SSL_REDIRECT"] = "0"
        with np.load(info["validation"]) as data:
            self.rows = data["features"][:3].astype(np.float32)
        self.by_variant = {info["variant"]: _run(Path(info["artifact"]), self.rows), "original": _run(original, self.rows)}
        self.expected = self.by_variant[info["variant"]]

    @property
    def auth(self) -> dict[str, str]:
        """The predict token's header, a new dict each time (tritonclient adds its own headers to the one given)."""
        return {"Authorization": f"Bearer {self.info['token']}"}

    def client(self, port: int | None = None) -> Any:
        return tritonclient_http.InferenceServerClient(f"127.0.0.1:{port or self.serving}", network_timeout=30)

    def call(self, port: int, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One plain HTTP request (http.client stands in for curl)."""
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def declared_only(self, length: int) -> int:
        """The status of an infer whose headers declare ``length`` body bytes, none of them sent."""
        connection = http.client.HTTPConnection("127.0.0.1", self.serving, timeout=30)
        try:
            connection.putrequest("POST", "/v2/models/mlp/infer")
            for name, value in {**self.auth, "Content-Length": str(length)}.items():
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def get(self, port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        return self.call(port, "GET", path, headers=headers)

    def infer(self, doc: dict[str, Any] | bytes, path: str = "/v2/models/mlp/infer",
              **headers: str) -> tuple[int, Any, Any]:
        """POST an infer body (a dict is sent as JSON); (status, headers, decoded JSON or raw bytes)."""
        body = doc if isinstance(doc, bytes) else orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        status, answer_headers, data = self.call(self.serving, "POST", path, body,
                                                 {**self.auth, **{k.replace("_", "-"): v for k, v in headers.items()}})
        try:
            return status, answer_headers, json.loads(data)
        except ValueError:
            return status, answer_headers, data


_METRICS = "oip-test-metrics-token"


def _run(path: Path, rows: np.ndarray) -> np.ndarray:
    """What ONNX Runtime computes for ``rows`` with the file at ``path``, made as serving makes it."""
    from workers import ort

    session = ort.session(path, threads=1, inter_threads=1)
    return session.run(None, {session.get_inputs()[0].name: rows})[0]


@pytest.fixture(scope="module")
def live(quality_mlp: Any) -> Iterator[Live]:
    stack_module = bench_module("_server")
    with stack_module.Stack(prefix="modelhub-oip-") as stack:
        stack.start_redis(reuse_env=False)
        stack.env["MODELHUB_METRICS_TOKEN"] = _METRICS
        info = stack.prepare(quality_mlp.directory.parent, timeout=300)
        done = stack.manage_shell(_SETUP)
        assert done.returncode == 0, done.stderr[-3000:]
        yield Live(stack, info, json.loads(done.stdout.strip().splitlines()[-1])["drf"], quality_mlp.onnx)


def _inputs(rows: np.ndarray, binary: bool) -> list[Any]:
    tensor = tritonclient_http.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return [tensor]


# --- tritonclient, unmodified ------------------------------------------------------------------


@pytest.mark.slow
def test_tritonclient_sees_a_live_ready_server_and_its_metadata(live: Live) -> None:
    """tritonclient's health and server metadata calls succeed against the serving plane."""
    client = live.client()
    assert client.is_server_live() and client.is_server_ready()
    server = client.get_server_metadata()
    assert server["name"] == "modelhub" and "binary_tensor_data" in server["extensions"]


@pytest.mark.slow
def test_tritonclient_reads_model_metadata_and_readiness_with_and_without_a_version(live: Live) -> None:
    """B1: model metadata and readiness need the predict token; with it, every version form answers."""
    client = live.client()
    for version in ("", "1", "staging"):
        meta = client.get_model_metadata("mlp", version, headers=live.auth)
        assert meta["name"] == "mlp" and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, live.rows.shape[1]]}]
        assert [o["datatype"] for o in meta["outputs"]] == ["FP32"] and meta["outputs"][0]["shape"][0] == -1
        assert client.is_model_ready("mlp", version, headers=live.auth)
    assert client.get_model_metadata("mlp", headers=live.auth)["parameters"]["variant"] == live.info["variant"]
    assert client.get_model_metadata("mlp", "staging", headers=live.auth)["parameters"]["variant"] == "original"
    assert not client.is_model_ready("mlp", "7", headers=live.auth)
    assert not client.is_model_ready("mlp")  # no token
    with pytest.raises(InferenceServerException) as refused:
        client.get_model_metadata("mlp")
    assert refused.value.status() == "401"
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("no-such-model", headers=live.auth)
    assert unknown.value.status() == "404"


@pytest.mark.slow
@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
@pytest.mark.parametrize("version", ["", "1"], ids=["no-version", "version-1"])
def test_tritonclient_infers_with_binary_and_json_tensors(live: Live, binary_in: bool, binary_out: bool,
                                                          version: str) -> None:
    """tritonclient's infer, in every tensor form, answers what ONNX Runtime computes, and names what served.

    Version 1 serves the variant last promoted from it (the original, under staging); no version
    serves production (the INT8 variant)."""
    outputs = [tritonclient_http.InferRequestedOutput("quality", binary_data=binary_out)]
    result = live.client().infer("mlp", _inputs(live.rows, binary_in), model_version=version, outputs=outputs,
                                 headers=live.auth, request_id="r-1")
    response = result.get_response()
    served = response["parameters"]["variant"]
    assert served == ("original" if version else live.info["variant"]) and response["parameters"]["fallback"] is False
    np.testing.assert_allclose(result.as_numpy("quality"), live.by_variant[served], rtol=1e-5, atol=1e-6)
    assert response["id"] == "r-1" and response["model_name"] == "mlp" and response["model_version"] == "1"
    assert ("binary_data_size" in response["outputs"][0].get("parameters", {})) is binary_out


@pytest.mark.slow
def test_tritonclient_defaults_and_an_alias_as_the_version(live: Live) -> None:
    """No outputs named: all come back in binary (tritonclient's default); /versions/staging serves the alias."""
    client = live.client()
    result = client.infer("mlp", _inputs(live.rows, True), headers=live.auth)
    np.testing.assert_allclose(result.as_numpy("quality"), live.expected, rtol=1e-5, atol=1e-6)
    staging = client.infer("mlp", _inputs(live.rows, True), model_version="staging", headers=live.auth)
    assert staging.get_response()["parameters"]["variant"] == "original"
    assert staging.get_response()["parameters"]["selector"] == "alias:staging"


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_and_answers_round_trip(live: Live, algorithm: str) -> None:
    """A gzip / deflate request is inflated, and the answer compressed when the client accepts it."""
    result = live.client().infer("mlp", _inputs(live.rows, True), headers=live.auth,
                                 request_compression_algorithm=algorithm, response_compression_algorithm=algorithm)
    np.testing.assert_allclose(result.as_numpy("quality"), live.expected, rtol=1e-5, atol=1e-6)
    doc = {"inputs": [{"name": "features", "shape": list(live.rows.shape), "datatype": "FP32",
                       "data": live.rows.reshape(-1).tolist()}]}
    body = gzip.compress(orjson.dumps(doc))
    status, headers, data = live.infer(body, Content_Encoding="gzip", Accept_Encoding="gzip")
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    answer = json.loads(gzip.decompress(data))
    np.testing.assert_allclose(np.reshape(answer["outputs"][0]["data"], live.expected.shape), live.expected, rtol=1e-5)


@pytest.mark.slow
def test_the_management_plane_answers_the_protocol_for_staff(live: Live) -> None:
    """B4: on the management plane a staff member's API token reaches infer; without credentials it is refused."""
    client = live.client(live.management)
    staff = {"Authorization": f"Token {live.drf}"}
    assert client.is_server_live() and client.get_model_metadata("mlp", headers=staff)["name"] == "mlp"
    result = client.infer("mlp", _inputs(live.rows, True), headers=staff)
    np.testing.assert_allclose(result.as_numpy("quality"), live.expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(InferenceServerException) as refused:
        client.infer("mlp", _inputs(live.rows, True))
    assert refused.value.status() == "401"


# --- plain HTTP: the protocol's JSON examples, health, https ---------------------------------------


@pytest.mark.slow
def test_plain_http_speaks_the_protocols_json(live: Live) -> None:
    """The specification's JSON example shapes, by plain HTTP: nested data, an id, an output by name."""
    status, _, body = live.get(live.serving, "/v2/health/live")
    assert status == 200 and json.loads(body) == {"live": True}
    status, _, body = live.get(live.serving, "/v2/health/ready")
    assert status == 200 and json.loads(body)["ready"] is True
    status, _, body = live.get(live.serving, "/v2/models/mlp", live.auth)
    assert status == 200 and json.loads(body)["inputs"][0]["datatype"] == "FP32"
    doc = {"id": "42", "inputs": [{"name": "features", "shape": [1, live.rows.shape[1]], "datatype": "FP32",
                                   "data": [live.rows[0].tolist()]}], "outputs": [{"name": "quality"}]}
    status, headers, answer = live.infer(doc, path="/v2/models/mlp/versions/1/infer")
    assert status == 200 and headers["Content-Type"] == "application/json", answer
    assert answer["id"] == "42" and answer["model_version"] == "1"
    out, expected = answer["outputs"][0], live.by_variant[answer["parameters"]["variant"]]
    assert (out["name"], out["datatype"], out["shape"]) == ("quality", "FP32", list(expected[:1].shape))
    np.testing.assert_allclose(out["data"], expected[0].reshape(-1), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_health_checks_answer_plain_http_where_https_is_required(live: Live) -> None:
    """With DEBUG=0 and SECURE_SSL_REDIRECT on, probes get their answer over plain HTTP; predictions are redirected."""
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
        assert live.get(live.https_only, path)[0] == 200, path
    status, headers, _ = live.call(live.https_only, "POST", "/v2/models/mlp/infer", b"{}", live.auth)
    assert status == 301 and headers["Location"].startswith("https://")


@pytest.mark.slow
def test_the_promoted_variant_is_loaded_before_the_first_request(live: Live) -> None:
    """The serving worker warmed its production chain when it started: a runtime was loaded before any predict."""
    assert b"modelhub_runtimes_loaded 1.0" in live.loaded_at_start


# --- bad tensors -----------------------------------------------------------------------------------

_N = 2056  # the quality MLP's features


def _tensor(**changes: Any) -> dict[str, Any]:
    return {"name": "features", "shape": [1, _N], "datatype": "FP32", "data": [0.5] * _N, **changes}


BAD_JSON = {
    "unknown datatype": ({"inputs": [_tensor(datatype="FP99")]}, "FP99"),
    "wrong datatype": ({"inputs": [_tensor(datatype="INT64", data=[1] * _N)]}, "takes FP32"),
    "shape and data disagree": ({"inputs": [_tensor(data=[0.5] * (_N - 1))]}, "needs 2056 values"),
    "wrong fixed dimension": ({"inputs": [_tensor(shape=[2, _N // 2], data=[0.5] * _N)]}, "axis 1"),
    "strings in a float tensor": ({"inputs": [_tensor(data=["a"] * _N)]}, "not FP32"),
    "unknown input": ({"inputs": [_tensor(), _tensor(name="extra")]}, "nknown input"),
    "missing input": ({"inputs": [_tensor(name="other")]}, "issing input"),
    "unknown output": ({"inputs": [_tensor()], "outputs": [{"name": "nope"}]}, "Unknown output 'nope'"),
    "no inputs": ({"inputs": []}, '{"inputs"'),
    "unknown field": ({"inputs": [_tensor()], "extra": 1}, "Unknown field"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_a_bad_json_tensor_is_a_400_with_its_reason(live: Live, case: str) -> None:
    """C1: wrong datatype, shape, names, outputs → 400 with a JSON reason naming the problem."""
    doc, reason = BAD_JSON[case]
    status, _, answer = live.infer(doc)
    assert status == 400 and reason in answer["error"], (status, answer)


def _binary(data: bytes, size: int, **tensor: Any) -> tuple[bytes, str]:
    header = orjson.dumps({"inputs": [{"name": "features", "shape": [1, _N], "datatype": "FP32",
                                       "parameters": {"binary_data_size": size}, **tensor}]})
    return header + data, str(len(header))


BAD_BINARY = {
    "binary size shorter than the shape": (_binary(b"\0" * 4 * (_N - 1), 4 * (_N - 1)), "needs 8224"),
    "binary size beyond the body": (_binary(b"\0" * 4 * _N, 4 * _N + 4), "runs past"),
    "bytes claimed by no input": (_binary(b"\0" * (4 * _N + 8), 4 * _N), "belong to no input"),
    "NaN in binary floats": (_binary(np.full(_N, np.nan, np.float32).tobytes(), 4 * _N), "NaN"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_BINARY))
def test_a_bad_binary_tensor_is_a_400_with_its_reason(live: Live, case: str) -> None:
    """C1 (binary size mismatch), C4 (NaN inside binary tensors): 400 with a JSON reason."""
    (body, length), reason = BAD_BINARY[case]
    status, _, answer = live.infer(body, Inference_Header_Content_Length=length)
    assert status == 400 and reason in answer["error"], (status, answer)


@pytest.mark.slow
def test_hostile_json_is_refused_fast(live: Live) -> None:
    """C4 (NaN literal), C5 (deep nesting, a huge integer): 400, and the process answers the next request."""
    nan = orjson.dumps({"inputs": [_tensor()]}).replace(b"0.5", b"NaN", 1)
    assert live.infer(nan)[0] == 400
    deep = b'{"inputs": [{"name": "features", "shape": [1], "datatype": "FP32", "data": ' + b"[" * 150_000
    assert live.infer(deep)[0] == 400
    huge = orjson.dumps({"inputs": [_tensor()]}).replace(b"0.5", b"9" * 100_000, 1)
    assert live.infer(huge)[0] == 400
    assert live.client().infer("mlp", _inputs(live.rows, True), headers=live.auth).as_numpy("quality") is not None


@pytest.mark.slow
def test_caps_hold_before_decoding(live: Live) -> None:
    """C2 (a declared 10⁹-element tensor), C3 (a body over the cap, a gzip bomb): 413 before anything is built."""
    status, _, answer = live.infer({"inputs": [_tensor(shape=[1_000_000, 1000], data=[])]})
    assert status == 413 and "elements" in answer["error"]
    assert live.declared_only(11 * 1024 * 1024) == 413
    bomb = gzip.compress(b" " * (200 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 1024 * 1024
    status, _, answer = live.infer(bomb, Content_Encoding="gzip")
    assert status == 413 and "decompresses" in answer["error"]
    assert live.infer(zlib.compress(b"{}")[:-4], Content_Encoding="deflate")[0] == 400
    assert live.infer(b"{}", Content_Encoding="br")[0] == 415


@pytest.mark.slow
def test_an_infer_without_credentials_is_refused(live: Live) -> None:
    """B1: no token → 401 JSON; a model the token does not cover → 404, as if it did not exist."""
    status, _, body = live.call(live.serving, "POST", "/v2/models/mlp/infer", orjson.dumps({"inputs": [_tensor()]}))
    assert status == 401 and "Bearer" in json.loads(body)["error"]
    assert live.infer({"inputs": [_tensor()]}, path="/v2/models/mlp-other/infer")[0] == 404
    assert live.infer({"inputs": [_tensor()]}, path="/v2/models/mlp/versions/9/infer")[0] == 404
    assert live.infer({"inputs": [_tensor()]}, path="/v2/models/mlp/versions/a.b/infer")[0] == 400


# --- in this process: fallback, response cache, the pieces ------------------------------------------


def _django_infer(client: Any, token: str, rows: np.ndarray, binary: bool = False) -> Any:
    doc = {"inputs": [{"name": "features", "shape": list(rows.shape), "datatype": "FP32",
                       "data": rows.reshape(-1).tolist()}], "parameters": {"binary_data_output": binary}}
    return client.post("/v2/models/mlp/infer", data=orjson.dumps(doc), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.mark.django_db
def test_a_fallback_answer_names_the_variant_that_served_and_why(registry: Any, mlp: Any, caller: Any,
                                                                  features: np.ndarray) -> None:
    """E1: the promoted file fails its check; the parent answers, and the answer's parameters say so."""
    from django.test import Client

    from modelhub import artifacts
    from predictions import runtime

    child = registry.copy_variant(mlp, name="graph")
    registry.promote(child)
    path = artifacts.local_path(child.storage_key)
    path.write_bytes(path.read_bytes()[:-16] + b"\0" * 16)
    runtime.RUNTIMES.clear()
    response = _django_infer(Client(), caller.token, features[:2].astype(np.float32))
    assert response.status_code == 200 and response["X-Modelhub-Fallback"] == "load_error"
    parameters = response.json()["parameters"]
    assert (parameters["variant"], parameters["fallback"], parameters["fallback_reason"]) == ("original", True,
                                                                                              "load_error")
    assert parameters["fallback_from"] == "v1/graph: load_error"


@pytest.mark.django_db
def test_the_response_cache_answers_a_repeated_infer(registry: Any, mlp: Any, caller: Any,
                                                     features: np.ndarray) -> None:
    """A model with the response cache on answers the same tensors from it, in JSON and in binary alike."""
    from django.test import Client

    from predictions import services

    services.config_set(model=mlp.model, cache_responses=True, cache_ttl_s=60)
    rows = features[:2].astype(np.float32)
    first = _django_infer(Client(), caller.token, rows).json()
    again = _django_infer(Client(), caller.token, rows, binary=True)
    assert first["parameters"]["cached"] is False
    header = orjson.loads(again.content[: int(again["Inference-Header-Content-Length"])])
    assert header["parameters"]["cached"] is True
    data = np.frombuffer(again.content[int(again["Inference-Header-Content-Length"]):], np.float32)
    np.testing.assert_allclose(data, first["outputs"][0]["data"], rtol=1e-6)


def test_a_gzip_bomb_stops_at_the_body_cap(settings: Any) -> None:
    """C3: a body that inflates beyond the cap is a 413 after at most cap + 1 bytes came out."""
    from modelhub.errors import TooLarge
    from predictions.oip import compression

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
    with pytest.raises(TooLarge):
        compression.inflate(gzip.compress(b"\0" * (50 * 1024 * 1024)), "gzip")
    assert compression.inflate(zlib.compress(b"{}"), "deflate") == b"{}"
    assert compression.chosen("br, deflate;q=0, gzip") == "gzip" and compression.chosen("identity") == ""


def test_versions_map_onto_the_registry() -> None:
    """Digits are a version number, another slug an alias, none the production alias; anything else a 400."""
    from modelhub.errors import Invalid
    from predictions.oip.mapping import selector_of

    assert [selector_of(v) for v in (None, "", "3", "staging")] == ["alias:production", "alias:production",
                                                                    "version:3", "alias:staging"]
    with pytest.raises(Invalid):
        selector_of("a.b")


def test_bytes_elements_round_trip() -> None:
    """BYTES tensors travel as length-prefixed elements; a length that runs past the data is a 400."""
    from modelhub.errors import Invalid
    from predictions.oip import datatypes

    raw = datatypes.serialize_bytes(np.array(["ab", "", "ü"], dtype=object))
    assert list(datatypes.bytes_elements(memoryview(raw), 3, "x")) == [b"ab", b"", "ü".encode()]
    with pytest.raises(Invalid):
        datatypes.bytes_elements(memoryview(raw[:-1]), 3, "x")
    assert datatypes.of_numpy("float16") == "FP16" and datatypes.metadata_shape(["batch", 3, None]) == [-1, 3, -1]
