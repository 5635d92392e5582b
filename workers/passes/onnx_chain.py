"""Reading ONNX layer chains, shared by prune_magnitude, prune_structured, distill and
``workers.evaluation.prune_advice``.

It answers three questions about a graph exported from an MLP or a CNN:

- which nodes are *layers* (Gemm, MatMul with a weight initializer and its bias Add, Conv), with the
  axis of their weight that makes output units and the one that reads input units;
- how the units of one layer reach the next layer (a :class:`Route`): only through elementwise ops,
  pooling, BatchNormalization and Flatten (which turns each channel into H*W contiguous features);
- how a model's outputs move when its weights change (inputs from a dataset or synthetic inputs;
  the metrics are those of ``workers.evaluation.accuracy`` plus the mean absolute error).

Pure: no Django; onnx / onnxruntime are imported inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workers import ort
from workers.formats import signature_from_onnx_model
from workers.passes import _onnx_util as util
from workers.passes.base import PassError, PassInputError

LAYER_OPS = ("Gemm", "MatMul", "Conv")
# Ops that act on each unit alone; extra inputs (Clip bounds, Dropout ratio) must be constants.
ELEMENTWISE_OPS = frozenset(
    {"Relu", "Sigmoid", "Tanh", "Gelu", "LeakyRelu", "Elu", "Selu", "Softplus", "HardSigmoid",
     "HardSwish", "Clip", "Identity", "Dropout"}
)
# Ops that keep the channel axis of an N, C, ... tensor.
CHANNEL_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"})
ROUTE_OPS = ELEMENTWISE_OPS | CHANNEL_OPS | {"BatchNormalization", "Flatten"}
SYNTHETIC_ROWS = 32  # rows of synthetic inputs when a pass is given no validation data


def fused_hint(model: Any) -> str:
    """A sentence for graphs holding onnxruntime fusions (the graph pass's output), else ''."""
    fused = sorted({n.op_type for n in model.graph.node if n.op_type in util.FUSED_OPS})
    if not fused:
        return ""
    return f" This graph holds onnxruntime fusions ({', '.join(fused)}): run this pass on the model before the graph pass."


def count_params(model: Any) -> int:
    """Number of floating-point weights held in initializers."""
    float_types = {1, 10, 11, 16}  # float32, float16, float64, bfloat16
    return int(sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type in float_types))


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def without_constant_identities(model: Any) -> Any:
    """``model`` with each Identity of an initializer turned into an initializer of its own.

    torch's exporter stores equal tensors once (a fresh BatchNorm's running_var equals its weight)
    and re-creates the others with Identity nodes; as separate initializers each can be sliced alone.
    """
    import onnx

    initializers = {t.name: t for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}

    def is_alias(node: Any) -> bool:
        return node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs

    identities = [n for n in model.graph.node if is_alias(n)]
    if not identities:
        return model
    new = onnx.ModelProto()
    new.CopyFrom(model)
    for node in identities:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(initializers[node.input[0]])
        tensor.name = node.output[0]
        new.graph.initializer.append(tensor)
    keep = [n for n in new.graph.node if not is_alias(n)]
    del new.graph.node[:]
    new.graph.node.extend(keep)
    return new


class Graph:
    """Lookup tables over one graph: consumers, initializer arrays, constants, inferred shapes."""

    def __init__(self, model: Any) -> None:
        import onnx

        model = without_constant_identities(model)
        self.model = model
        graph = model.graph
        self.nodes = list(graph.node)
        self.outputs = {o.name for o in graph.output}
        self.inputs = [i.name for i in graph.input]
        self.initializers = {t.name: t for t in graph.initializer}
        self.consumers: dict[str, list[Any]] = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.constants = {node.output[0] for node in self.nodes if node.op_type == "Constant"}
        self._arrays: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple[int | None, ...]] = {}
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # shapes only refine the routes; without them Flatten routes are skipped
            inferred = model
        for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
            dims = info.type.tensor_type.shape.dim
            if info.type.tensor_type.HasField("shape"):
                self.shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)

    def array(self, name: str) -> np.ndarray:
        """The value of an initializer (cached)."""
        from onnx import numpy_helper

        if name not in self._arrays:
            self._arrays[name] = numpy_helper.to_array(self.initializers[name])
        return self._arrays[name]

    def is_initializer(self, name: str) -> bool:
        """Whether ``name`` is a stored weight."""
        return name in self.initializers

    def is_constant(self, name: str) -> bool:
        """Whether ``name`` is absent, an initializer or a Constant node's output."""
        return not name or name in self.initializers or name in self.constants

    def only_used_by(self, name: str, node: Any) -> bool:
        """Whether ``node`` is the only reader of ``name`` (and it is no graph output)."""
        users = self.consumers.get(name, [])
        return name not in self.outputs and all(u is node for u in users)


@dataclass
class Layer:
    """One linear layer: its weight, bias and the weight axes of output and input units."""

    name: str
    kind: str
    node: Any
    weight: str
    out_axis: int
    in_axis: int
    units: int
    inputs: int
    data_input: str
    output: str
    bias: str | None = None
    bias_node: Any = None
    groups: int = 1

    @property
    def nodes(self) -> list[Any]:
        """The layer's node, and its bias Add when it has one."""
        return [self.node] if self.bias_node is None else [self.node, self.bias_node]


def find_layer(graph: Graph, node: Any) -> Layer | None:
    """The layer ``node`` is, or None when it is not a Gemm/MatMul/Conv with a weight initializer."""
    if node.op_type == "Gemm":
        return _gemm_layer(graph, node)
    if node.op_type == "MatMul":
        return _matmul_layer(graph, node)
    if node.op_type == "Conv":
        return _conv_layer(graph, node)
    return None


def _per_unit_bias(graph: Graph, name: str, units: int) -> bool:
    return graph.is_initializer(name) and graph.array(name).size == units and graph.array(name).ndim <= 2


def _gemm_layer(graph: Graph, node: Any) -> Layer | None:
    if len(node.input) < 2 or not graph.is_initializer(node.input[1]) or _attr(node, "transA", 0):
        return None
    weight = graph.array(node.input[1])
    if weight.ndim != 2:
        return None
    out_axis, in_axis = (0, 1) if _attr(node, "transB", 0) else (1, 0)
    units = weight.shape[out_axis]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias is not None and not _per_unit_bias(graph, bias, units):
        bias = None if graph.is_initializer(bias) and graph.array(bias).size == 1 else "?"
    name = node.name or node.input[1]
    return Layer(name=name, kind="Gemm", node=node, weight=node.input[1], out_axis=out_axis, in_axis=in_axis,
                 units=units, inputs=weight.shape[in_axis], data_input=node.input[0], output=node.output[0],
                 bias=bias)


def _matmul_layer(graph: Graph, node: Any) -> Layer | None:
    if not graph.is_initializer(node.input[1]) or graph.is_constant(node.input[0]):
        return None
    weight = graph.array(node.input[1])
    if weight.ndim != 2:
        return None
    units = weight.shape[1]
    layer = Layer(name=node.name or node.input[1], kind="MatMul", node=node, weight=node.input[1], out_axis=1,
                  in_axis=0, units=units, inputs=weight.shape[0], data_input=node.input[0], output=node.output[0])
    users = graph.consumers.get(node.output[0], [])
    if len(users) == 1 and users[0].op_type == "Add" and node.output[0] not in graph.outputs:
        add = users[0]
        other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        if _per_unit_bias(graph, other, units) and graph.array(other).shape[-1] == units:
            layer.bias, layer.bias_node, layer.output = other, add, add.output[0]
    return layer


def _conv_layer(graph: Graph, node: Any) -> Layer | None:
    if len(node.input) < 2 or not graph.is_initializer(node.input[1]):
        return None
    weight = graph.array(node.input[1])
    if weight.ndim < 3:
        return None
    groups = int(_attr(node, "group", 1))
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    return Layer(name=node.name or node.input[1], kind="Conv", node=node, weight=node.input[1], out_axis=0,
                 in_axis=1, units=weight.shape[0], inputs=weight.shape[1] * groups, data_input=node.input[0],
                 output=node.output[0], bias=bias, groups=groups)


@dataclass
class Route:
    """How the units of ``layer`` reach ``consumer``: through ``steps`` only.

    ``features_per_unit`` is 1 unless a Flatten turns each channel into H*W contiguous features.
    """

    layer: Layer
    consumer: Layer
    steps: list[Any] = field(default_factory=list)
    features_per_unit: int = 1

    @property
    def batch_norms(self) -> list[Any]:
        """The BatchNormalization nodes on the route, whose parameters shrink with the units."""
        return [n for n in self.steps if n.op_type == "BatchNormalization"]


def trace_route(graph: Graph, layer: Layer) -> Route | str:
    """The route from ``layer`` to the layer that reads its units, or the reason there is none.

    Units are ``channels`` (axis 1 of a Conv output) until a Flatten makes them ``features`` (the last
    axis, as Gemm and MatMul make and read them), each channel then being ``per_unit`` features.
    """
    if layer.groups != 1:
        return f"{layer.name}: grouped convolution (group={layer.groups})"
    if layer.bias == "?":
        return f"{layer.name}: its bias is not one value per unit"
    if not graph.only_used_by(layer.weight, layer.node) or (
        layer.bias and not graph.only_used_by(layer.bias, layer.bias_node or layer.node)
    ):
        return f"{layer.name}: its weights are shared with other nodes"
    layout = "channels" if layer.kind == "Conv" else "features"
    if layer.kind == "MatMul":
        shape = graph.shapes.get(layer.output)
        rank = len(shape) if shape else None
    else:
        rank = 2 if layer.kind == "Gemm" else graph.array(layer.weight).ndim  # Conv: N, C + kernel dims
    tensor, steps, per_unit = layer.output, [], 1
    while True:
        if tensor in graph.outputs:
            return f"{layer.name}: produces the model output (output layers are never pruned)"
        users = graph.consumers.get(tensor, [])
        if len(users) != 1:
            return f"{layer.name}: its output feeds {len(users)} nodes (branch or residual connection)"
        node = users[0]
        consumer = find_layer(graph, node) if node.op_type in LAYER_OPS else None
        if consumer is not None and consumer.data_input == tensor:
            return _route_to(layer, consumer, steps, layout, per_unit)
        reason = _step_problem(graph, node, tensor, layout, rank, layer.units, per_unit)
        if reason:
            return f"{layer.name}: {reason}"
        if node.op_type == "Flatten" and layout == "channels":
            shape = graph.shapes.get(tensor)
            if not shape or len(shape) < 3 or any(d is None for d in shape[2:]):
                return f"{layer.name}: the spatial size before {node.name or 'Flatten'} is unknown"
            layout, per_unit, rank = "features", int(np.prod(shape[2:])), 2
        steps.append(node)
        tensor = node.output[0]


def _route_to(layer: Layer, consumer: Layer, steps: list[Any], layout: str, per_unit: int) -> Route | str:
    expected = layer.units * per_unit
    if layout == "channels" and consumer.kind == "Conv" and consumer.groups == 1:
        unit_word = "channels"
    elif layout == "features" and consumer.kind in ("Gemm", "MatMul"):
        unit_word = "features"
    else:
        return f"{layer.name}: {consumer.kind} {consumer.name} reads its units in a layout this pass cannot follow"
    if consumer.inputs != expected:
        return f"{layer.name}: {consumer.name} reads {consumer.inputs} {unit_word}, not {expected}"
    return Route(layer, consumer, steps, per_unit)


def _step_problem(graph: Graph, node: Any, tensor: str, layout: str, rank: int | None, units: int,
                  per_unit: int) -> str | None:
    """Why the units cannot pass through ``node`` unchanged (None when they can)."""
    op = node.op_type
    if op not in ROUTE_OPS:
        return f"{op} {node.name} sits between it and the next layer"
    params = node.input[1:5] if op == "BatchNormalization" else []
    if node.input[0] != tensor or not all(graph.is_constant(name) for name in node.input[1:] if name not in params):
        return f"{op} {node.name} mixes it with another tensor"
    if any(graph.consumers.get(name) or name in graph.outputs for name in node.output[1:]):
        return f"{op} {node.name} has a second output in use"
    if op in CHANNEL_OPS and layout != "channels":
        return f"{op} {node.name} pools a tensor whose units are not channels"
    if op == "Flatten" and (int(_attr(node, "axis", 1)) != 1 or (layout == "features" and rank != 2)):
        return f"Flatten {node.name} mixes units with other axes"
    if op == "BatchNormalization":
        # BatchNormalization normalizes axis 1: the channels, or the features of a 2-D tensor.
        if layout == "features" and rank != 2:
            return f"BatchNormalization {node.name} normalizes an axis that is not the unit axis"
        if not all(graph.is_initializer(n) and graph.only_used_by(n, node) for n in params):
            return f"BatchNormalization {node.name} has parameters that are not its own initializers"
        if per_unit > 1 or any(graph.array(n).size != units for n in params):
            return f"BatchNormalization {node.name} normalizes each feature of a flattened channel apart"
    return None


def prunable_routes(graph: Graph) -> tuple[list[Route], list[str]]:
    """Every layer whose output units can be removed, plus a reason for each layer that cannot."""
    routes, skipped = [], []
    for node in graph.nodes:
        layer = find_layer(graph, node) if node.op_type in LAYER_OPS else None
        if layer is None:
            continue
        route = trace_route(graph, layer)
        if isinstance(route, str):
            skipped.append(route)
        elif layer.units < 2:
            skipped.append(f"{layer.name}: has a single unit")
        else:
            routes.append(route)
    return routes, skipped


def unit_importance(weight: np.ndarray, out_axis: int, criterion: str) -> np.ndarray:
    """L1 or L2 norm of the weights that make each output unit."""
    rows = np.moveaxis(weight, out_axis, 0).reshape(weight.shape[out_axis], -1).astype(np.float64)
    if criterion == "l1":
        return np.abs(rows).sum(axis=1)
    return np.sqrt((rows**2).sum(axis=1))


def units_to_keep(importance: np.ndarray, ratio: float) -> np.ndarray:
    """Sorted indices of the units that stay when ``ratio`` of them (rounded) is removed; at least one stays."""
    n = importance.size
    keep = max(1, n - int(round(ratio * n)))
    order = np.argsort(-importance, kind="stable")[:keep]
    return np.sort(order)


def expand_units(keep: np.ndarray, per_unit: int) -> np.ndarray:
    """Feature indices of kept channels after a Flatten (channel c -> features c*per_unit ... )."""
    if per_unit == 1:
        return keep
    return (keep[:, None] * per_unit + np.arange(per_unit)[None, :]).ravel()


def with_initializers(model: Any, arrays: dict[str, np.ndarray], *, drop_shapes: bool = False) -> Any:
    """A copy of ``model`` whose named initializers hold ``arrays`` (cast to their stored type).

    ``drop_shapes`` removes the inferred intermediate shapes, which go stale when layers shrink.
    """
    import onnx
    from onnx import numpy_helper

    new = onnx.ModelProto()
    new.CopyFrom(model)
    for tensor in new.graph.initializer:
        if tensor.name in arrays:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
            array = np.ascontiguousarray(arrays[tensor.name], dtype=dtype)
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    if drop_shapes:
        del new.graph.value_info[:]
    return new


# --- Feeding a model and measuring how its outputs moved -------------------------------------------


@dataclass
class EvalData:
    """Inputs to run a model on, the labels when the dataset has them, and where they came from."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str

    @property
    def samples(self) -> int:
        """Number of rows of the inputs."""
        return int(next(iter(self.inputs.values())).shape[0]) if self.inputs else 0


def load_eval_data(model: Any, data: Path | None, *, max_samples: int = 512, seed: int = 0) -> EvalData:
    """The first ``max_samples`` rows of a dataset, or synthetic inputs when there is none."""
    signature = signature_from_onnx_model(model)
    if data is None:
        inputs = util.synthetic_inputs(signature, batch=min(max_samples, SYNTHETIC_ROWS), seed=seed)
        return EvalData(inputs=inputs, labels=None, source="synthetic inputs (no validation data was given)")
    feeds, labels = util.dataset_feeds(Path(data), signature, what="validation")
    inputs = {name: value[:max_samples] for name, value in feeds.items()}
    rows = len(next(iter(inputs.values())))
    labels = None if labels is None or len(labels) < rows else labels[:rows]
    return EvalData(inputs=inputs, labels=labels, source=f"the validation data ({rows} samples)")


def run_model(model: Any, inputs: dict[str, np.ndarray], *, threads: int = 2) -> list[np.ndarray]:
    """Run a model file, or an in-memory ModelProto this code built, once on CPU."""
    source = model if isinstance(model, Path) else model.SerializeToString()
    return ort.session(source, threads=threads).run(None, inputs)


def pruning_change(model: Any, src: Path, out: Path, data: Path | None, *, max_samples: int) -> dict[str, Any]:
    """How pruning moved the outputs: ``src`` (whose ModelProto is ``model``) against ``out`` on the
    first ``max_samples`` rows of ``data`` (synthetic inputs without it): ``error_data``,
    ``error_samples`` and the metrics of :func:`output_metrics`."""
    feeds = load_eval_data(model, data, max_samples=max_samples)
    before, after = run_model(Path(src), feeds.inputs), run_model(Path(out), feeds.inputs)
    if [b.shape for b in before] != [a.shape for a in after]:
        raise PassError("Pruning changed the model's output shapes; the pruned model was not kept.")
    return {"error_data": feeds.source, "error_samples": feeds.samples,
            **output_metrics(before, after, labels=feeds.labels)}


def mean_abs_error(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    """Mean absolute difference over every output value."""
    diffs = [np.abs(np.asarray(c, np.float64) - np.asarray(r, np.float64)).ravel() for r, c in zip(reference, candidate, strict=True)]
    joined = np.concatenate(diffs)
    return float(joined.mean()) if joined.size else 0.0


def output_std(outputs: list[np.ndarray]) -> float:
    """Standard deviation of every value a model returned: the scale its errors are judged against."""
    return float(np.concatenate([np.asarray(o, np.float64).ravel() for o in outputs]).std())


def output_metrics(reference: list[np.ndarray], candidate: list[np.ndarray], *, labels: np.ndarray | None,
                   task: str = "auto") -> dict[str, Any]:
    """The project's accuracy metrics of ``candidate`` against ``reference`` (workers.evaluation.accuracy),
    plus ``mean_abs_error`` and, with labels, the reference's own label metrics as ``<metric>_before``."""
    from workers.evaluation.accuracy import AccuracyInputError, compare_outputs, infer_task

    try:
        task = infer_task(reference, labels) if task == "auto" else task
        report = compare_outputs(reference, candidate, task=task, labels=labels)
        original = compare_outputs(reference, reference, task=task, labels=labels) if labels is not None else None
    except AccuracyInputError as exc:
        raise PassInputError(f"The validation data cannot be compared with the outputs: {exc}") from exc
    metrics: dict[str, Any] = {"task": task, **report.metrics, "finite": report.finite,
                               "mean_abs_error": mean_abs_error(reference, candidate)}
    for name in ("accuracy", "label_mae", "pearson"):
        if original is not None and name in original.metrics:
            metrics[f"{name}_before"] = original.metrics[name]
    return metrics
