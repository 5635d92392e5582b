"""Who may do what from the admin and the dashboard: the pages offer it, the server enforces it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from modelhub.models import ModelVersion, PromotionEvent
from tests import factories
from workers.samples import SampleModel

pytestmark = pytest.mark.django_db
MODEL = factories.TEAM_MODEL
SAMPLE_KWARGS = {"name": MODEL, "number": "1", "variant": "original", "job_id": "1"}


def _client(user: Any, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def _dashboard_routes() -> list[str]:
    resolver = next(r for r in get_resolver().url_patterns if isinstance(r, URLResolver) and "dashboard" in str(r.pattern))
    routes = []
    for entry in resolver.url_patterns:
        assert isinstance(entry, URLPattern)
        route = str(entry.pattern)
        for key, value in SAMPLE_KWARGS.items():
            for converter in ("slug", "int", "str", "name"):
                route = route.replace(f"<{converter}:{key}>", value)
        routes.append(f"/dashboard/{route}")
    return routes


@pytest.mark.parametrize("url", _dashboard_routes())
def test_every_dashboard_page_sends_anonymous_users_to_the_login_page(url: str) -> None:
    assert "<" not in url
    for method in ("get", "post"):
        response = getattr(Client(), method)(url)
        assert response.status_code == 302, f"{method.upper()} {url} -> {response.status_code}"
        assert response["Location"].startswith("/admin/login/?next=")


def test_users_who_are_not_staff_get_the_login_page(make_user: Callable[..., Any]) -> None:
    user = make_user("nora", "approver")  # a role, but no staff flag: no admin, no dashboard
    response = _client(user).get("/dashboard/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_a_viewer_cannot_upload_a_version(quality_mlp: SampleModel, media_root: Path) -> None:
    owner = factories.staff_user("maria", "maintainer")
    viewer = factories.staff_user("vic", "viewer")
    model = factories.team_model(owner)
    client = _client(viewer)
    assert client.get(reverse("admin:modelhub_modelversion_add")).status_code == 403
    with quality_mlp.onnx.open("rb") as handle:
        response = client.post(reverse("admin:modelhub_modelversion_add"), {"model": model.pk, "file": handle})
    assert response.status_code == 403
    assert not ModelVersion.objects.exists()
    page = client.get(reverse("dashboard:model", args=[model.name])).content.decode()
    assert "Upload a version" not in page and model.name in page


@pytest.mark.slow
def test_a_viewer_cannot_start_an_optimization(quality_mlp: SampleModel, media_root: Path) -> None:
    owner = factories.staff_user("maria", "maintainer")
    viewer = factories.staff_user("vic", "viewer")
    version = factories.team_version(owner, quality_mlp)
    client = _client(viewer)
    page = client.get(reverse("dashboard:version", args=[MODEL, version.number])).content.decode()
    assert 'id="optimize-form"' not in page
    response = client.post(reverse("dashboard:optimize", args=[MODEL, version.number]), {"profile": ""})
    assert response.status_code == 403
    assert not version.jobs.exists()


@pytest.mark.slow
def test_a_maintainer_cannot_promote_or_roll_back(quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    client = _client(maintainer)
    page = client.get(reverse("dashboard:version", args=[MODEL, version.number])).content.decode()
    assert "promote…" not in page
    promote = reverse("dashboard:promote", args=[MODEL, version.number, "int8-dynamic"])
    assert client.post(promote, {"reason": "ship it"}).status_code == 403
    assert client.post(reverse("dashboard:rollback", args=[MODEL]), {"reason": "undo"}).status_code == 403
    assert not PromotionEvent.objects.exists()


@pytest.mark.slow
def test_promote_and_rollback_refuse_a_post_without_the_csrf_token(quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    client = _client(approver, csrf=True)
    promote = reverse("dashboard:promote", args=[MODEL, version.number, "int8-dynamic"])
    assert client.post(promote, {"reason": "ship it"}).status_code == 403
    assert client.post(reverse("dashboard:rollback", args=[MODEL]), {"reason": "undo"}).status_code == 403
    assert not PromotionEvent.objects.exists()
    # The same request with the page's token goes through: it was the token that was missing.
    client.get(promote)
    token = client.cookies["csrftoken"].value
    response = client.post(promote, {"reason": "ship it", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert PromotionEvent.objects.get().to_variant.name == "int8-dynamic"


@pytest.mark.slow
def test_staff_outside_the_team_find_no_model_and_no_job(quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    outsider = factories.user("otto", "maintainer", "approver", staff=True)  # staff, not in the team
    client = _client(outsider)
    assert MODEL not in client.get("/dashboard/").content.decode()
    for url in (reverse("dashboard:model", args=[MODEL]), reverse("dashboard:version", args=[MODEL, 1]),
                reverse("dashboard:bundle", args=[MODEL, 1, "int8-dynamic"]),
                reverse("dashboard:job-progress", args=[version.jobs.get().pk])):
        assert client.get(url).status_code == 404, url
    assert client.post(reverse("dashboard:promote", args=[MODEL, 1, "int8-dynamic"]),
                       {"reason": "mine now"}).status_code == 404
    assert not PromotionEvent.objects.exists()
