"""The serving plane's WSGI application: predict and infer requests go straight to their views.

Django's handler costs a predict request more than a small model's inference: the request and
response signals, the middleware chain, URL resolution, and a chunked answer because Django
sets no Content-Length. ``ServingApplication`` hands a predict request (a POST to
``/api/v1/models/<name>/predict``) straight to ``views.predict``, and an Open Inference Protocol
infer request (a POST to ``/v2/models/<name>[/versions/<v>]/infer``) to ``oip.views.infer``, and
keeps what the handler does that matters here: database connections are closed when unusable or too old before and
after the request (a restarted PostgreSQL is reconnected), and the answer gets the same
security headers as from ``SecurityMiddleware``, plus its Content-Length. ALLOWED_HOSTS is
checked here for every request, fast or not (400 JSON for any other ``Host``). Everything else (health
checks, metrics, the protocol's metadata, a request Django would redirect to HTTPS) goes through
Django unchanged.

Made once per serving process (gunicorn imports ``modelhub.wsgi`` in each worker), the application
first warms the production chains (``readiness.warm_production``: bounded in time, never fatal), so
that the first prediction a worker answers does not pay for loading its session.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIRequest
from django.db import close_old_connections
from django.http import HttpResponse
from django.middleware.security import SecurityMiddleware

from predictions import readiness, views
from predictions.oip import views as oip

log = logging.getLogger(__name__)

# POST paths answered without Django's handler, and their views (called with the path's groups).
_FAST: tuple[tuple[re.Pattern[str], Callable[..., HttpResponse]], ...] = (
    (re.compile(r"/api/v1/models/(?P<name>[-a-zA-Z0-9_]+)/predict"), views.predict),
    (re.compile(r"/v2/models/(?P<name>[-a-zA-Z0-9_]+)(?:/versions/(?P<version>[^/]+))?/infer"), oip.infer),
)


def _fast_view(path: str) -> tuple[Callable[..., HttpResponse], dict[str, Any]] | None:
    for pattern, view in _FAST:
        match = pattern.fullmatch(path)
        if match is not None:
            return view, match.groupdict()
    return None


def _host_allowed(request: WSGIRequest) -> bool:
    """ALLOWED_HOSTS, checked here for every path: the fast path skips Django's handler, and the
    serving plane's middleware (SecurityMiddleware alone) never asks for the host elsewhere."""
    try:
        request.get_host()
    except DisallowedHost:
        return False
    return True


def _bad_host(start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = b'{"error": "This host name is not served here (ALLOWED_HOSTS)."}'
    start_response("400 Bad Request", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class ServingApplication:
    """Wrap Django's WSGI application; answer predict and infer requests without its handler."""

    def __init__(self, django_application: Callable[..., Iterable[bytes]], *, warm: bool = True) -> None:
        self.django = django_application
        self.security = SecurityMiddleware(lambda request: HttpResponse())
        if warm:
            readiness.warm_production()
            close_old_connections()  # the first request opens its own connection, as every later one does

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = WSGIRequest(environ)
        if not _host_allowed(request):
            return _bad_host(start_response)
        found = _fast_view(environ.get("PATH_INFO", "")) if environ.get("REQUEST_METHOD") == "POST" else None
        if found is None:
            return self.django(environ, start_response)
        if settings.SECURE_SSL_REDIRECT and not request.is_secure():
            return self.django(environ, start_response)  # Django answers with its redirect
        close_old_connections()
        try:
            response = found[0](request, **found[1])
        finally:
            close_old_connections()
        response = self.security.process_response(request, response)
        content = response.content
        headers = [*response.items(), ("Content-Length", str(len(content)))]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        return [content]
