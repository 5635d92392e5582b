"""The serving plane's WSGI application: predict requests go straight to the view.

Django's handler costs a predict request more than a small model's inference: the request and
response signals, the middleware chain, URL resolution, and a chunked answer because Django
sets no Content-Length. ``ServingApplication`` hands a predict request (a POST to
``/api/v1/models/<name>/predict``) straight to ``views.predict`` and keeps what the handler
does that matters here: database connections are closed when unusable or too old before and
after the request (a restarted PostgreSQL is reconnected), and the answer gets the same
security headers as from ``SecurityMiddleware``, plus its Content-Length. Everything else (health
checks, metrics, a request Django would redirect to HTTPS) goes through Django unchanged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import WSGIRequest
from django.db import close_old_connections
from django.http import HttpResponse
from django.middleware.security import SecurityMiddleware

from predictions import views

log = logging.getLogger(__name__)

_PREDICT = re.compile(r"/api/v1/models/(?P<name>[-a-zA-Z0-9_]+)/predict")


class ServingApplication:
    """Wrap Django's WSGI application; answer predict requests without its handler."""

    def __init__(self, django_application: Callable[..., Iterable[bytes]]) -> None:
        self.django = django_application
        self.security = SecurityMiddleware(lambda request: HttpResponse())

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        match = _PREDICT.fullmatch(environ.get("PATH_INFO", ""))
        if match is None or environ.get("REQUEST_METHOD") != "POST":
            return self.django(environ, start_response)
        request = WSGIRequest(environ)
        if settings.SECURE_SSL_REDIRECT and not request.is_secure():
            return self.django(environ, start_response)  # Django answers with its redirect
        close_old_connections()
        try:
            response = views.predict(request, match["name"])
        finally:
            close_old_connections()
        response = self.security.process_response(request, response)
        content = response.content
        headers = [*response.items(), ("Content-Length", str(len(content)))]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        return [content]
