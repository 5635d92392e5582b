"""Why a predict request gets no answer: the refusals of the answering path, each with its status.

The views turn any of them into JSON ``{"error": ...}`` with the status (and headers) it carries.
"""

from __future__ import annotations

from modelhub.errors import ServiceError


class Unavailable(ServiceError):
    """No link of the chain could answer, or the registry could not be asked (503, try again later)."""

    status = 503

    def __init__(self, message: str, retry_after: int = 5) -> None:
        self.retry_after_s = retry_after
        super().__init__(message)


class NonFiniteOutput(ServiceError):
    """Every variant produced NaN or Infinity for this input: refused, never returned."""

    status = 422


class BadModelInput(ServiceError):
    """The runtime refused the input as invalid (a constraint the signature does not state)."""

    status = 400


class BadModelOutput(ServiceError):
    """Every variant's answer was over the answer caps or unlike its declared outputs: refused, never sent."""

    status = 422
