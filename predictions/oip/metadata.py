"""What the server and a model say about themselves in the protocol's metadata answers."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from predictions.oip import datatypes, mapping
from predictions.routes import Route

# The protocol extensions this server speaks (names as Triton lists them).
EXTENSIONS = ["binary_tensor_data", "parameters"]


@cache
def _version() -> str:
    """The project's version, from pyproject.toml (read once)."""
    try:
        with (Path(__file__).resolve().parents[2] / "pyproject.toml").open("rb") as file:
            return tomllib.load(file)["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def server() -> dict[str, Any]:
    """``GET /v2``: name, version and extensions."""
    return {"name": "modelhub", "version": _version(), "extensions": EXTENSIONS}


def _tensors(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": spec["name"], "datatype": datatypes.of_numpy(spec["dtype"]),
             "shape": datatypes.metadata_shape(spec["shape"])} for spec in specs]


def model(route: Route) -> dict[str, Any]:
    """``GET /v2/models/<m>[/versions/<v>]``: the route primary's signature, the model's versions,
    and (in ``parameters``) which version and variant the route serves first."""
    primary = route.chain[0]
    return {
        "name": route.model,
        "versions": mapping.versions(route),
        "platform": mapping.platform(route),
        "inputs": _tensors(primary.signature.get("inputs", [])),
        "outputs": _tensors(primary.signature.get("outputs", [])),
        "parameters": {"version": str(primary.version), "variant": primary.name, "selector": route.selector},
    }
