"""Errors services raise; every way in (REST, admin, CLI) turns them into a clear answer."""

from __future__ import annotations


class ServiceError(Exception):
    """A refused request; ``status`` is the HTTP status every way in answers with, ``headers`` the
    headers it carries (``Retry-After`` when the same request may succeed unchanged later)."""

    status = 400
    retry_after_s: int | None = None

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers: dict[str, str] = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else {}


class Invalid(ServiceError):
    """The input cannot be used (bad file, bad option, illegal state change)."""


class Forbidden(ServiceError):
    """The user's role does not allow this."""

    status = 403


class NotFound(ServiceError):
    """The object does not exist or is not visible to the user."""

    status = 404


class Conflict(ServiceError):
    """The request clashes with the current state (e.g. a dataset already present)."""

    status = 409


class Unavailable(ServiceError):
    """Something the request needs (the artifact storage) cannot be reached now; nothing was changed."""

    status = 503
    retry_after_s = 5


class TooLarge(ServiceError):
    """The upload is over its size cap."""

    status = 413


class Throttled(ServiceError):
    """Too many requests of this kind are waiting; the same request may succeed once some have run."""

    status = 429

    def __init__(self, message: str, *, retry_after_s: int, **details: object) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, **details)
