"""Shared pieces of the OpenAPI schema (drf-spectacular): the error answers each route documents,
the path parameters' patterns, and the serving routes that are plain Django views (predict, the
Open Inference Protocol's infer), which the generator cannot see and a postprocessing hook adds.

The schema is what schemathesis checks the live server against (tests/reliability/test_schema_fuzz.py,
G14), so every status a route really answers is listed here or at its view, and nothing else.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from modelhub.api import serializers as s
from modelhub.services import NAME_PATTERN

# Why each error status happens; every one answers the one Error body ({"error": "<sentence>"}).
WHY = {
    400: "Bad input: the reason names the field or the problem.",
    401: "No valid credentials came with the request.",
    403: "The caller's role does not allow this.",
    404: "No such object, or the caller may not see it.",
    409: "The request conflicts with the current state (a duplicate, a running job, a gate refusal).",
    413: "The upload or body is larger than its limit.",
    415: "The body's content type is not one this route reads.",
    422: "Every variant produced a non-finite output for this input.",
    429: "Too many requests or queued jobs; Retry-After says when to try again.",
    503: "A dependency (database, object storage, a serving variant) is unavailable; Retry-After says when.",
}
READ = (401, 403, 404)  # every route needs credentials and names objects the caller may not see
WRITE = (400, 401, 403, 404, 409)


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """The Error answer for each of ``codes``, described by why it happens."""
    return {code: OpenApiResponse(s.ErrorSerializer, description=WHY[code]) for code in codes}


def answers(ok: dict[int, Any], *codes: int) -> dict[int, Any]:
    """A route's documented answers: ``ok`` (status → serializer or OpenApiResponse) and its error ``codes``."""
    return {**ok, **errors(*codes)}


NAME = OpenApiParameter("name", str, OpenApiParameter.PATH, description="The model's name (a slug).",
                        pattern=r"^[-a-zA-Z0-9_]+$")
NUMBER = OpenApiParameter("number", int, OpenApiParameter.PATH, description="The version number.")
VARIANT = OpenApiParameter("variant", str, OpenApiParameter.PATH, description="The variant's name.",
                           pattern=f"^{NAME_PATTERN}$")
JOB = OpenApiParameter("job", int, OpenApiParameter.QUERY, required=False,
                       description="The succeeded job whose judgment to show (default: the latest).")
OPEN = OpenApiParameter("open", str, OpenApiParameter.QUERY, required=False, enum=["1", "true", "yes", "0"],
                        description="1: open regressions only.")
NIGHTS = OpenApiParameter("nights", int, OpenApiParameter.QUERY, required=False,
                          description="How many nights back (1-3650, default 90).")
BUNDLE = OpenApiResponse(OpenApiTypes.BINARY, description="A zip: the variant's files, predict.py, config.json.")

# --- the serving routes (plain Django views) --------------------------------------------------------

_ERROR = {"$ref": "#/components/schemas/Error"}
_BEARER = {"type": "http", "scheme": "bearer",
           "description": "A predict token (Bearer), or a management token (Token <key>)."}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _refusals(*codes: int) -> dict[str, Any]:
    return {str(code): _json(_ERROR, WHY[code]) for code in codes}


_PREDICT_BODY = {
    "type": "object", "required": ["inputs"],
    "properties": {"inputs": {"type": "object", "description": "Input name → nested list with a leading batch "
                              "dimension, or {b64, dtype, shape} (raw little-endian bytes).",
                              "additionalProperties": True}},
}
_PREDICT_ANSWER = {
    "type": "object", "required": ["outputs", "model", "version", "variant", "cached", "fallback", "server_ms"],
    "properties": {
        "outputs": {"type": "object", "additionalProperties": True, "description": "Output name → nested list."},
        "model": {"type": "string"}, "version": {"type": "integer"}, "variant": {"type": "string"},
        "cached": {"type": "boolean"}, "fallback": {"type": "boolean"}, "server_ms": {"type": "number"},
        "fallback_reason": {"type": "string"},
        "fallback_from": {"type": "array", "items": {}},
    },
}
_INFER_BODY = {
    "type": "object", "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                           "datatype": {"type": "string"}, "data": {"type": "array", "items": {}},
                           "parameters": {"type": "object", "additionalProperties": True}}}},
        "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "parameters": {"type": "object", "additionalProperties": True},
    },
    "additionalProperties": False,  # the server refuses unknown fields (400)
}
_INFER_ANSWER = {
    "type": "object", "required": ["model_name", "outputs"],
    "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
                   "outputs": {"type": "array", "items": {"type": "object", "additionalProperties": True}}},
}
_SERVING_REFUSALS = (400, 401, 403, 404, 413, 415, 422, 429, 503)


def _operation(operation_id: str, summary: str, body: dict[str, Any], answer: dict[str, Any],
               parameters: list[dict[str, Any]], extra_types: tuple[str, ...]) -> dict[str, Any]:
    content = {"application/json": {"schema": body}}
    content.update({kind: {"schema": {"type": "string", "format": "binary"}} for kind in extra_types})
    return {"post": {
        "operationId": operation_id, "summary": summary, "tags": ["serving"], "parameters": parameters,
        "requestBody": {"required": True, "content": content},
        "responses": {"200": _json(answer, "The answer and which variant gave it."), **_refusals(*_SERVING_REFUSALS)},
        "security": [{"bearerAuth": []}, {"tokenAuth": []}],
    }}


def _path(name: str, description: str, pattern: str = r"^[-a-zA-Z0-9_]+$") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "pattern": pattern}}


def serving_routes(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: document predict and OIP infer (plain Django views) too."""
    model = _path("name", "The model's name.")
    selectors = [{"name": "alias", "in": "query", "required": False, "schema": {"type": "string",
                  "pattern": r"^[-a-zA-Z0-9_]{1,50}$"}, "description": "Serve this alias (default production)."},
                 {"name": "version", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0},
                  "description": "Serve this version (not with alias)."}]
    result.setdefault("paths", {})["/api/v1/models/{name}/predict"] = _operation(
        "models_predict", "Predict with the model's production variant (or ?alias= / ?version=).", _PREDICT_BODY,
        _PREDICT_ANSWER, [model, *selectors], ("application/x-npy", "application/x-npz"))
    result["paths"]["/v2/models/{name}/infer"] = _operation(
        "oip_infer", "Open Inference Protocol (KServe V2) infer, JSON tensors.", _INFER_BODY, _INFER_ANSWER,
        [model], ())
    result.setdefault("components", {}).setdefault("securitySchemes", {})["bearerAuth"] = _BEARER
    return result
