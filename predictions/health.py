"""Health checks (public) and the Prometheus metrics page (staff or the metrics token only).

``/healthz`` and ``/readyz`` are this project's; ``/v2/health/live`` and ``/v2/health/ready`` are
the Open Inference Protocol's, on the same checks. Every answer is JSON with a status code that
tells the state alone (200 live / ready, 503 not ready), since protocol clients read only the code
(tritonclient's ``is_server_ready`` is ``status == 200``) and probes too. With ``DEBUG=0`` they
answer plain HTTP (``SECURE_REDIRECT_EXEMPT``): a load balancer's probe does not follow an https
redirect.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from django_prometheus.exports import ExportToDjangoView


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Alive: the process answers. Needs no database, no Redis."""
    return JsonResponse({"status": "ok"})


def _check(probe: object) -> str:
    try:
        probe()  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as a reason
        return f"error: {exc.__class__.__name__}"
    return "ok"


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _cache() -> None:
    cache.set("modelhub:readyz", 1, 5)


def _runtimes() -> tuple[str, dict[str, str]]:
    """Production runtimes of every model, loaded now if this process has not loaded them yet."""
    from predictions import readiness

    try:
        models = readiness.production_status()
    except Exception as exc:  # noqa: BLE001 - the database check reports the cause
        return f"error: {exc.__class__.__name__}", {}
    if any(value.startswith("error") for value in models.values()):
        return "error: " + ", ".join(name for name, value in models.items() if value.startswith("error")), models
    if any(value != "ok" for value in models.values()):
        return "degraded: " + ", ".join(name for name, value in models.items() if value != "ok"), models
    return "ok", models


def _readiness() -> tuple[dict[str, object], bool]:
    """(body, serving): database and cache answer and every production runtime loads; "degraded"
    while a fallback variant serves for a production model still serves."""
    checks = {"database": _check(_database), "cache": _check(_cache)}
    checks["runtimes"], models = _runtimes()
    ready = all(value == "ok" for value in checks.values())
    serving = not any(value.startswith("error") for value in checks.values())
    status = "ready" if ready else ("degraded" if serving else "unavailable")
    return {"status": status, "checks": checks, "models": models}, serving


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready: database and cache answer and every production runtime loads. 503 with the failing
    parts otherwise; "degraded" (200) while a fallback variant serves for a production model."""
    body, serving = _readiness()
    return JsonResponse(body, status=200 if serving else 503)


@require_GET
def v2_live(request: HttpRequest) -> JsonResponse:
    """``GET /v2/health/live``: 200 ``{"live": true}`` while the process answers (no database, no Redis)."""
    return JsonResponse({"live": True})


@require_GET
def v2_ready(request: HttpRequest) -> JsonResponse:
    """``GET /v2/health/ready``: ``/readyz``'s checks, with ``"ready"`` for protocol clients."""
    body, serving = _readiness()
    return JsonResponse({"ready": serving, **body}, status=200 if serving else 503)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format for staff sessions or ``Authorization: Bearer <MODELHUB_METRICS_TOKEN>``."""
    token = settings.MODELHUB_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    by_token = bool(token) and hmac.compare_digest(header, f"Bearer {token}")
    user = getattr(request, "user", None)  # the serving plane has no sessions: token only
    if not by_token and not (user is not None and user.is_authenticated and user.is_staff):
        return JsonResponse({"error": "Metrics need a staff login or the metrics bearer token."}, status=401)
    return ExportToDjangoView(request)
