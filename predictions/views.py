"""The predict endpoint: authenticate → throttle → route → validate → run → serialize, nothing else.

A plain Django view rather than a DRF APIView: the request is parsed and the answer rendered with
orjson (stdlib json costs more than a small model's inference), and DRF's negotiation, parser and
renderer machinery adds per-request overhead that this one route does not need. Authentication
is ``predictions.auth.authenticate`` (predict tokens, DRF tokens, sessions with CSRF).

Every refusal is JSON ``{"error": "..."}`` with a 4xx status (503 when no variant can answer).
"""

from __future__ import annotations

import logging
import time

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from modelhub.errors import Invalid, NotFound, ServiceError, TooLarge
from predictions import auth, metrics, router

log = logging.getLogger(__name__)


def _json(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status=status,
                        content_type="application/json", headers=headers)


def _error(exc: ServiceError, reason: str) -> HttpResponse:
    metrics.count_error(reason)
    return _json({"error": exc.message}, exc.status, getattr(exc, "headers", None))


def _selector(request: HttpRequest) -> str:
    alias, version = request.GET.get("alias"), request.GET.get("version")
    if alias and version:
        raise Invalid("Choose either ?alias= or ?version=, not both.")
    if version is not None:
        if not version.isdigit() or len(version) > 9:
            raise Invalid(f"?version= must be a version number; got {version[:20]!r}.")
        return router.selector_for(version=int(version))
    if alias is not None and (not alias or len(alias) > 50 or not alias.replace("-", "").replace("_", "").isalnum()):
        raise Invalid("?alias= must be an alias name such as production or staging.")
    return router.selector_for(alias=alias)


_REASONS = {400: "bad_input", 401: "unauthorized", 403: "forbidden", 404: "not_found", 413: "too_large",
            415: "unsupported_media_type", 422: "non_finite_output", 429: "throttled", 503: "unavailable"}


@csrf_exempt
def predict(request: HttpRequest, name: str) -> HttpResponse:
    """``POST /api/v1/models/<name>/predict[?alias=staging | ?version=N]``."""
    started = time.perf_counter()
    if request.method != "POST":
        metrics.count_error("method")
        return _json({"error": "Use POST."}, 405, {"Allow": "POST"})
    try:
        caller = auth.authenticate(request)
        if not caller.may_predict(name):
            raise NotFound(f"No model named {name!r}.")
        auth.throttle(caller)
        route = router.route(name, _selector(request))
        answer = router.answer(route, _body(request), request.content_type or "")
    except auth.Throttled as exc:
        return _json({"error": exc.message}, exc.status, exc.headers)  # counted by throttle()
    except ServiceError as exc:
        return _error(exc, _REASONS.get(exc.status, "error"))
    variant = answer.variant
    elapsed = time.perf_counter() - started
    metrics.observe_latency(route.model, variant.version, variant.name, elapsed)
    reply = {
        "outputs": router.jsonable_outputs(answer.outputs),
        "model": route.model,
        "version": variant.version,
        "variant": variant.name,
        "cached": answer.cached,
        "fallback": answer.fallback_reason is not None,
        "server_ms": round(elapsed * 1000, 3),
    }
    headers = {}
    if answer.fallback_reason is not None:
        reply["fallback_reason"] = answer.fallback_reason
        reply["fallback_from"] = answer.failures
        headers["X-Modelhub-Fallback"] = answer.fallback_reason
    return _json(reply, 200, headers)


def _body(request: HttpRequest) -> bytes:
    """The raw body; Django refuses one over DATA_UPLOAD_MAX_MEMORY_SIZE before reading it."""
    try:
        return request.body
    except RequestDataTooBig:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // (1024 * 1024)
        raise TooLarge(f"The request body is larger than the limit of {limit} MB.") from None
