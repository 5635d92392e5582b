"""What each target can run: the one home of the rules the planner, the search and the advisor
consult before they spend time on a recipe a target cannot load, or that measures badly there."""

from __future__ import annotations

from collections.abc import Iterable

NATIVE_TARGETS = ("cpu", "cuda")
JS_TARGETS = ("node", "browser-wasm")
TARGETS = NATIVE_TARGETS + JS_TARGETS
# What a fingerprint's ``provider`` says for each target: the readiness check compares them.
PROVIDER_OF_TARGET = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                      "node": "onnxruntime-node (cpu)", "browser-wasm": "onnxruntime-web (wasm)"}
# Ops (domain, op type; "*": the whole domain) that the target's runtime has no kernel for, as
# found by loading them in onnxruntime-node / onnxruntime-web 1.30.0 (tests/browser/test_targets.py):
# the wasm build has every CPU kernel tried (ConvInteger with int8 weights, MatMulNBits, Attention,
# FusedConv ...) but not the x86-only NCHWc layout ops; Rfft / Irfft have a CUDA kernel only.
_LACKING: dict[str, frozenset[tuple[str, str]]] = {
    "cpu": frozenset({("com.microsoft", "Rfft"), ("com.microsoft", "Irfft")}),
    "node": frozenset({("com.microsoft", "Rfft"), ("com.microsoft", "Irfft")}),
    "browser-wasm": frozenset({("com.microsoft.nchwc", "*"), ("com.microsoft", "Rfft"), ("com.microsoft", "Irfft")}),
}


def is_js(target: str) -> bool:
    """True for the targets whose variants are measured in a JavaScript runtime."""
    return target in JS_TARGETS


def native_provider(target: str) -> str:
    """The native ONNX Runtime provider a bench config names for ``target``: the target itself for
    cpu / cuda; the CPU for node and browser-wasm, whose own runner takes the target from the
    profile (and whose candidates the search screens natively, on the CPU they run on)."""
    return target if target in NATIVE_TARGETS else "cpu"


def lacking_ops(target: str, nodes: Iterable[tuple[str, str]]) -> list[str]:
    """The ops of a graph (its nodes' (domain, op type)) that ``target`` cannot run, as
    ``domain:op`` names in first-seen order; empty when none is known to be missing."""
    lacking = _LACKING.get(target, frozenset())
    found: dict[str, None] = {}
    for domain, op in nodes:
        domain = domain or "ai.onnx"
        if (domain, op) in lacking or (domain, "*") in lacking:
            found[f"{domain}:{op}"] = None
    return list(found)


def recipe_problem(target: str, pass_name: str, config: dict, op_types: set[str]) -> str | None:
    """Why the pass ``pass_name`` with ``config`` makes no sense for a model with ``op_types`` on
    ``target``, in words a person can act on; None when it may be tried."""
    if target == "browser-wasm" and pass_name == "quantize_dynamic" and "Conv" in op_types:
        if str(config.get("weight_type", "qint8")).lower() in ("qint8", "int8"):
            # onnxruntime-web 1.30 loads ConvInteger with signed weights, but its wasm kernel for
            # them is slow: digits_cnn's p50 at batch 1 was 0.140 ms against 0.050 ms with QUInt8
            # weights (bench/targets.py), while natively both are fast.
            return ("on onnxruntime-web's wasm backend ConvInteger with signed int8 weights is several times slower "
                    "than with unsigned ones; use weight_type QUInt8")
    if is_js(target) and pass_name == "graph" and str(config.get("level", "")).lower() == "all":
        return "graph level 'all' stores x86 NCHWc layout ops, which onnxruntime-web's wasm build cannot load"
    return None
