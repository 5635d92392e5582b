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
from django.core.cache import caches
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
    caches[settings.MODELHUB_SERVING_CACHE].set("modelhub:readyz", 1, 5)


def _privileged(request: HttpRequest) -> bool:
    """Staff sessions and ``Authorization: Bearer <MODELHUB_METRICS_TOKEN>`` see per-model details."""
    token = settings.MODELHUB_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(header, f"Bearer {token}"):
        return True
    user = getattr(request, "user", None)  # the serving plane has no sessions: token only
    return user is not None and user.is_authenticated and user.is_staff


def _runtimes() -> tuple[str, dict[str, str]]:
    """Production runtimes of every model, loaded now if this process has not loaded them yet.

    The summary names no model: the body is public (model names are for ``_privileged`` callers)."""
    from predictions import readiness

    try:
        models = readiness.production_status()
    except Exception as exc:  # noqa: BLE001 - the database check reports the cause
        return f"error: {exc.__class__.__name__}", {}
    failing = sum(value.startswith("error") for value in models.values())
    if failing:
        return f"error: {failing} of {len(models)} production models cannot load", models
    falling_back = sum(value != "ok" for value in models.values())
    if falling_back:
        return f"degraded: {falling_back} of {len(models)} production models answer from a fallback", models
    return "ok", models


def _readiness(request: HttpRequest) -> tuple[dict[str, object], bool]:
    """(body, serving): serving while predictions can be answered (the database answers and no
    production runtime fails). Redis is an accelerator (routes, throttles and cached answers go on
    without it, see ``predictions.cache``): Redis down is "degraded", never unready, or a load
    balancer would pull every instance at once. Per-model details only for ``_privileged`` callers."""
    cache_check = _check(_cache)
    checks = {"database": _check(_database),
              "cache": "ok" if cache_check == "ok" else f"degraded: Redis unavailable ({cache_check[7:]})"}
    checks["runtimes"], models = _runtimes()
    ready = all(value == "ok" for value in checks.values())
    serving = not any(value.startswith("error") for value in checks.values())
    status = "ready" if ready else ("degraded" if serving else "unavailable")
    body: dict[str, object] = {"status": status, "checks": checks}
    if _privileged(request):
        body["models"] = models
    return body, serving


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready (200) while predictions can be answered; "degraded" (200) while Redis is down or a
    fallback variant serves for a production model; 503 with the failing parts otherwise."""
    body, serving = _readiness(request)
    return JsonResponse(body, status=200 if serving else 503)


@require_GET
def v2_live(request: HttpRequest) -> JsonResponse:
    """``GET /v2/health/live``: 200 ``{"live": true}`` while the process answers (no database, no Redis)."""
    return JsonResponse({"live": True})


@require_GET
def v2_ready(request: HttpRequest) -> JsonResponse:
    """``GET /v2/health/ready``: ``/readyz``'s checks, with ``"ready"`` for protocol clients."""
    body, serving = _readiness(request)
    return JsonResponse({"ready": serving, **body}, status=200 if serving else 503)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format for staff sessions or ``Authorization: Bearer <MODELHUB_METRICS_TOKEN>``."""
    if not _privileged(request):
        return JsonResponse({"error": "Metrics need a staff login or the metrics bearer token."}, status=401)
    return ExportToDjangoView(request)
