"""Small ONNX graphs the target tests load in node and in the browser (made in code, no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper


def _save(graph: onnx.GraphProto, path: Path, opsets: dict[str, int]) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def saturating_cast(path: Path) -> Path:
    """x * 1e10 → int32 → float: an out-of-range float-to-int conversion, which C++ leaves
    undefined. Native x86 builds (cvttss2si) answer INT_MIN for it and for NaN; the wasm build's
    saturating truncation answers INT_MAX for large positives and 0 for NaN. Same file, same
    input, different answers: what a target-only accuracy check must catch."""
    nodes = [helper.make_node("Mul", ["x", "k"], ["scaled"]),
             helper.make_node("Cast", ["scaled"], ["whole"], to=TensorProto.INT32),
             helper.make_node("Cast", ["whole"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "saturating_cast", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
                              initializer=[helper.make_tensor("k", TensorProto.FLOAT, [], [1e10])])
    return _save(graph, path, {"": 17})


def cast_dataset(path: Path, rows: int = 32) -> Path:
    """Validation rows for ``saturating_cast``: most in range, some far out of it (the labels are
    the in-range answers, unused by the fidelity metrics)."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((rows, 4)) * 1e-10).astype(np.float32)
    x[::4, 0] = 1.0  # 1e10 after scaling: beyond int32
    np.savez(path, x=x)
    return path


def rfft(path: Path) -> Path:
    """One com.microsoft Rfft node: a contrib op with a CUDA kernel only, so no CPU build (native,
    node or wasm) can create a session for it."""
    graph = helper.make_graph([helper.make_node("Rfft", ["x"], ["y"], name="spectrum", domain="com.microsoft",
                                                signal_ndim=1)],
                              "rfft", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return _save(graph, path, {"": 17, "com.microsoft": 1})


def nchwc(source: Path, path: Path) -> Path:
    """``source`` as onnxruntime's ORT_ENABLE_ALL level stores it on this x86 CPU: its Conv and
    MaxPool become com.microsoft.nchwc ops, which native onnxruntime and onnxruntime-node run but
    onnxruntime-web's wasm build has no kernels for."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(path)
    options.log_severity_level = 3  # its warning says just that: hardware-specific, do not ship it
    onnxruntime.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return path
