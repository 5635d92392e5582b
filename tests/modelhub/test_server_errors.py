"""A management request that fails inside the server: 503 + Retry-After while the database is down
(RELIABILITY.md E2), a 500 without a traceback for anything else, with DEBUG off.

The outage is real: the test's database connection is closed and pointed at a place where no
database is (a free loopback port for PostgreSQL, a missing directory for SQLite), so the driver
itself refuses to connect; the test puts it back before the database is flushed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from rest_framework.authtoken.models import Token

from tests.real_services import free_port

pytestmark = pytest.mark.django_db(transaction=True)  # the outage closes the test's connection


# --- a URLconf of this module for errors that are not an outage -----------------------------------


def _boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("an unexpected failure with a secret detail")


def _duplicate_row(request: HttpRequest) -> HttpResponse:
    from django.contrib.auth.models import User

    User.objects.create(username="twice")
    User.objects.create(username="twice")
    return HttpResponse("unreachable")


urlpatterns = [path("api/boom", _boom), path("boom", _boom), path("api/duplicate", _duplicate_row)]
handler500 = "modelhub.server_errors.server_error"


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def production(settings: Any) -> None:
    settings.DEBUG = False


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


@pytest.fixture
def token(maintainer: Any) -> str:
    """A DRF token written before the outage."""
    return Token.objects.create(user=maintainer).key


@contextmanager
def outage(tmp_path: Path) -> Iterator[None]:
    """The default connection cannot connect until the block ends."""
    params = connection.settings_dict
    saved = dict(params)
    connection.close()
    if connection.vendor == "sqlite":
        params["NAME"] = str(tmp_path / "missing-directory" / "db.sqlite3")
    else:
        params["HOST"], params["PORT"] = "127.0.0.1", str(free_port())
    try:
        yield
    finally:
        connection.close()
        params.clear()
        params.update(saved)


# --- the database is down ------------------------------------------------------------------------


def test_an_api_request_while_the_database_is_down_is_a_503_json_answer_with_retry_after(
        production: None, client: Client, token: str, tmp_path: Path) -> None:
    """E2: the management plane answers 503 + Retry-After in JSON while the database is down."""
    with outage(tmp_path):
        response = client.get("/api/v1/models", HTTP_AUTHORIZATION=f"Token {token}")

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "5"
    assert response.json() == {"error": "The database is unavailable; try again shortly."}


def test_an_api_write_while_the_database_is_down_is_a_503_too(
        production: None, client: Client, token: str, tmp_path: Path) -> None:
    with outage(tmp_path):
        response = client.post("/api/v1/models", {"name": "new"}, content_type="application/json",
                               HTTP_AUTHORIZATION=f"Token {token}")

    assert response.status_code == 503
    assert "Retry-After" in response


def test_the_outage_is_logged_once_per_request_without_a_traceback(
        production: None, client: Client, token: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with outage(tmp_path), caplog.at_level(logging.INFO):
        client.get("/api/v1/models", HTTP_AUTHORIZATION=f"Token {token}")

    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in lines] == ["modelhub.server_errors"]
    assert "GET /api/v1/models" in lines[0].getMessage()
    assert "OperationalError" in lines[0].getMessage()
    assert lines[0].exc_info is None


def test_an_admin_page_while_the_database_is_down_is_a_short_html_503(
        production: None, client: Client, make_user: Any, tmp_path: Path) -> None:
    client.force_login(make_user("root", superuser=True))  # the session lives in the database
    with outage(tmp_path):
        response = client.get("/admin/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")

    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert response["Retry-After"] == "5"
    body = response.content.decode()
    assert "Service unavailable" in body
    assert "Traceback" not in body and "OperationalError" not in body


def test_a_client_asking_for_json_gets_json_outside_the_api(
        production: None, client: Client, make_user: Any, tmp_path: Path) -> None:
    client.force_login(make_user("root", superuser=True))
    with outage(tmp_path):
        response = client.get("/dashboard/", HTTP_ACCEPT="application/json")

    assert response.status_code == 503
    assert response.json()["error"].startswith("The database is unavailable")


def test_the_api_answers_again_once_the_database_is_back(
        production: None, client: Client, token: str, tmp_path: Path) -> None:
    with outage(tmp_path):
        assert client.get("/api/v1/models", HTTP_AUTHORIZATION=f"Token {token}").status_code == 503

    response = client.get("/api/v1/models", HTTP_AUTHORIZATION=f"Token {token}")

    assert response.status_code == 200


# --- other errors stay a 500 ---------------------------------------------------------------------


@pytest.mark.urls(__name__)
def test_an_unexpected_error_under_the_api_is_a_json_500_without_details(production: None, client: Client) -> None:
    response = client.get("/api/boom")

    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error; it has been logged."}
    assert "Retry-After" not in response


@pytest.mark.urls(__name__)
def test_an_unexpected_error_on_a_page_is_django_s_plain_500(production: None, client: Client) -> None:
    response = client.get("/boom", HTTP_ACCEPT="text/html")

    assert response.status_code == 500
    assert b"secret detail" not in response.content and b"Traceback" not in response.content


@pytest.mark.urls(__name__)
def test_a_violated_constraint_is_a_bug_and_stays_a_500(production: None, client: Client) -> None:
    response = client.get("/api/duplicate")

    assert response.status_code == 500
    assert b"UNIQUE" not in response.content.upper()


def test_a_browser_gets_404_and_403_pages_in_the_dashboards_frame_and_the_api_gets_json(
        production: None, client: Client) -> None:
    """G16 (HTML for browsers, JSON for the API): a missing dashboard page and an admin page the
    role may not open answer in the dashboard's frame with a way back; the API answers JSON."""
    from tests import factories

    client.force_login(factories.staff_user("vic", "viewer"))
    missing = client.get("/dashboard/models/no-such-model/", HTTP_ACCEPT="text/html")
    assert missing.status_code == 404
    assert b"<h1>Page not found</h1>" in missing.content and b'href="/dashboard/"' in missing.content
    refused = client.get("/admin/modelhub/governingprofile/add/", HTTP_ACCEPT="text/html")
    assert refused.status_code == 403
    assert b"<h1>You may not open this page</h1>" in refused.content and b'id="error-way-back"' in refused.content
    api = client.get("/api/v1/no-such-route", HTTP_ACCEPT="text/html")
    assert api.status_code == 404 and "error" in api.json()


def test_the_serving_plane_answers_a_plain_404_page_without_the_dashboards_links(
        production: None, client: Client, settings: Any) -> None:
    """G16: the serving plane mounts no dashboard, so its 404 page for a browser is the plain one
    (never a 500 from a link it cannot draw)."""
    settings.ROOT_URLCONF = "predictions.urls"
    response = client.get("/no-such-page", HTTP_ACCEPT="text/html")
    assert response.status_code == 404
    assert b"<h1>Not found</h1>" in response.content and b"/dashboard/" not in response.content
