"""What the management plane (admin, dashboard, REST API) answers when a request fails inside the server.

Django calls ``server_error`` (``handler500`` in modelhub/urls.py) for any exception that nothing
else handled, with DEBUG off. It is a URLconf handler rather than a middleware's
``process_exception`` on purpose: ``process_exception`` sees only exceptions raised by views, while
the database is also read by middleware and lazily after it (the session behind ``request.user``,
the DRF token lookup before a view's own code runs). ``handler500`` sees them all.

The database being unreachable is an outage, not a bug: the answer is 503 with ``Retry-After``,
logged as one line without a traceback (a down database would otherwise print one per request).
Anything else stays a 500, logged by Django with its traceback; neither answer carries one.

Browsers get the 404, 403 and 500 pages in the dashboard's frame with a way back
(``templates/404.html``, ``403.html``, ``500.html``); the 500 page is drawn without the request, so
it needs neither the session nor the database. API paths and JSON clients get a JSON reason.
"""

from __future__ import annotations

import logging
import sys

from django.db import DatabaseError, DataError, IntegrityError, NotSupportedError, ProgrammingError
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseForbidden,
    HttpResponseNotFound,
    HttpResponseServerError,
    JsonResponse,
)
from django.urls import NoReverseMatch, reverse
from django.views import defaults

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
UNAVAILABLE = "The database is unavailable; try again shortly."
INTERNAL = "Internal server error; it has been logged."
UNAVAILABLE_HTML = (
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Service unavailable</title></head>"
    "<body><main><h1>Service unavailable</h1><p>The database is unavailable; try again in a few seconds.</p>"
    "</main></body></html>"
)
NOT_FOUND_HTML = (
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not found</title></head>"
    "<body><main><h1>Not found</h1><p>There is nothing at this address.</p></main></body></html>"
)
FORBIDDEN_HTML = (
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not allowed</title></head>"
    "<body><main><h1>Not allowed</h1><p>Your credentials do not allow this.</p></main></body></html>"
)
INTERNAL_HTML = (
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Server error</title></head>"
    "<body><main><h1>Server error</h1><p>The request failed inside the server; it has been logged.</p>"
    "</main></body></html>"
)
# Errors a retry cannot fix (a constraint, a bad query, bad data): they are bugs and stay a 500.
# PostgreSQL classifies them precisely; SQLite (local development) reports a missing table as an
# OperationalError, which is answered 503 there.
_BUGS = (IntegrityError, ProgrammingError, DataError, NotSupportedError)


def database_unavailable(exc: BaseException | None) -> bool:
    """True when ``exc`` says the database cannot be reached or used right now (connection refused,
    connection lost, server shutting down), as opposed to a query that is wrong."""
    return isinstance(exc, DatabaseError) and not isinstance(exc, _BUGS)


JSON_PREFIXES = ("/api/", "/v2/")


def wants_json(request: HttpRequest) -> bool:
    """API paths (the REST API and the Open Inference Protocol's ``/v2/``), and clients that ask for
    JSON but not HTML, get JSON; browsers get a page."""
    accept = request.headers.get("Accept", "")
    return request.path_info.startswith(JSON_PREFIXES) or ("json" in accept and "text/html" not in accept)


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: 503 + Retry-After while the database is down, a 500 without a traceback otherwise."""
    exc = sys.exc_info()[1]
    if database_unavailable(exc):
        return _unavailable(request, exc)
    if wants_json(request):
        return JsonResponse({"error": INTERNAL}, status=500)
    try:
        if not _dashboard_mounted():
            return HttpResponseServerError(INTERNAL_HTML, content_type="text/html; charset=utf-8")
        return defaults.server_error(request)
    except Exception:  # the framed page failed to draw: a 500 handler must still answer
        log.exception("the 500 page could not be drawn; answered the plain one")
        return HttpResponseServerError(INTERNAL_HTML, content_type="text/html; charset=utf-8")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler404`` (with DEBUG off): a JSON reason under ``/api/`` and for JSON clients, the page otherwise."""
    if wants_json(request):
        return JsonResponse({"error": f"No route {request.path_info!r}: see /api/schema/ for the routes."},
                            status=404)
    if not _dashboard_mounted():
        return HttpResponseNotFound(NOT_FOUND_HTML, content_type="text/html; charset=utf-8")
    return defaults.page_not_found(request, exception)  # type: ignore[arg-type]


def _dashboard_mounted() -> bool:
    """The framed pages link to the dashboard, which the serving plane does not mount: there a
    browser gets the plain page."""
    try:
        reverse("dashboard:models")
    except NoReverseMatch:
        return False
    return True


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler403``: a JSON reason under ``/api/`` and for JSON clients, the framed page otherwise."""
    if wants_json(request):
        reason = str(exception) if exception and str(exception) else "You may not do this."
        return JsonResponse({"error": reason}, status=403)
    if not _dashboard_mounted():
        return HttpResponseForbidden(FORBIDDEN_HTML, content_type="text/html; charset=utf-8")
    return defaults.permission_denied(request, exception)  # type: ignore[arg-type]


def _unavailable(request: HttpRequest, exc: BaseException) -> HttpResponse:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    log.warning("database unavailable, answered 503: %s %s (%s: %s)", request.method, request.path,
                type(exc).__name__, first_line)
    if wants_json(request):
        response: HttpResponse = JsonResponse({"error": UNAVAILABLE}, status=503)
    else:
        response = HttpResponse(UNAVAILABLE_HTML, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_S)
    # Django's request logger skips a response marked as logged: the line above is the only one.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response
