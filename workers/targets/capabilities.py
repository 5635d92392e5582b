"""What each target can run: the one home of the rules the planner, the search and the advisor
consult before they spend time on a recipe a target cannot load."""

from __future__ import annotations

NATIVE_TARGETS = ("cpu", "cuda")
JS_TARGETS = ("node", "browser-wasm")
TARGETS = NATIVE_TARGETS + JS_TARGETS


def is_js(target: str) -> bool:
    """True for the targets whose variants are measured in a JavaScript runtime."""
    return target in JS_TARGETS


def recipe_problem(target: str, pass_name: str, config: dict, op_types: set[str]) -> str | None:
    """Why the pass ``pass_name`` with ``config`` makes no sense for a model with ``op_types`` on
    ``target``, in words a person can act on; None when it may be tried."""
    if target == "browser-wasm" and pass_name == "quantize_dynamic" and "Conv" in op_types:
        if str(config.get("weight_type", "")).lower() in ("qint8", "int8"):
            # ConvInteger with signed int8 weights has no wasm kernel in onnxruntime-web.
            return "onnxruntime-web's wasm backend has no ConvInteger kernel for signed int8 weights; use weight_type QUInt8"
    return None
