"""Optimization passes, one module per pass, each exposing ``Config`` and ``run``.

Pure: no Django. Modules are imported lazily so that importing the registry costs nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

from workers.passes.base import PassInputError

PASS_NAMES: tuple[str, ...] = (
    "export",
    "graph",
    "quantize_dynamic",
    "quantize_static",
    "quantize_search",
    "fp16",
    "prune_magnitude",
    "prune_structured",
    "distill",
)


def get_pass(name: str) -> ModuleType:
    """The module of a pass by name; unknown names are refused with the list of known ones."""
    if name not in PASS_NAMES:
        raise PassInputError(f"Unknown pass {name!r}; known passes: {', '.join(PASS_NAMES)}.")
    return importlib.import_module(f"workers.passes.{name}")


def make_config(name: str, options: dict[str, Any], **data: Any) -> Any:
    """Build a pass's Config from JSON options plus data paths; unknown options are refused."""
    config_cls = get_pass(name).Config
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise PassInputError(f"Pass {name!r} has no option(s) {', '.join(unknown)}; it takes {', '.join(sorted(known))}.")
    given = {k: v for k, v in data.items() if k in known and v is not None}
    try:
        return config_cls(**options, **given)
    except (TypeError, ValueError) as exc:
        raise PassInputError(f"Bad options for pass {name!r}: {exc}") from exc
