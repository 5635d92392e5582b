"""Upload limits that hold before the bytes land: decided from the headers, then enforced per chunk.

Django parses a multipart body (and writes its files to ``FILE_UPLOAD_TEMP_DIR``) the first time a
view, a form or the CSRF check touches ``request.POST`` / ``request.FILES``, which is before any
service can check a role or a size. So two things run first:

- ``UploadGuardMiddleware`` (a middleware, not a view check, because the admin's add forms and the
  CSRF check read the body before any view code of ours runs): on an upload route it answers 401 /
  403 / 411 / 413 JSON from the request line and headers only (the token or session, the role, the
  declared ``Content-Length``, which must be there), so a refused upload writes 0 bytes anywhere.
- ``CappedUploadHandler`` (the only ``FILE_UPLOAD_HANDLERS`` entry): writes each file part to a
  temporary file and, the moment a part (by its own ``Content-Length`` header or by the bytes that
  arrived) goes over its cap, deletes what it wrote and stops the parse with ``UploadTooLarge``
  (413). That also covers a body whose length was not declared or was declared falsely.

The services keep their own checks (``artifacts.receive`` caps and hashes again): this module only
makes the refusal happen before the disk is touched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve

from modelhub import roles
from modelhub.errors import TooLarge

# Multipart boundaries, part headers and small fields (purpose, csrf token) around the files.
MULTIPART_MARGIN = 64 * 1024
_MODEL_FILE_FIELD = "file"


class UploadTooLarge(TooLarge):
    """A file part went over its cap while being received (answered 413; nothing is kept)."""


@dataclass(frozen=True)
class UploadRoute:
    """What one upload route takes: the action (for the role message) and the files it accepts."""

    action: str
    model_file: bool  # the "file" field is a model (else every file field is a dataset)
    datasets: int  # how many dataset files the form may carry

    def cap_for(self, field_name: str) -> int:
        """The byte cap of one file part of this route."""
        if self.model_file and field_name == _MODEL_FILE_FIELD:
            return settings.MODELHUB_MAX_MODEL_BYTES
        return settings.MODELHUB_MAX_DATASET_BYTES

    def body_cap(self) -> int:
        """The most a whole request body of this route may declare."""
        files = (settings.MODELHUB_MAX_MODEL_BYTES if self.model_file else 0)
        return files + self.datasets * settings.MODELHUB_MAX_DATASET_BYTES + MULTIPART_MARGIN


# url names (as ``resolve`` reports them: namespace:name) of every route that takes files.
UPLOAD_ROUTES = {
    "api-versions": UploadRoute("upload model versions", model_file=True, datasets=0),
    "api-datasets": UploadRoute("upload datasets", model_file=False, datasets=1),
    "admin:modelhub_modelversion_add": UploadRoute("upload model versions", model_file=True, datasets=3),
    "admin:modelhub_dataset_add": UploadRoute("upload datasets", model_file=False, datasets=1),
}
_TOKEN = re.compile(r"^\s*Token\s+(\S+)\s*$", re.IGNORECASE)


def upload_route(request: HttpRequest) -> UploadRoute | None:
    """The upload route a multipart POST goes to, else None (nothing of the body is read)."""
    if request.method != "POST" or not request.META.get("CONTENT_TYPE", "").lower().startswith("multipart/"):
        return None
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return None
    return UPLOAD_ROUTES.get(match.view_name)


def declared_length(request: HttpRequest) -> int | None:
    """The body's declared Content-Length; None when absent (a chunked body) or not a number."""
    try:
        return int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


def header_user(request: HttpRequest) -> Any:
    """Who sends the request, from headers only: a DRF token (``Authorization: Token ...``), else the
    session's user. Raises PermissionError with the reason for an unknown or inactive token."""
    forced = getattr(request, "_force_auth_user", None)  # DRF's APIClient.force_authenticate, as DRF's Request reads it
    if forced is not None:
        return forced
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        return getattr(request, "user", None)
    match = _TOKEN.match(header)
    if match is None:
        raise PermissionError("The Authorization header must be 'Token <key>'.")
    from rest_framework.authtoken.models import Token  # the API's own token table

    token = Token.objects.select_related("user").filter(key=match.group(1)).first()
    if token is None or not token.user.is_active:
        raise PermissionError("Invalid token.")
    return token.user


def refusal(request: HttpRequest, route: UploadRoute) -> JsonResponse | None:
    """The 401 / 403 / 411 / 413 answer an upload gets from its headers, or None to let it in."""
    try:
        user = header_user(request)
    except PermissionError as exc:
        return JsonResponse({"error": str(exc)}, status=401)
    if not getattr(user, "is_authenticated", False):
        return JsonResponse({"error": "Authentication credentials were not provided."}, status=401)
    if not roles.has_role(user, roles.MAINTAINER):
        return JsonResponse({"error": f"You need the {roles.MAINTAINER} role to {route.action}."}, status=403)
    length = declared_length(request)
    if length is None:  # Django reads no undeclared body: say so, rather than "no file"
        return JsonResponse({"error": "An upload must declare its Content-Length (chunked uploads are not "
                                      "accepted); nothing was stored."}, status=411)
    if length > route.body_cap():
        return JsonResponse({"error": _too_large(length, route.body_cap() - MULTIPART_MARGIN)}, status=413)
    return None


def _too_large(size: int, cap: int) -> str:
    return (f"The upload is larger than the limit of {cap // 2**20} MB (it declares {size / 2**20:.1f} MB); "
            "nothing was stored.")


class UploadGuardMiddleware:
    """Refuse an upload from its headers before anything reads its body (see the module docstring);
    also answers an ``UploadTooLarge`` raised while a body is parsed with a 413 JSON reason."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        route = upload_route(request)
        if route is not None:
            answer = refusal(request, route)
            if answer is not None:
                return answer
            request.modelhub_upload_route = route  # type: ignore[attr-defined]  # read by CappedUploadHandler
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        """A form or the CSRF check tripped over the cap: 413 JSON, not a 500."""
        if isinstance(exc, UploadTooLarge):
            return JsonResponse({"error": exc.message}, status=413)
        return None


class CappedUploadHandler(TemporaryFileUploadHandler):
    """Writes each file part to a temporary file, and stops at the part's cap: what was written is
    deleted and ``UploadTooLarge`` ends the parse, so nothing over the cap stays on disk."""

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.cap = 0
        self.received = 0

    def _cap(self, field_name: str) -> int:
        route = getattr(self.request, "modelhub_upload_route", None)
        if route is None:  # a multipart POST elsewhere: the largest file any route takes
            return max(settings.MODELHUB_MAX_MODEL_BYTES, settings.MODELHUB_MAX_DATASET_BYTES)
        return route.cap_for(field_name)

    def new_file(self, field_name: str, file_name: str, content_type: str, content_length: int | None,
                 charset: str | None = None, content_type_extra: dict[str, Any] | None = None) -> None:
        """Refuse a part whose own Content-Length is over its cap before creating any file."""
        self.cap, self.received = self._cap(field_name), 0
        if content_length is not None and content_length > self.cap:
            raise UploadTooLarge(_too_large(content_length, self.cap))
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        """Write a chunk, unless it takes the part over its cap: then delete the part and stop."""
        self.received += len(raw_data)
        if self.received > self.cap:
            self.file.close()  # a NamedTemporaryFile: closing deletes it
            raise UploadTooLarge(f"The file is larger than the limit of {self.cap // 2**20} MB; nothing was stored.")
        return super().receive_data_chunk(raw_data, start)
