"""Health, hosts, profiles, tokens, admin login and error pages under attack (RELIABILITY.md G11, G12,
G15, G16): readiness with Redis down and what the public body says, ALLOWED_HOSTS on every path of
both planes, profile limits, JSON 404/405, expiring predict tokens, the admin login lockout and the
browsable API with DEBUG=0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from io import BytesIO
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import numpy as np
import orjson
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from modelhub import services as registry_services
from modelhub.errors import Invalid
from predictions import services as serving_services
from predictions.models import PredictToken
from predictions.wsgi import ServingApplication
from tests import factories
from tests.real_services import RedisServer
from tests.serving_state import fresh_serving_state

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
SAMPLE_KWARGS = {"name": "m", "number": 1, "variant": "original", "job_id": 1, "version": 1}
EVIL = "evil.example"


@pytest.fixture(autouse=True)
def serving_state(settings: Any) -> Iterator[None]:
    """Fresh serving-process state (routes, breaker, runtimes, Redis back-off, callers) around each test."""
    yield from fresh_serving_state(settings, clear_default_cache=True)


@pytest.fixture
def served(maintainer: Any, approver: Any, media_root: Path, quality_mlp: Any) -> dict[str, Any]:
    """quality_mlp as model "mlp", its original in production, a predict token and a body to send."""
    version = factories.upload(maintainer, quality_mlp.onnx, name="mlp")
    assert version.status == "READY", version.status_reason
    factories.promote(version.variants.get(name="original"), approver, force=True, reason="test setup")
    with np.load(quality_mlp.validation) as data:
        body = orjson.dumps({"inputs": {"features": data["features"][:2]}}, option=orjson.OPT_SERIALIZE_NUMPY)
    _, token = serving_services.token_create(name="t", models=[version.model], by=maintainer)
    return {"version": version, "token": token, "body": body, "maintainer": maintainer}


def _predict(client: Client, served: dict[str, Any], token: str | None = None) -> Any:
    return client.post("/api/v1/models/mlp/predict", data=served["body"], content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {token or served['token']}")


# --- G11: readiness ------------------------------------------------------------------------------


def test_redis_down_leaves_the_serving_plane_ready_and_degraded(
        served: dict[str, Any], private_redis: RedisServer, settings: Any, make_user: Any) -> None:
    """G11: with its Redis stopped, /readyz and /v2/health/ready stay 200, say "degraded" and name the
    cache, while a prediction answers 200; the public body names no model, staff and the metrics token see them."""
    settings.CACHES = {**settings.CACHES, "serving": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": private_redis.url,
        "OPTIONS": {"socket_connect_timeout": 0.1, "socket_timeout": 0.1}}}
    settings.MODELHUB_SERVING_CACHE = "serving"
    settings.MODELHUB_METRICS_TOKEN = "metrics-secret"
    public = Client()
    up = public.get("/readyz")
    assert (up.status_code, up.json()["status"]) == (200, "ready"), up.json()

    private_redis.stop()
    down = public.get("/readyz")
    assert down.status_code == 200, down.json()
    assert down.json()["status"] == "degraded" and down.json()["checks"]["cache"].startswith("degraded: Redis")
    assert "mlp" not in down.content.decode() and "models" not in down.json()
    v2 = public.get("/v2/health/ready")
    assert v2.status_code == 200 and v2.json()["ready"] is True and "mlp" not in v2.content.decode()
    assert _predict(public, served).status_code == 200

    staff = Client()
    staff.force_login(make_user("sam", staff=True))
    assert staff.get("/readyz").json()["models"] == {"mlp": "ok"}
    by_token = public.get("/readyz", HTTP_AUTHORIZATION="Bearer metrics-secret").json()
    assert by_token["models"] == {"mlp": "ok"}
    assert "models" not in public.get("/readyz", HTTP_AUTHORIZATION="Bearer wrong").json()


def test_a_production_model_that_cannot_load_is_counted_not_named(
        served: dict[str, Any], settings: Any) -> None:
    """G11: a failing production runtime makes /readyz 503; the public reason counts models, names none."""
    from modelhub import artifacts

    variant = served["version"].variants.get(name="original")
    Path(artifacts.local_path(variant.storage_key)).write_bytes(b"not a model any more")
    from predictions import runtime

    runtime.RUNTIMES.clear()
    body = Client().get("/readyz")
    assert body.status_code == 503 and "mlp" not in body.content.decode(), body.json()
    assert body.json()["checks"]["runtimes"].startswith("error: 1 of 1")


# --- G12: ALLOWED_HOSTS --------------------------------------------------------------------------


def _routes(resolver: URLResolver, prefix: str = "") -> list[str]:
    found = []
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            found += _routes(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            found.append(prefix + str(entry.pattern))
    return sorted(set(found))


def _concrete(route: str) -> str:
    for key, value in SAMPLE_KWARGS.items():
        for converter in ("slug", "int", "str", "path", "name"):
            route = route.replace(f"<{converter}:{key}>", str(value))
    return "/" + route.replace("^", "").replace("$", "")


def test_a_foreign_host_is_refused_on_every_route_of_the_management_plane() -> None:
    """G12: every route of the management plane (enumerated) answers Host: evil.example with 400."""
    routes = _routes(get_resolver())
    assert len(routes) > 30
    client = Client()
    for route in routes:
        url = _concrete(route)
        for method in ("get", "post"):
            status = getattr(client, method)(url, HTTP_HOST=EVIL).status_code
            assert status == 400, f"{method.upper()} {url} -> {status}"


def _wsgi(app: ServingApplication, method: str, path: str, host: str, body: bytes = b"{}") -> int:
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "HTTP_HOST": host,
                               "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
                               "wsgi.input": BytesIO(body)}
    setup_testing_defaults(environ)
    statuses: list[str] = []
    b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    return int(statuses[0].split()[0])


def test_a_foreign_host_is_refused_on_every_route_of_the_serving_plane(served: dict[str, Any], settings: Any) -> None:
    """G12: the serving plane's WSGI application (fast path for predict and infer included) answers
    Host: evil.example with 400 on every route of predictions.urls; an allowed host is served."""
    settings.ROOT_URLCONF = "predictions.urls"
    settings.MIDDLEWARE = ["django.middleware.security.SecurityMiddleware"]
    app = ServingApplication(WSGIHandler(), warm=False)
    routes = _routes(get_resolver("predictions.urls"))
    assert "api/v1/models/<slug:name>/predict" in routes and len(routes) >= 12
    for route in routes:
        url = _concrete(route).replace("/m/", "/mlp/").replace("/m", "/mlp") if "<" in route else _concrete(route)
        for method in ("GET", "POST"):
            status = _wsgi(app, method, url, EVIL)
            assert status == 400, f"{method} {url} -> {status}"
    assert _wsgi(app, "GET", "/healthz", "localhost") == 200
    assert _wsgi(app, "POST", "/api/v1/models/mlp/predict", "localhost") == 401  # reached the view


# --- G15: profiles -------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("max_p95_ms", -1), ("max_size_mb", 0), ("max_p99_ms", -0.5), ("max_peak_memory_mb", -10),
    ("min_speedup", -2), ("max_accuracy_drop", -0.1), ("accuracy_metric", "vibes")])
def test_a_profile_with_a_bad_limit_or_metric_is_refused_naming_the_field(
        api: APIClient, maintainer: Any, field: str, value: Any) -> None:
    """G15: negative (or zero) limits and unknown accuracy metrics: 400 naming the field, nothing stored,
    through the API and through the service alike."""
    response = api.post("/api/v1/profiles", {"name": "p", field: value}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"].startswith(f"{field}:") and field in response.json()["fields"]
    with pytest.raises(Invalid) as refused:
        registry_services.profile_create(user=maintainer, name="p", **{field: value})
    assert refused.value.details["field"] == field
    assert api.get("/api/v1/profiles").json() == []


def test_a_profile_with_sound_limits_is_made(api: APIClient) -> None:
    """G15: positive limits, a known metric and a zero drop are accepted."""
    response = api.post("/api/v1/profiles", {"name": "p", "max_p95_ms": 5, "accuracy_metric": "agreement",
                                             "max_accuracy_drop": 0}, format="json")
    assert response.status_code == 201, response.content


# --- G16: JSON errors, the browsable API, tokens, the admin login --------------------------------


@pytest.mark.parametrize("path", ["/api/v1/nothing-here", "/api/v1/models/m/versions/not-a-number",
                                  "/api/v1/models/m/versions/1/variants/x/nothing", "/api/"])
def test_unrouted_api_paths_answer_json_404(api: APIClient, settings: Any, path: str) -> None:
    """G16: with DEBUG=0, a path under /api/ that no route matches answers a JSON 404, logged in or not."""
    settings.DEBUG = False
    for client in (api, APIClient()):
        response = client.get(path)
        assert response.status_code == 404 and response["Content-Type"] == "application/json", response.content
        assert "No route" in response.json()["error"]


def test_wrong_methods_under_api_answer_json_405(api: APIClient, settings: Any) -> None:
    """G16: a method a route does not take answers a JSON 405 (management and predict routes)."""
    settings.DEBUG = False
    for method, path in (("delete", "/api/v1/profiles"), ("put", "/api/v1/models"),
                         ("get", "/api/v1/models/m/predict")):
        response = getattr(api, method)(path)
        assert response.status_code == 405 and response["Content-Type"].startswith("application/json"), path
        assert response.json()["error"]


def test_the_browsable_api_is_off_with_debug_0() -> None:
    """G16: with DEBUG=0 the API renders JSON only (no browsable HTML API)."""
    env = {**os.environ, "DEBUG": "0", "SECRET_KEY": "k" * 60, "ALLOWED_HOSTS": "api.example",
           "DJANGO_SETTINGS_MODULE": "modelhub.settings"}
    code = ("import django; django.setup(); from rest_framework.settings import api_settings; "
            "print([c.__name__ for c in api_settings.DEFAULT_RENDERER_CLASSES])")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "['JSONRenderer']"


def test_predict_tokens_expire_and_an_expired_one_gets_401_json(served: dict[str, Any], settings: Any) -> None:
    """G16: a new token expires after MODELHUB_TOKEN_TTL_DAYS unless never_expires is asked for; past its
    expiry it gets 401 JSON, also when this process still remembers the caller."""
    token = PredictToken.objects.get(name="t")
    expected = timezone.now() + timedelta(days=settings.MODELHUB_TOKEN_TTL_DAYS)
    assert abs((token.expires_at - expected).total_seconds()) < 60
    model, maintainer = served["version"].model, served["maintainer"]
    forever, _ = serving_services.token_create(name="f", models=[model], by=maintainer, never_expires=True)
    assert forever.expires_at is None
    with pytest.raises(Invalid):
        serving_services.token_create(name="p", models=[model], by=maintainer,
                                      expires_at=timezone.now() - timedelta(seconds=1))

    PredictToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = _predict(Client(), served)
    assert response.status_code == 401 and response["Content-Type"] == "application/json"
    assert "expired" in response.json()["error"] and response["WWW-Authenticate"].startswith("Bearer")

    settings.MODELHUB_SERVING_AUTH_CACHE_S = 60  # remembered: the expiry still holds, to the second
    _, soon = serving_services.token_create(name="s", models=[model], by=maintainer,
                                            expires_at=timezone.now() + timedelta(seconds=1.5))
    assert _predict(Client(), served, soon).status_code == 200
    time.sleep(1.6)
    late = _predict(Client(), served, soon)
    assert late.status_code == 401 and "expired" in late.json()["error"]


def _login(client: Client, username: str, password: str) -> Any:
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password})


def test_thirty_wrong_admin_passwords_lock_the_account_for_the_window(make_user: Any, settings: Any) -> None:
    """G16: after MODELHUB_LOGIN_MAX_FAILURES wrong passwords every attempt, the right one included, is
    refused with a message saying why, until MODELHUB_LOGIN_LOCKOUT_S has passed."""
    settings.MODELHUB_LOGIN_MAX_FAILURES, settings.MODELHUB_LOGIN_LOCKOUT_S = 5, 2
    make_user("ada", staff=True)
    client = Client()
    answers = [_login(client, "ada", f"wrong-{n}").content.decode() for n in range(30)]
    assert all("Too many failed logins" not in page for page in answers[:5])
    assert all("Too many failed logins" in page for page in answers[5:])
    refused = _login(client, "ada", "pw-ada")
    assert refused.status_code == 200 and "Too many failed logins" in refused.content.decode()
    assert "_auth_user_id" not in client.session
    assert _login(Client(), "ADA ", "pw-ada").status_code == 200  # the same account, spelt otherwise

    time.sleep(2.1)
    assert _login(client, "ada", "pw-ada").status_code == 302 and "_auth_user_id" in client.session


def test_failed_logins_from_one_address_lock_that_address_out(make_user: Any, settings: Any) -> None:
    """G16: failures spread over many usernames from one address lock the address
    (MODELHUB_LOGIN_MAX_FAILURES_PER_IP); another address still logs in."""
    settings.MODELHUB_LOGIN_MAX_FAILURES_PER_IP = 3
    make_user("bob", staff=True)
    for name in ("x1", "x2", "x3"):
        assert "Too many" not in _login(Client(), name, "guess").content.decode()
    assert "Too many failed logins" in _login(Client(), "bob", "pw-bob").content.decode()
    elsewhere = Client(REMOTE_ADDR="10.0.0.9")
    assert _login(elsewhere, "bob", "pw-bob").status_code == 302


def test_the_serving_readyz_body_is_json_with_no_model_for_the_public(served: dict[str, Any]) -> None:
    """G11: the healthy public body: status and checks only."""
    body = json.loads(Client().get("/readyz").content)
    assert set(body) == {"status", "checks"} and body["status"] == "ready"
