"""The management plane under attack (RELIABILITY.md B2, B3, B5, B6, B7).

B1 (anonymous callers on every route) is in tests/modelhub/test_api_access.py and B8 (check
--deploy) in tests/modelhub/test_settings.py. Here a second, fully privileged but unrelated user
walks every route with the owner's ids, clients send fields they must not set, URLs are offered
where a model could be fetched from, path-like names are thrown at every parameter that takes one,
and session requests come without a CSRF token.
"""

from __future__ import annotations

import http.client
import io
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.exceptions import Resolver404
from rest_framework.test import APIClient

from modelhub import services
from modelhub.models import (
    Dataset,
    Deployment,
    ModelVersion,
    OptimizationJob,
    PromotionEvent,
    ReadinessProfile,
    RegisteredModel,
    Variant,
)
from tests import factories
from tests.onnx_graphs import tiny_onnx_bytes

pytestmark = pytest.mark.django_db
NOT_OBJECT_ROUTES = {"home", "healthz", "readyz", "metrics", "schema", "oip-server", "oip-live", "oip-ready"}
PROC_ROOT = "//proc/self/" + "root/etc/passwd"  # the MLflow bypass, spelt in two parts for path linters
HOSTILE_NAMES = ["../x", "..\\x", PROC_ROOT, "a#/../../", "file:///etc/passwd", "..", ".",
                 "%2e%2e%2fx", ".hidden", "x:y", "a b", "a\x00b", "x" * 101]


def _routes(resolver: URLResolver | None = None, prefix: str = "") -> list[tuple[str, URLPattern]]:
    resolver = resolver or get_resolver()
    found = []
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            found += _routes(entry, prefix + str(entry.pattern))
        else:
            found.append((prefix + str(entry.pattern), entry))
    return found


def _object_routes() -> list[str]:
    """Every route but the admin's (tested below for CSRF) and the ones that hold no user's objects."""
    return sorted({r for r, p in _routes() if not r.startswith("admin/") and p.name not in NOT_OBJECT_ROUTES})


def _url(route: str, **values: Any) -> str:
    for key, value in values.items():
        for converter in ("slug", "int", "str", "path", "name"):
            route = route.replace(f"<{converter}:{key}>", str(value))
    assert "<" not in route, f"a converter of {route} has no test value"
    return "/" + route


def _npz(**arrays: Any) -> io.BytesIO:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    buffer.name = "data.npz"
    return buffer


@pytest.fixture
def owned(make_user: Any, media_root: Path, memory_broker: None,
          django_capture_on_commit_callbacks: Any) -> dict[str, Any]:
    """Maria's model m: a READY version with a dataset, a promoted original, and a QUEUED job."""
    owner = make_user("maria", "maintainer", "approver")
    version = factories.upload(owner, tiny_onnx_bytes(), name="m")
    assert version.status == ModelVersion.Status.READY, version.status_reason
    services.dataset_upload(version=version, purpose="validation", stream=_npz(x=np.ones((4, 4), np.float32)),
                            filename="v.npz", user=owner)
    original = version.variants.get(name=Variant.ORIGINAL)
    factories.promote(original, owner, force=True, reason="first")
    with django_capture_on_commit_callbacks(execute=True):  # sent to the broker nobody reads, as at a commit
        job = services.optimization_request(version=version, user=owner, plan=[])
    return {"owner": owner, "version": version, "job": job}


def _snapshot() -> dict[str, Any]:
    return {
        "models": list(RegisteredModel.objects.values_list("name", "owner_id", "team_id")),
        "versions": list(ModelVersion.objects.values_list("pk", "status", "sha256")),
        "datasets": Dataset.objects.count(), "variants": Variant.objects.count(),
        "jobs": list(OptimizationJob.objects.values_list("pk", "status", "cancel_requested", "attempts")),
        "deployments": list(Deployment.objects.values_list("model_id", "alias", "variant_id")),
        "promotions": PromotionEvent.objects.count(), "profiles": ReadinessProfile.objects.count(),
    }


# --- B2: object-level access --------------------------------------------------------------------


@pytest.fixture
def intruder(make_user: Any) -> Client:
    """Every role, staff (dashboard), TorchScript trust: everything except being the owner or in the team."""
    user = make_user("ivan", "viewer", "maintainer", "approver", torchscript=True, staff=True)
    client = APIClient()
    client.force_login(user)
    return client


BODIES: dict[str, Any] = {
    "promote": {"version": 1, "variant": "original", "force": True, "reason": "mine now"},
    "rollback": {"reason": "mine now"}, "optimize": {"plan": []}, "benchmark": {},
}


@pytest.mark.slow
def test_another_user_gets_404_on_every_route_with_the_owners_ids_and_changes_nothing(
        owned: dict[str, Any], intruder: APIClient) -> None:
    """B2: every method on every detail/list/action route with the owner's name, version, variant and job
    id answers 404 (or 403/405); nothing of the owner's changes."""
    before = _snapshot()
    answers = []
    for route in _object_routes():
        url = _url(route, name="m", number=1, version=1, variant="original", job_id=owned["job"].pk)
        body = next((b for key, b in BODIES.items() if key in route), {})
        for method in ("get", "post", "put", "patch", "delete"):
            if route in ("api/v1/models", "api/v1/profiles", "dashboard/") and method in ("get", "post"):
                continue  # lists are checked below; creating one's own model or profile is allowed
            answers.append((method.upper(), url, getattr(intruder, method)(url, body, format="json").status_code))
    assert len({url for _, url, _ in answers}) >= 20
    assert [a for a in answers if a[2] not in (403, 404, 405)] == []
    assert _snapshot() == before


@pytest.mark.slow
def test_lists_never_include_the_owners_rows(owned: dict[str, Any], intruder: APIClient) -> None:
    """B2: the model list is filtered per user, not just the detail routes."""
    assert intruder.get("/api/v1/models").json() == []
    assert b"/dashboard/models/m/" not in intruder.get("/dashboard/").content


@pytest.mark.slow
def test_sequential_job_ids_reveal_nothing_existing_or_not(owned: dict[str, Any], intruder: APIClient) -> None:
    """B2: walking job ids gives the same 404 for the owner's job and for ids that do not exist."""
    highest = OptimizationJob.objects.order_by("-pk").first().pk
    for job_id in range(1, highest + 4):
        for url in (f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/cancel"):
            response = intruder.get(url) if not url.endswith("cancel") else intruder.post(url)
            assert response.status_code == 404 and response.json() == {"error": f"No job {job_id}."}, url
    assert OptimizationJob.objects.get(pk=owned["job"].pk).status == OptimizationJob.Status.QUEUED


# --- B3: mass assignment ------------------------------------------------------------------------

FORGED = {"is_production": True, "owner": 1, "owner_id": 1, "sha256": "0" * 64, "status": "READY",
          "created_by": 1, "created_at": "2000-01-01T00:00:00Z", "id": 999, "pk": 999}


@pytest.fixture
def owner_api(owned: dict[str, Any]) -> APIClient:
    """The owner as staff with a session (dashboard pages too); CSRF is tested on its own below."""
    owner = owned["owner"]
    owner.is_staff = True
    owner.save()
    client = APIClient()
    client.force_login(owner)
    return client


@pytest.mark.slow
def test_registering_a_model_ignores_owner_production_and_timestamps(
        owned: dict[str, Any], owner_api: APIClient, make_user: Any) -> None:
    """B3: the owner is the caller; nothing about production can be set by creating a model."""
    other = make_user("olga", "maintainer")
    response = owner_api.post("/api/v1/models", {"name": "n2", **FORGED, "owner": other.pk, "production": "v1/x"},
                              format="json")
    assert response.status_code == 201
    model = RegisteredModel.objects.get(name="n2")
    assert model.owner == owned["owner"] and model.pk != 999 and model.created_at.year > 2000
    assert not Deployment.objects.filter(model=model).exists()


@pytest.mark.slow
def test_an_upload_ignores_status_sha256_number_format_and_storage_key_from_the_client(
        owned: dict[str, Any], owner_api: APIClient, media_root: Path) -> None:
    """B3: a broken file is refused though the form says READY; a good one gets its real hash and number
    and waits for its intake."""
    forged = {**FORGED, "number": 42, "format": "torchscript", "storage_key": "../../x", "size_bytes": 1}
    broken = io.BytesIO(tiny_onnx_bytes()[:20])
    broken.name = "model.onnx"
    response = owner_api.post("/api/v1/models/m/versions", {"file": broken, **forged}, format="multipart")
    assert response.status_code == 400
    good = io.BytesIO(tiny_onnx_bytes().replace(b"add", b"adx"))
    good.name = "model.onnx"
    response = owner_api.post("/api/v1/models/m/versions", {"file": good, **forged}, format="multipart")
    assert response.status_code == 202, response.json()  # queued for intake: no worker runs in this test
    body = response.json()
    assert (body["number"], body["format"], body["status"]) == (2, "onnx", "PENDING") and body["sha256"] != "0" * 64
    version = ModelVersion.objects.get(model__name="m", number=2)
    assert re.fullmatch(f"incoming/{version.sha256}/[0-9a-f]{{32}}/upload.onnx", version.storage_key)  # G5: per version
    assert version.created_by == owned["owner"]


@pytest.mark.slow
def test_an_optimize_request_ignores_status_result_attempts_and_ownership_fields(
        owned: dict[str, Any], owner_api: APIClient, make_user: Any) -> None:
    """B3: a job starts QUEUED with no result whatever the body says."""
    other = make_user("olga", "maintainer")
    plan = [{"name": "int8", "pass_name": "quantize_dynamic", "options": {}}]  # not the owned fixture's job
    body = {"plan": plan, **FORGED, "status": "SUCCEEDED", "attempts": 99, "result": {"best": "original"},
            "created_by": other.pk, "lease_owner": "x", "dispatched_at": None, "progress": 100}
    response = owner_api.post("/api/v1/models/m/versions/1/optimize", body, format="json")
    assert response.status_code == 202
    job = OptimizationJob.objects.get(pk=response.json()["id"])
    assert (job.status, job.attempts, job.result, job.progress, job.lease_owner) == ("QUEUED", 0, {}, 0.0, "")
    assert job.created_by == owned["owner"] and job.pk != 999


@pytest.mark.slow
def test_a_dataset_upload_ignores_counts_and_hashes_from_the_client(owned: dict[str, Any],
                                                                    owner_api: APIClient) -> None:
    """B3: sample count, labels flag and hash come from the file."""
    forged = {**FORGED, "sample_count": 10**9, "has_labels": True}
    response = owner_api.post("/api/v1/models/m/versions/1/datasets",
                              {"file": _npz(x=np.ones((3, 4), np.float32)), "purpose": "calibration", **forged},
                              format="multipart")
    assert response.status_code == 201, response.json()
    dataset = Dataset.objects.get(purpose="calibration")
    assert (dataset.sample_count, dataset.has_labels) == (3, False) and dataset.sha256 != "0" * 64


@pytest.mark.slow
def test_a_profile_ignores_its_id_and_timestamps(owned: dict[str, Any], owner_api: APIClient) -> None:
    """B3: profiles take their own fields only."""
    response = owner_api.post("/api/v1/profiles", {"name": "fast", "max_p95_ms": 5, **FORGED}, format="json")
    assert response.status_code == 201, response.json()
    profile = ReadinessProfile.objects.get(name="fast")
    assert profile.pk != 999 and profile.created_at.year > 2000


@pytest.mark.slow
def test_no_route_accepts_a_partial_update_from_the_owner(owned: dict[str, Any], owner_api: APIClient) -> None:
    """B3: PATCH/PUT with production, owner, hash and status fields is 405 (or 403/404) on every route."""
    before = _snapshot()
    answers = []
    for route in _object_routes():
        url = _url(route, name="m", number=1, version=1, variant="original", job_id=owned["job"].pk)
        for method in ("put", "patch"):
            answers.append((method.upper(), url, getattr(owner_api, method)(url, FORGED, format="json").status_code))
    assert [a for a in answers if a[2] not in (403, 404, 405)] == []
    assert _snapshot() == before


@pytest.mark.slow
def test_promotion_happens_only_through_promote_by_an_approver_and_is_audited(
        owned: dict[str, Any], make_user: Any) -> None:
    """B3: a maintainer who is not an approver cannot promote; an approver's promotion writes an event."""
    version = owned["version"]
    maintainer = make_user("mo", "maintainer")
    RegisteredModel.objects.filter(pk=version.model.pk).update(owner=maintainer)
    client = APIClient()
    client.force_authenticate(maintainer)
    body = {"version": 1, "variant": "original", "force": True, "reason": "ship it"}
    events = PromotionEvent.objects.count()
    response = client.post("/api/v1/models/m/promote", body, format="json")
    assert response.status_code == 403 and PromotionEvent.objects.count() == events
    approver = make_user("ada", "maintainer", "approver")
    RegisteredModel.objects.filter(pk=version.model.pk).update(owner=approver)
    client.force_authenticate(approver)
    response = client.post("/api/v1/models/m/promote", body, format="json")
    assert response.status_code == 201, response.json()
    event = PromotionEvent.objects.first()
    assert (event.by, event.forced, event.reason, event.kind) == (approver, True, "ship it", "promote")


# --- B5: no import from a URL --------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[dict[str, Any]]:
    """An HTTP server on 127.0.0.1 that records every request and redirects it inward (to itself)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            seen.append(self.path)
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/internal")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{server.server_port}/model.onnx", "port": server.server_port, "seen": seen}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


URL_FIELDS = ("url", "uri", "source", "link", "href", "location", "model_url", "file")


@pytest.mark.slow
def test_no_route_fetches_a_model_or_dataset_from_a_url(
        owned: dict[str, Any], owner_api: APIClient, listener: dict[str, Any]) -> None:
    """B5: the feature is absent: uploads take file bodies only; a URL offered as JSON or as a form field
    (metadata address, file://, a loopback server that redirects inward) is refused or ignored, nothing
    is stored or queued, and the loopback server never sees a request."""
    before = _snapshot()
    targets = [listener["url"], "http://169.254.169.254/latest/meta-data/", "file:///etc/passwd",
               "http://[::1]/model.onnx", "http://2130706433/model.onnx"]
    for target in targets:
        fields = {name: target for name in URL_FIELDS}
        for path in ("/api/v1/models/m/versions", "/api/v1/models/m/versions/1/datasets"):
            assert owner_api.post(path, fields, format="json").status_code == 415, path  # file bodies only
            response = owner_api.post(path, {**fields, "purpose": "validation"}, format="multipart")
            assert response.status_code == 400 and "file" in response.json()["error"], path
    response = owner_api.post("/api/v1/models", {"name": "fetched", "url": listener["url"]}, format="json")
    assert response.status_code == 201 and "url" not in response.json()  # an unknown field, ignored
    assert not ModelVersion.objects.filter(model__name="fetched").exists()
    after = _snapshot()
    after["models"] = [m for m in after["models"] if m[0] != "fetched"]
    assert after == before
    assert listener["seen"] == []
    control = http.client.HTTPConnection("127.0.0.1", listener["port"], timeout=10)
    control.request("GET", "/control")
    assert control.getresponse().status == 302 and listener["seen"] == ["/control"]  # it was listening
    control.close()


def test_no_input_serializer_of_the_api_takes_a_url() -> None:
    """B5, for new endpoints too: no serializer field is a URL or hyperlink, or named like one."""
    from rest_framework import relations, serializers

    from modelhub.api import serializers as api_serializers

    classes = [c for c in vars(api_serializers).values() if isinstance(c, type)
               and issubclass(c, serializers.BaseSerializer) and c.__module__ == api_serializers.__name__]
    assert len(classes) >= 10
    for cls in classes:
        for name, field in cls().fields.items():
            assert not isinstance(field, serializers.URLField | relations.HyperlinkedRelatedField), (cls, name)
            assert not any(word in name.lower() for word in ("url", "uri", "href", "link")), (cls, name)


# --- B6: path-like parameters -------------------------------------------------------------------

VARIANT_ROUTES = [r for r in _object_routes() if "<name:variant>" in r or "<str:variant>" in r]


@pytest.mark.slow
@pytest.mark.parametrize("route", VARIANT_ROUTES)
def test_a_path_like_variant_name_is_refused_by_the_route_itself(
        owned: dict[str, Any], owner_api: APIClient, route: str) -> None:
    """B6: one validator (the ``name`` path converter, services.NAME_PATTERN) refuses it before any view."""
    before = _snapshot()
    for value in HOSTILE_NAMES:
        url = _url(route, name="m", number=1, variant=quote(value, safe=""))
        with pytest.raises(Resolver404):
            resolve(unquote(url))
        for method in ("get", "post"):
            response = getattr(owner_api, method)(url)
            assert response.status_code == 404, f"{method.upper()} {url} -> {response.status_code}"
            assert b"root:" not in response.content
    assert _snapshot() == before


@pytest.mark.slow
def test_a_path_like_dataset_purpose_is_400(owned: dict[str, Any], owner_api: APIClient) -> None:
    """B6: the purpose is a choice, never a path."""
    for value in HOSTILE_NAMES:
        response = owner_api.post("/api/v1/models/m/versions/1/datasets",
                                  {"file": _npz(x=np.ones((3, 4), np.float32)), "purpose": value}, format="multipart")
        assert response.status_code == 400 and "purpose" in response.json()["error"], value
    assert Dataset.objects.count() == 1


@pytest.mark.slow
def test_a_path_like_plan_step_model_or_profile_name_is_400(owned: dict[str, Any], owner_api: APIClient) -> None:
    """B6: step names (which name variants), model and profile names go through the same kind of check."""
    for value in HOSTILE_NAMES:
        plan = [{"name": value, "pass_name": "graph", "options": {}}]
        response = owner_api.post("/api/v1/models/m/versions/1/optimize", {"plan": plan}, format="json")
        assert response.status_code == 400 and "name" in response.json()["error"], value
        assert owner_api.post("/api/v1/models", {"name": value}, format="json").status_code == 400
        assert owner_api.post("/api/v1/profiles", {"name": value}, format="json").status_code == 400
    assert OptimizationJob.objects.count() == 1 and RegisteredModel.objects.count() == 1


def test_ordinary_variant_names_still_resolve() -> None:
    """B6: the validator lets the names the planner and job runner make through."""
    for name in ("original", "int8-dynamic", "int8-static", "prune-structured", "fp16", "graph", "step_2",
                 "int8-dynamic-a1b2c3", "v1.2"):
        assert services.name_is_valid(name)
        assert resolve(f"/api/v1/models/m/versions/1/variants/{name}/bundle").kwargs["variant"] == name


# --- B7: CSRF on session requests ---------------------------------------------------------------


@pytest.fixture
def staff_session(owned: dict[str, Any]) -> Client:
    """The owner (maintainer + approver) as staff, logged in by session cookie, CSRF checks on."""
    owner = owned["owner"]
    owner.is_staff = True
    owner.save()
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    return client


def _csrf_posts(owned: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    variant = owned["version"].variants.get(name=Variant.ORIGINAL)
    model = owned["version"].model
    return [
        ("/admin/modelhub/variant/", {"action": "promote", "_selected_action": [variant.pk], "index": 0}, "form"),
        ("/admin/modelhub/registeredmodel/", {"action": "roll_back_production", "_selected_action": [model.pk],
                                              "index": 0}, "form"),
        ("/api/v1/models/m/promote", {"version": 1, "variant": "original", "force": True, "reason": "x"}, "json"),
        ("/api/v1/models/m/rollback", {"reason": "x"}, "json"),
        ("/dashboard/models/m/versions/1/variants/original/promote/", {"reason": "x", "force": "on"}, "form"),
        ("/dashboard/models/m/rollback/", {"reason": "x"}, "form"),
    ]


@pytest.mark.slow
def test_admin_and_session_promote_or_rollback_without_a_csrf_token_is_403(
        owned: dict[str, Any], staff_session: Client) -> None:
    """B7: a cross-site form cannot promote or roll back with the victim's session cookie."""
    before = _snapshot()
    for url, data, kind in _csrf_posts(owned):
        if kind == "json":
            response = staff_session.post(url, data, content_type="application/json")
        else:
            response = staff_session.post(url, data)
        assert response.status_code == 403, f"POST {url} -> {response.status_code}"
    assert _snapshot() == before


@pytest.mark.slow
def test_the_same_session_post_with_the_csrf_token_gets_through(owned: dict[str, Any], staff_session: Client) -> None:
    """B7 control: the 403 above is the CSRF check, not a permission problem."""
    import onnx

    second = onnx.load_from_string(tiny_onnx_bytes())
    second.doc_string = "version 2"
    factories.upload(owned["owner"], second.SerializeToString(), name="m")
    staff_session.get("/admin/modelhub/variant/")
    token = staff_session.cookies["csrftoken"].value
    response = staff_session.post("/api/v1/models/m/promote",
                                  {"version": 2, "variant": "original", "force": True, "reason": "again"},
                                  content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 201, response.content
    # v1 was never judged, so going back to it is the forced flow: a reason and the force flag.
    response = staff_session.post("/dashboard/models/m/rollback/",
                                  {"reason": "back", "force": "on", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert PromotionEvent.objects.filter(kind="rollback").count() == 1
