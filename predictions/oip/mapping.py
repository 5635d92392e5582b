"""How the protocol's model names and versions map onto the registry.

The model name is the registry model's name. The version in ``/versions/<v>`` is read as:

- digits: a registry version number, served as ``?version=N`` is (selector ``version:N``: the
  variant an approver chose for that version, else its original);
- any other slug: an alias (``/versions/staging`` serves what ``?alias=staging`` serves);
- absent: the production alias.

Aliases are reached through the path rather than a request ``parameters`` entry because the
metadata and readiness calls are GETs without a body: only the path can say which alias a client
asks about, and every protocol client already lets its user set the version string
(``model_version=`` in tritonclient). An alias spelt only in digits is read as a version number;
it stays reachable on the predict route (``?alias=``).
"""

from __future__ import annotations

import re

from modelhub.errors import Invalid
from modelhub.models import ModelVersion
from predictions.routes import Route, selector_for
from predictions.runtime import ONNX, TORCH

_ALIAS = re.compile(r"[-a-zA-Z0-9_]{1,50}")
PLATFORMS = {ONNX: "onnxruntime_onnx", TORCH: "pytorch_libtorch"}


def selector_of(version: str | None) -> str:
    """The route selector of a protocol version string (None or "": the production alias)."""
    if not version:
        return selector_for(alias="production")
    if version.isascii() and version.isdigit() and len(version) <= 9:  # int() reads "١" as 1
        return selector_for(version=int(version))
    if _ALIAS.fullmatch(version) and not version.isdigit():
        return selector_for(alias=version)
    raise Invalid(f"Version {version[:20]!r} is neither a version number nor an alias name.")


def versions(route: Route) -> list[str]:
    """The model's READY version numbers, as the protocol lists them (strings)."""
    numbers = ModelVersion.objects.filter(model_id=route.model_id, status="READY").order_by("number")
    return [str(number) for number in numbers.values_list("number", flat=True)]


def platform(route: Route) -> str:
    """The protocol's platform name of the route's primary (``onnxruntime_onnx`` for ONNX files)."""
    return PLATFORMS.get(route.chain[0].runtime, route.chain[0].runtime)
