"""The serving plane's WSGI application answers predictions without Django's handler, and the rest with it."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from django.core.wsgi import get_wsgi_application
from django.test import RequestFactory

from predictions.wsgi import ServingApplication

pytestmark = pytest.mark.django_db(transaction=True)  # the WSGI app closes old connections per request


def _call(path: str, body: bytes = b"", method: str = "POST", **headers: str) -> tuple[str, dict[str, str], bytes]:
    environ = RequestFactory().generic(method, path, body, content_type="application/json", **headers).environ
    answer: dict[str, Any] = {}

    def start_response(status: str, header_list: list[tuple[str, str]], exc_info: Any = None) -> None:
        answer["status"], answer["headers"] = status, dict(header_list)

    content = b"".join(ServingApplication(get_wsgi_application())(environ, start_response))
    return answer["status"], answer["headers"], content


def test_a_prediction_through_the_serving_application_matches_the_django_view(
        caller: Any, features: np.ndarray) -> None:
    body = orjson.dumps({"inputs": {"features": features}}, option=orjson.OPT_SERIALIZE_NUMPY)
    status, headers, content = _call("/api/v1/models/mlp/predict", body, HTTP_AUTHORIZATION=f"Bearer {caller.token}")
    through_django = caller.post("mlp", raw=body).json()
    assert status == "200 OK"
    assert headers["Content-Length"] == str(len(content))
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Content-Type"] == "application/json"
    answer = orjson.loads(content)
    assert answer["variant"] == through_django["variant"] == "original"
    np.testing.assert_allclose(answer["outputs"]["quality"], through_django["outputs"]["quality"], rtol=1e-6)


def test_a_refused_prediction_gets_its_json_reason_and_length(mlp: Any) -> None:
    status, headers, content = _call("/api/v1/models/mlp/predict", b"{}")
    assert status == "401 Unauthorized"
    assert headers["Content-Length"] == str(len(content)) and "Bearer" in orjson.loads(content)["error"]


def test_other_paths_and_methods_are_answered_by_django(mlp: Any) -> None:
    assert _call("/healthz", method="GET")[0] == "200 OK"
    status, headers, _ = _call("/api/v1/models/mlp/predict", method="GET")
    assert status == "405 Method Not Allowed" and headers["Allow"] == "POST"


def test_a_plain_http_prediction_is_redirected_when_https_is_required(caller: Any, settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    status, headers, _ = _call("/api/v1/models/mlp/predict", b"{}", HTTP_AUTHORIZATION=f"Bearer {caller.token}")
    assert status.startswith("301") and headers["Location"].startswith("https://")
