"""Nobody gets in where they do not belong: anonymous callers, other users, the wrong role."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from modelhub.models import RegisteredModel
from tests import factories

# The protocol's health and server metadata, and the root's redirect to the (login-guarded) dashboard.
PUBLIC = {"healthz", "readyz", "oip-server", "oip-live", "oip-ready", "home"}
SAMPLE_KWARGS = {"name": "m", "number": 1, "variant": "original", "job_id": 1, "version": 1}


def _routes(resolver: URLResolver | None = None, prefix: str = "") -> list[tuple[str, URLPattern]]:
    resolver = resolver or get_resolver()
    routes = []
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            routes += _routes(entry, prefix + str(entry.pattern))
        else:
            routes.append((prefix + str(entry.pattern), entry))
    return routes


def _concrete(route: str) -> str:
    for key, value in SAMPLE_KWARGS.items():
        for converter in ("slug", "int", "str", "path", "name"):
            route = route.replace(f"<{converter}:{key}>", str(value))
    return "/" + route.lstrip("^").rstrip("$")


# Admin and dashboard pages answer anonymous users with the login page (tests/modelhub/dashboard).
API_ROUTES = sorted({r for r, p in _routes() if not r.startswith(("admin/", "dashboard/")) and p.name not in PUBLIC})


@pytest.mark.django_db
@pytest.mark.parametrize("route", API_ROUTES)
def test_every_route_refuses_an_anonymous_caller(route: str) -> None:
    """B1: every routed URL (enumerated, so a new one is covered) refuses an anonymous caller."""
    client = APIClient()
    url = _concrete(route)
    assert "<" not in url, f"add the converter of {route} to SAMPLE_KWARGS"
    for method in ("get", "post"):
        response = getattr(client, method)(url)
        # HTML pages send a browser to the login page; everything else answers 401/403/405.
        to_login = response.status_code == 302 and response["Location"].startswith("/admin/login/")
        assert to_login or response.status_code in (401, 403, 405), f"{method.upper()} {url} -> {response.status_code}"


@pytest.mark.django_db
def test_health_checks_answer_without_login() -> None:
    assert APIClient().get("/healthz").json() == {"status": "ok"}


@pytest.mark.django_db
def test_admin_pages_send_anonymous_users_to_the_login_page() -> None:
    response = APIClient().get("/admin/modelhub/registeredmodel/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_a_maintainer_registers_a_model_and_sees_it_listed(api: APIClient) -> None:
    response = api.post("/api/v1/models", {"name": "churn", "task": "classification"}, format="json")
    assert response.status_code == 201
    assert [m["name"] for m in api.get("/api/v1/models").json()] == ["churn"]


@pytest.mark.django_db
def test_a_viewer_cannot_register_a_model(make_user: Any) -> None:
    client = APIClient()
    client.force_authenticate(make_user("vera", "viewer"))
    response = client.post("/api/v1/models", {"name": "churn"}, format="json")
    assert response.status_code == 403
    assert "maintainer role" in response.json()["error"]


@pytest.mark.django_db
def test_another_users_model_is_invisible_in_lists_and_details(make_user: Any, maintainer: Any) -> None:
    factories.model(maintainer, "secret-model")
    intruder = APIClient()
    intruder.force_authenticate(make_user("ivan", "maintainer", "approver"))
    assert intruder.get("/api/v1/models").json() == []
    for url in ("/api/v1/models/secret-model", "/api/v1/models/secret-model/versions",
                "/api/v1/models/secret-model/history"):
        response = intruder.get(url)
        assert response.status_code == 404, url
        assert response.json() == {"error": "No model named 'secret-model'."}
    assert intruder.post("/api/v1/models/secret-model/rollback", {}, format="json").status_code == 404


@pytest.mark.django_db
def test_team_members_see_the_teams_models(make_user: Any, maintainer: Any) -> None:
    from django.contrib.auth.models import Group

    team = Group.objects.create(name="ranking-team")
    factories.model(maintainer, "ranker", team=team)
    colleague = make_user("carla", "viewer")
    colleague.groups.add(team)
    client = APIClient()
    client.force_authenticate(colleague)
    assert client.get("/api/v1/models/ranker").status_code == 200


@pytest.mark.django_db
def test_a_duplicate_model_name_is_a_conflict(api: APIClient) -> None:
    api.post("/api/v1/models", {"name": "churn"}, format="json")
    response = api.post("/api/v1/models", {"name": "churn"}, format="json")
    assert response.status_code == 409
    assert RegisteredModel.objects.count() == 1


@pytest.mark.django_db
def test_the_openapi_schema_is_served_to_logged_in_users_only(api: APIClient) -> None:
    assert APIClient().get("/api/schema/").status_code in (401, 403)
    response = api.get("/api/schema/")
    assert response.status_code == 200
    assert b"/api/v1/models/{name}/versions" in response.content
