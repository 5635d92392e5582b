"""The Open Inference Protocol's (KServe V2) REST views: server metadata, model metadata and
readiness, and infer. Health (``/v2/health/live``, ``/v2/health/ready``) is ``predictions.health``'s.

Model calls need the same credentials as the predict route (a predict token for the model, as
``Authorization: Bearer``); a model the caller may not use is a 404, as if it did not exist.
Infer goes through ``predictions.pipeline`` like a predict request: admission, authentication,
throttling, the route (``mapping.selector_of``), the fallback chain and response cache
(``router.answer_with``), the latency metric. Refusals are ``{"error": ...}``: 400 for a bad
request, 404 for an unknown model or version, 503 when nothing can answer, as Triton maps them.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from predictions import pipeline, readiness, router, routing_table
from predictions.oip import compression, infer_request, infer_response, mapping, metadata
from predictions.refusals import Unavailable
from predictions.routes import Route


def server_metadata(request: HttpRequest) -> HttpResponse:
    """``GET /v2``: public, like the health checks."""
    if request.method != "GET":
        return pipeline.wrong_method("GET")
    return pipeline.json_response(metadata.server())


def model_metadata(request: HttpRequest, name: str, version: str | None = None) -> HttpResponse:
    """``GET /v2/models/<m>[/versions/<v>]``."""
    if request.method != "GET":
        return pipeline.wrong_method("GET")
    try:
        pipeline.caller_for(request, name)
        return pipeline.json_response(metadata.model(routing_table.route(name, mapping.selector_of(version))))
    except Exception as exc:  # noqa: BLE001 - refusal() logs what it does not expect, with its traceback
        return pipeline.refusal(exc, name)


def model_ready(request: HttpRequest, name: str, version: str | None = None) -> HttpResponse:
    """``GET /v2/models/<m>[/versions/<v>]/ready``: 200 when a link of the route loads here (a
    fallback link counts), 503 when none can, 404 for an unknown model or version."""
    if request.method != "GET":
        return pipeline.wrong_method("GET")
    try:
        pipeline.caller_for(request, name)
        status = readiness.chain_status(routing_table.route(name, mapping.selector_of(version)))
        if status.startswith("error"):
            raise Unavailable(f"Model {name} is not ready: {status}.")
    except Exception as exc:  # noqa: BLE001 - refusal() logs what it does not expect, with its traceback
        return pipeline.refusal(exc, name)
    return pipeline.json_response({"name": name, "version": version or "", "ready": True, "status": status})


@csrf_exempt
def infer(request: HttpRequest, name: str, version: str | None = None) -> HttpResponse:
    """``POST /v2/models/<m>[/versions/<v>]/infer``: JSON or binary tensors, gzip / deflate either way."""
    if request.method != "POST":
        return pipeline.wrong_method("POST")
    parsed: list[infer_request.InferRequest] = []

    def run(route: Route) -> router.Answer:
        body = compression.inflate(pipeline.body(request), request.headers.get("Content-Encoding", ""))
        parsed.append(infer_request.parse(body, request.headers.get("Inference-Header-Content-Length"), route))
        return router.answer_with(route, lambda: parsed[0].feeds)

    try:
        served = pipeline.serve(request, name, lambda: mapping.selector_of(version), run)
        content, header_length = infer_response.render(parsed[0], served)
    except Exception as exc:  # noqa: BLE001 - refusal() logs what it does not expect, with its traceback
        return pipeline.refusal(exc, name)
    return _answer(request, served, content, header_length)


def _answer(request: HttpRequest, served: pipeline.Served, content: bytes, header_length: int | None) -> HttpResponse:
    """The HTTP answer: binary after a JSON header says where the header ends; compressed on request."""
    headers = {"Vary": "Accept-Encoding"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    if served.answer.fallback_reason is not None:
        headers["X-Modelhub-Fallback"] = served.answer.fallback_reason
    coding = compression.chosen(request.headers.get("Accept-Encoding", ""))
    if coding:
        content, headers["Content-Encoding"] = compression.deflate(content, coding), coding
    content_type = "application/json" if header_length is None else "application/octet-stream"
    return HttpResponse(content, content_type=content_type, headers=headers)
