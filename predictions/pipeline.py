"""The answering steps every predict route shares: admit → authenticate → throttle → route → run.

The predict view (``predictions.views``) and the Open Inference Protocol's infer view
(``predictions.oip.views``) differ only in how they read a body and render an answer; who may
ask, how many may work at once, the rate limit, which route answers, the latency metric and the
JSON refusal (``{"error": ...}`` with its status and headers, counted by reason) live here, once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse

from modelhub.errors import NotFound, ServiceError, TooLarge
from predictions import admission, auth, metrics, routing_table
from predictions.auth import Caller
from predictions.router import Answer
from predictions.routes import Route

log = logging.getLogger(__name__)

_REASONS = {400: "bad_input", 401: "unauthorized", 403: "forbidden", 404: "not_found", 413: "too_large",
            415: "unsupported_media_type", 422: "non_finite_output", 429: "throttled", 503: "unavailable"}


@dataclass(frozen=True)
class Served:
    """A request answered: its route, the answer, and the server time it took."""

    route: Route
    answer: Answer
    elapsed_s: float


def json_response(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    """A JSON answer rendered by orjson (numpy arrays natively)."""
    return HttpResponse(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status=status,
                        content_type="application/json", headers=headers)


def caller_for(request: HttpRequest, name: str) -> Caller:
    """The authenticated caller, who must be allowed to predict with ``name`` (else 404, as if absent)."""
    caller = auth.authenticate(request)
    if not caller.may_predict(name):
        raise NotFound(f"No model named {name!r}.")
    return caller


def serve(request: HttpRequest, name: str, selector: Callable[[], str], run: Callable[[Route], Answer]) -> Served:
    """Admit, authenticate and throttle the request, find its route, ``run`` it; the latency is recorded.

    ``selector`` and ``run`` are called inside the admission slot, after authentication: a caller
    without credentials learns nothing about routes, and a body is read only once admitted.
    """
    started = time.perf_counter()
    with admission.ADMISSION.slot():
        auth.throttle(caller_for(request, name))
        route = routing_table.route(name, selector())
        answer = run(route)
    elapsed = time.perf_counter() - started
    metrics.observe_latency(route.model, answer.variant.version, answer.variant.name, elapsed)
    return Served(route, answer, elapsed)


def refusal(exc: Exception, name: str) -> HttpResponse:
    """The JSON answer to a request that failed with ``exc``, counted under its reason."""
    if isinstance(exc, ServiceError):
        metrics.count_error(getattr(exc, "reason", None) or _REASONS.get(exc.status, "error"))
        return json_response({"error": exc.message}, exc.status, exc.headers or None)
    if isinstance(exc, DatabaseError):
        # one line per refused request: during an outage a traceback each time would drown the log
        log.warning("predict %s: the database is unavailable (%s)", name, type(exc).__name__)
        metrics.count_error("database")
        return json_response({"error": "The model registry is unavailable; try again shortly."}, 503,
                             {"Retry-After": "5"})
    log.error("predict %s failed", name, exc_info=exc)
    metrics.count_error("internal")
    return json_response({"error": "Internal error while predicting; it has been logged."}, 500)


def wrong_method(allowed: str) -> HttpResponse:
    """405 with the allowed method, in JSON like every other refusal."""
    metrics.count_error("method")
    return json_response({"error": f"Use {allowed}."}, 405, {"Allow": allowed})


def body(request: HttpRequest) -> bytes:
    """The raw body; Django refuses one over DATA_UPLOAD_MAX_MEMORY_SIZE before reading it."""
    try:
        return request.body
    except RequestDataTooBig:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // (1024 * 1024)
        raise TooLarge(f"The request body is larger than the limit of {limit} MB.") from None
