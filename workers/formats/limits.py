"""The newest ONNX IR version and opsets the installed onnxruntime loads, found by probing it
(pure: no Django)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from workers import ort

# What onnxruntime 1.31.1 loads, found by probing it (runtime_limits()); used only when probing fails.
# Note: ORT's schema registry already knows ai.onnx opset 27, but a session refuses it ("under
# development"); the released limit is 26, and IR version 14 (onnx 1.23's default) is refused.
FALLBACK_MAX_IR_VERSION = 13
FALLBACK_MAX_OPSETS: dict[str, int] = {"": 26, "ai.onnx.ml": 5, "com.microsoft": 1}


@dataclass(frozen=True)
class RuntimeLimits:
    """The newest IR version and opsets the installed onnxruntime creates a session for."""

    max_ir_version: int
    max_opsets: dict[str, int]
    probed: bool


def _probe_model(ir_version: int, opsets: dict[str, int]) -> bytes:
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = ir_version
    return model.SerializeToString()


def _loads(blob: bytes) -> bool:
    try:
        ort.session(blob, threads=1, inter_threads=1, log_level=4)
    except Exception:  # noqa: BLE001 - "does not load" is the answer we are probing for
        return False
    return True


def _schema_max_versions() -> dict[str, int]:
    try:
        from onnxruntime.capi import _pybind_state

        found: dict[str, int] = {}
        for schema in _pybind_state.get_all_operator_schema():
            found[schema.domain] = max(found.get(schema.domain, 0), schema.since_version)
        return found
    except Exception:  # noqa: BLE001 - private API; fall back to our constants
        return {}


def _probe_highest(start: int, floor: int, loads: Any) -> int | None:
    for version in range(start, max(floor, start - 12), -1):
        if loads(version):
            return version
    return None


@functools.lru_cache(maxsize=1)
def runtime_limits() -> RuntimeLimits:
    """Probe onnxruntime with tiny models for the newest IR version and opsets it accepts.

    ORT's schema registry can list an opset that is still "under development" and that a session
    refuses, so the schema is only where the probe starts. Falls back to documented constants.
    """
    import onnx

    base = {"": 13}
    ir = _probe_highest(onnx.IR_VERSION + 1, 3, lambda v: _loads(_probe_model(v, base)))
    if ir is None:
        return RuntimeLimits(FALLBACK_MAX_IR_VERSION, dict(FALLBACK_MAX_OPSETS), probed=False)
    schema = _schema_max_versions()
    opsets: dict[str, int] = {}
    for domain, fallback in FALLBACK_MAX_OPSETS.items():
        start = max(schema.get(domain, 0), fallback) + 1
        extra = {} if domain == "" else base
        found = _probe_highest(start, 1, lambda v, d=domain, e=extra: _loads(_probe_model(ir, {**e, d: v})))
        opsets[domain] = found if found is not None else fallback
    return RuntimeLimits(ir, opsets, probed=True)
