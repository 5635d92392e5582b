"""Predict tokens are scoped to models and separate from management rights; callers are throttled."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from predictions import auth, services
from predictions.models import PredictToken
from tests.onnx_graphs import onnx_copy

pytestmark = pytest.mark.django_db


@pytest.fixture
def body(features: np.ndarray) -> dict[str, Any]:
    return {"inputs": {"features": features[:1]}}


@pytest.fixture
def other_model(registry: Any, mlp: Any, quality_mlp: Any) -> Any:
    version = registry.register(onnx_copy(quality_mlp.onnx, registry.tmp / "b.onnx", note="b"), name="other")
    registry.promote(registry.original(version))
    return version


def test_no_token_is_401_json(mlp: Any, make_caller: Any, body: dict[str, Any]) -> None:
    response = make_caller(None).post("mlp", body)
    assert response.status_code == 401
    assert "Bearer" in response.json()["error"] and response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer", "Bearer not-a-token", "Basic dXNlcjpwdw==", "Token nope"])
def test_a_bad_credential_is_401(mlp: Any, header: str, body: dict[str, Any], make_caller: Any) -> None:
    response = make_caller(None).post("mlp", body, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401 and "error" in response.json()


def test_a_token_for_one_model_cannot_call_another(registry: Any, other_model: Any, make_caller: Any,
                                                   body: dict[str, Any]) -> None:
    caller = make_caller(registry.token("mlp"))
    assert caller.post("mlp", body).status_code == 200
    response = caller.post("other", body)
    assert response.status_code == 404 and response.json() == {"error": "No model named 'other'."}
    assert caller.post("no-such-model", body).status_code == 404


def test_a_revoked_token_stops_working(registry: Any, mlp: Any, make_caller: Any, body: dict[str, Any]) -> None:
    raw = registry.token("mlp")
    caller = make_caller(raw)
    assert caller.post("mlp", body).status_code == 200
    services.token_revoke(token=PredictToken.objects.get(token_hash=auth.hash_token(raw)))
    assert caller.post("mlp", body).status_code == 401


def test_only_the_hash_of_a_token_is_stored(registry: Any, mlp: Any) -> None:
    raw = registry.token("mlp")
    row = PredictToken.objects.get()
    assert row.token_hash == auth.hash_token(raw) and raw not in (row.token_hash, row.prefix, row.name)


def test_a_predict_token_cannot_call_management_routes(registry: Any, mlp: Any, quality_mlp: Any) -> None:
    """B4: a predict token cannot list, upload, optimize, benchmark, promote, roll back, delete or use the
    admin; nothing changes."""
    from modelhub.models import Deployment, ModelVersion, OptimizationJob

    headers = {"HTTP_AUTHORIZATION": f"Bearer {registry.token('mlp')}"}
    client = Client()
    before = (list(Deployment.objects.values_list("variant_id", flat=True)), ModelVersion.objects.count())
    assert client.get("/api/v1/models", **headers).status_code in (401, 403)
    assert client.get("/api/v1/models/mlp", **headers).status_code in (401, 403)
    with quality_mlp.onnx.open("rb") as upload:
        assert client.post("/api/v1/models/mlp/versions", {"file": upload}, **headers).status_code in (401, 403)
    for path, body in [("rollback", {}), ("promote", {"version": 1, "variant": "original", "force": True,
                                                     "reason": "x"}),
                       ("versions/1/optimize", {"plan": []}), ("versions/1/variants/original/benchmark", {})]:
        response = client.post(f"/api/v1/models/mlp/{path}", body, content_type="application/json", **headers)
        assert response.status_code in (401, 403), (path, response.status_code)
    assert client.delete("/api/v1/models/mlp", **headers).status_code in (401, 403)
    assert client.get("/admin/modelhub/registeredmodel/", **headers).status_code == 302  # to the login page
    after = (list(Deployment.objects.values_list("variant_id", flat=True)), ModelVersion.objects.count())
    assert after == before and OptimizationJob.objects.count() == 0


def test_a_viewer_may_predict_with_their_api_token_on_a_visible_model(
        registry: Any, mlp: Any, make_user: Any, body: dict[str, Any], make_caller: Any) -> None:
    from django.contrib.auth.models import Group

    team = Group.objects.create(name="quality-team")
    mlp.model.team = team
    mlp.model.save()
    viewer = make_user("vera", "viewer")
    viewer.groups.add(team)
    caller = make_caller(None)
    key = Token.objects.create(user=viewer).key
    assert caller.post("mlp", body, HTTP_AUTHORIZATION=f"Token {key}").status_code == 200

    outsider = make_user("otto", "viewer")
    outsider_key = Token.objects.create(user=outsider).key
    assert caller.post("mlp", body, HTTP_AUTHORIZATION=f"Token {outsider_key}").status_code == 404

    nobody = make_user("nora")  # no role at all
    nobody_key = Token.objects.create(user=nobody).key
    assert caller.post("mlp", body, HTTP_AUTHORIZATION=f"Token {nobody_key}").status_code == 403


def test_a_session_post_needs_the_csrf_token(mlp: Any, maintainer: Any, body: dict[str, Any]) -> None:
    import orjson

    client = Client(enforce_csrf_checks=True)
    client.force_login(maintainer)
    response = client.post("/api/v1/models/mlp/predict", orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                           content_type="application/json")
    assert response.status_code == 403 and "CSRF" in response.json()["error"]
    relaxed = Client()
    relaxed.force_login(maintainer)
    response = relaxed.post("/api/v1/models/mlp/predict", orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                            content_type="application/json")
    assert response.status_code == 200


def test_a_token_over_its_rate_gets_429_with_retry_after(registry: Any, mlp: Any, make_caller: Any,
                                                         body: dict[str, Any]) -> None:
    caller = make_caller(registry.token("mlp", rate=3))
    statuses = []
    for _ in range(10):  # a minute boundary may reset the window once; 10 requests still overflow it
        response = caller.post("mlp", body)
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[-1] == 429, statuses
    assert 1 <= int(response["Retry-After"]) <= 61
    assert "3 predictions per minute" in response.json()["error"]


def test_tokens_are_made_only_for_models_the_maker_can_see(registry: Any, other_model: Any, make_user: Any) -> None:
    from modelhub.errors import Forbidden, Invalid

    stranger = make_user("sam", "maintainer")
    with pytest.raises(Invalid, match="other"):
        services.token_create(name="x", models=[other_model.model], by=stranger)
    with pytest.raises(Forbidden):
        services.token_create(name="x", models=[other_model.model], by=make_user("val", "viewer"))


def test_the_throttle_window_is_shared_between_processes_through_the_cache() -> None:
    caller = auth.Caller(ident="token:shared", model_names=frozenset({"mlp"}), rate_per_minute=100)
    if time.time() % 60 > 55:  # keep the test inside one minute window
        time.sleep(60 - time.time() % 60 + 0.1)
    for _ in range(60):
        auth.throttle(caller)
    auth.forget()  # another process: nothing counted locally, only the shared counter
    admitted = 0
    with pytest.raises(auth.Throttled):
        for _ in range(100):
            auth.throttle(caller)
            admitted += 1
    assert 35 <= admitted <= 45  # counts are synced in batches of at most 5 % of the limit per process


def test_a_superuser_predicts_on_a_model_registered_after_their_first_request(
        registry: Any, mlp: Any, quality_mlp: Any, make_user: Any, body: dict[str, Any], make_caller: Any) -> None:
    admin = make_user("ada", superuser=True)
    key = Token.objects.create(user=admin).key
    caller = make_caller(None)
    assert caller.post("mlp", body, HTTP_AUTHORIZATION=f"Token {key}").status_code == 200
    version = registry.register(onnx_copy(quality_mlp.onnx, registry.tmp / "late.onnx", note="late"), name="late")
    registry.promote(registry.original(version))
    # The caller is remembered for a few seconds; a superuser's reach must not be a stale list.
    assert caller.post("late", body, HTTP_AUTHORIZATION=f"Token {key}").status_code == 200
