"""Reading a teacher ONNX layer chain and rebuilding it in torch, for the distillation pass.

The chain (Gemm / MatMul(+Add) / Conv layers with activations, pooling, BatchNormalization,
Flatten and an optional final Softmax) is checked node by node; anything off the chain is refused
with the node that broke it, and the torch copy must reproduce the teacher's outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workers.formats import signature_from_onnx_model
from workers.passes import onnx_chain
from workers.passes.base import PassError, UnsupportedModelError

CHAIN_OPS = frozenset(
    {"Gemm", "MatMul", "Conv", "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Gelu", "Softplus", "Identity",
     "Dropout", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "BatchNormalization", "Softmax",
     "LogSoftmax", "Constant"}
)


def read_chain(graph: onnx_chain.Graph, label: str) -> list[tuple[Any, onnx_chain.Layer | None]]:
    """The teacher as an ordered list of (node, layer or None); anything else is refused."""
    prefix = f"distillation supports MLP and CNN layer chains; {label} has"
    data_inputs = [name for name in graph.inputs if not graph.is_initializer(name)]
    if len(data_inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedModelError(f"{prefix} {len(data_inputs)} inputs and {len(graph.outputs)} outputs (one each is needed).")
    bias_adds = {id(layer.bias_node) for node in graph.nodes if node.op_type == "MatMul"
                 for layer in [onnx_chain.find_layer(graph, node)] if layer is not None and layer.bias_node is not None}
    foreign = [n.op_type for n in graph.nodes if n.op_type not in CHAIN_OPS and id(n) not in bias_adds]
    if foreign:
        ops = ", ".join(dict.fromkeys(foreign))
        raise UnsupportedModelError(
            f"{prefix} {ops} (attention, residual connections, embeddings and normalization blocks are not a layer chain)."
        )
    tensor, (output,) = data_inputs[0], graph.outputs
    steps: list[tuple[Any, onnx_chain.Layer | None]] = []
    seen: set[int] = set()
    while tensor != output:
        users = graph.consumers.get(tensor, [])
        if len(users) != 1 or tensor in graph.outputs:
            raise UnsupportedModelError(f"{prefix} a branch: {tensor!r} feeds {len(users)} nodes (a residual connection?).")
        node = users[0]
        step = _chain_step(graph, node, tensor, output, prefix)
        steps.append(step)
        seen.update(id(n) for n in (step[1].nodes if step[1] else [node]))
        tensor = step[1].output if step[1] else node.output[0]
    off_chain = [n.op_type for n in graph.nodes if id(n) not in seen and n.op_type != "Constant"]
    if off_chain:
        raise UnsupportedModelError(f"{prefix} nodes off the main chain: {', '.join(dict.fromkeys(off_chain))}.")
    if not any(layer for _, layer in steps):
        raise UnsupportedModelError(f"{prefix} no Gemm, MatMul or Conv layer to narrow.")
    return steps


def _chain_step(graph: onnx_chain.Graph, node: Any, tensor: str, output: str, prefix: str) -> tuple[Any, Any]:
    if node.op_type in onnx_chain.LAYER_OPS:
        layer = onnx_chain.find_layer(graph, node)
        if layer is None or layer.data_input != tensor or layer.bias == "?":
            raise UnsupportedModelError(f"{prefix} {node.op_type} {node.name} whose weights are not constant initializers.")
        if layer.groups != 1:
            raise UnsupportedModelError(f"{prefix} a grouped convolution {node.name} (group={layer.groups}).")
        return node, layer
    if node.input[0] != tensor or not all(graph.is_constant(n) for n in node.input[1:]):
        raise UnsupportedModelError(f"{prefix} {node.op_type} {node.name} combining two tensors.")
    if node.op_type in ("Softmax", "LogSoftmax") and node.output[0] != output:
        raise UnsupportedModelError(f"{prefix} {node.op_type} {node.name} inside the chain.")
    if node.op_type == "Flatten" and int(_attr(node, "axis", 1)) != 1:
        raise UnsupportedModelError(f"{prefix} Flatten {node.name} with axis != 1.")
    if _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedModelError(f"{prefix} {node.op_type} {node.name} with auto_pad (explicit pads are needed).")
    return node, None


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def io_names(model: Any) -> tuple[str, str]:
    signature = signature_from_onnx_model(model)
    spec = signature.inputs[0]
    if not spec.dtype.startswith("float"):
        raise UnsupportedModelError(f"distillation needs a floating-point input; {spec.name} is {spec.dtype}.")
    return spec.name, signature.outputs[0].name


def chain_to_torch(graph: onnx_chain.Graph, steps: list[tuple[Any, onnx_chain.Layer | None]]) -> Any:
    """The teacher chain as a torch ``nn.Sequential`` holding the teacher's weights."""
    import torch

    modules = [m for node, layer in steps for m in [_module(graph, node, layer)] if m is not None]
    return torch.nn.Sequential(*modules).eval()


def _module(graph: onnx_chain.Graph, node: Any, layer: onnx_chain.Layer | None) -> Any:
    import torch

    nn = torch.nn
    op = node.op_type
    if layer is not None:
        return _layer_module(graph, node, layer)
    simple = {"Relu": nn.ReLU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh, "Softplus": nn.Softplus}
    if op in simple:
        return simple[op]()
    if op == "LeakyRelu":
        return nn.LeakyReLU(float(_attr(node, "alpha", 0.01)))
    if op == "Elu":
        return nn.ELU(float(_attr(node, "alpha", 1.0)))
    if op == "Gelu":
        approximate = _attr(node, "approximate", b"none")
        return nn.GELU(approximate=approximate.decode() if isinstance(approximate, bytes) else approximate)
    if op in ("Identity", "Dropout", "Constant"):
        return None
    if op == "Flatten":
        return nn.Flatten(1)
    if op in ("Softmax", "LogSoftmax"):
        return (nn.Softmax if op == "Softmax" else nn.LogSoftmax)(dim=int(_attr(node, "axis", -1)))
    rank = len(graph.shapes.get(node.input[0], ())) or 4
    if op in ("MaxPool", "AveragePool"):
        return _pool(node, op)
    if op == "GlobalAveragePool":
        return getattr(nn, f"AdaptiveAvgPool{max(1, rank - 2)}d")(1)
    if op == "BatchNormalization":
        return _batch_norm(graph, node, rank)
    raise UnsupportedModelError(f"distillation supports MLP and CNN layer chains; the model has {op}.")


def _symmetric_pads(node: Any, dims: int) -> list[int]:
    pads = list(_attr(node, "pads", [0] * (2 * dims)))
    if pads[:dims] != pads[dims:]:
        raise UnsupportedModelError(f"distillation needs symmetric padding; {node.op_type} {node.name} has pads {pads}.")
    return pads[:dims]


def _pool(node: Any, op: str) -> Any:
    import torch

    kernel = list(_attr(node, "kernel_shape"))
    dims = len(kernel)
    if dims not in (1, 2, 3):
        raise UnsupportedModelError(f"distillation supports 1-3D pooling; {node.name} has a {dims}D kernel.")
    common = {"kernel_size": kernel, "stride": list(_attr(node, "strides", [1] * dims)),
              "padding": _symmetric_pads(node, dims), "ceil_mode": bool(_attr(node, "ceil_mode", 0))}
    if op == "MaxPool":
        return getattr(torch.nn, f"MaxPool{dims}d")(dilation=list(_attr(node, "dilations", [1] * dims)), **common)
    return getattr(torch.nn, f"AvgPool{dims}d")(count_include_pad=bool(_attr(node, "count_include_pad", 0)), **common)


def _batch_norm(graph: onnx_chain.Graph, node: Any, rank: int) -> Any:
    import torch

    scale, bias, mean, var = (graph.array(n) for n in node.input[1:5])
    kind = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}.get(rank, "BatchNorm2d")
    module = getattr(torch.nn, kind)(scale.size, eps=float(_attr(node, "epsilon", 1e-5)),
                                     momentum=1 - float(_attr(node, "momentum", 0.9)))
    with torch.no_grad():
        for tensor, value in ((module.weight, scale), (module.bias, bias), (module.running_mean, mean),
                              (module.running_var, var)):
            tensor.copy_(torch.from_numpy(np.array(value, dtype=np.float32)))
    return module


def _layer_module(graph: onnx_chain.Graph, node: Any, layer: onnx_chain.Layer) -> Any:
    import torch

    weight = graph.array(layer.weight).astype(np.float32)
    bias = _layer_bias(graph, node, layer)
    if layer.kind == "Conv":
        dims = weight.ndim - 2
        if dims not in (1, 2, 3):
            raise UnsupportedModelError(f"distillation supports 1-3D convolutions; {node.name} is {dims}D.")
        module = getattr(torch.nn, f"Conv{dims}d")(
            weight.shape[1], weight.shape[0], list(weight.shape[2:]), stride=list(_attr(node, "strides", [1] * dims)),
            padding=_symmetric_pads(node, dims), dilation=list(_attr(node, "dilations", [1] * dims)), bias=bias is not None)
    else:
        if layer.out_axis == 1:  # MatMul and Gemm(transB=0) store (in, out)
            weight = weight.T
        if layer.kind == "Gemm":
            weight = weight * float(_attr(node, "alpha", 1.0))
            bias = None if bias is None else bias * float(_attr(node, "beta", 1.0))
        module = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
        if bias is not None:
            module.bias.copy_(torch.from_numpy(bias))
    return module


def _layer_bias(graph: onnx_chain.Graph, node: Any, layer: onnx_chain.Layer) -> np.ndarray | None:
    name = layer.bias or (node.input[2] if layer.kind == "Gemm" and len(node.input) > 2 else "")
    if not name:
        return None
    return np.broadcast_to(graph.array(name).astype(np.float32).reshape(-1), (layer.units,)).copy()


def check_reproduces(model: Any, x: np.ndarray, expected: np.ndarray) -> None:
    """The torch copy of the teacher must give the teacher's outputs, or the student would learn a wrong shape."""
    import torch

    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    tolerance = 1e-3 * (1 + float(np.abs(expected).max()))
    if got.shape != expected.shape or float(np.abs(got - expected).max()) > tolerance:
        raise PassError("The teacher's layer chain could not be rebuilt in torch with the same outputs; distillation stopped.")
