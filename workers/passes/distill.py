"""Knowledge distillation into a narrower student built from the teacher's own layer chain.

The teacher ONNX must be a single chain (MLP or CNN): Gemm / MatMul(+Add) / Conv layers with
activations, pooling, BatchNormalization, Flatten and an optional final Softmax. The student is the
same chain in torch with every hidden width multiplied by ``width`` (input and output kept), started
from the teacher's strongest units (the structured-pruning slice, L1 norm), then trained against
the teacher's outputs computed with onnxruntime:

- classification: KL divergence between softened distributions at ``temperature`` (scaled by T^2),
  mixed as ``(1 - alpha) * KD + alpha * cross-entropy`` when the data has ``labels``;
- regression: ``(1 - alpha) * MSE(student, teacher) + alpha * MSE(student, labels)`` (labels optional).

Early stopping watches the validation loss with ``patience``; training also stops once it has run
``max_time_s`` seconds. The best epoch's weights (epoch 0 being the teacher-initialised student) are
exported with torch.onnx (TorchScript exporter, opset 17, same input/output names, dynamic batch).
Without ``train_data`` the student learns from 80 % of ``validation_data`` and is stopped and measured
on the rest; the notes say so.

Measured on the samples: the teacher-initialised CNN student reaches a validation loss of 0.044 in 20
epochs where a randomly initialised one is at 0.17 (same accuracy after 60). The default lr suits the
CNN; the 2056-input MLP overfits its 410 training rows within 3 epochs at lr 3e-3 and does better at
3e-4 (the notes suggest it when the best epoch comes that early).
"""

from __future__ import annotations

import copy
import io
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workers import ort
from workers.formats import FormatError, model_inputs, read_npz, signature_from_onnx_model
from workers.passes import onnx_chain
from workers.passes.base import PassError, PassInputError, PassResult, UnsupportedModelError, data_field
from workers.passes.frame import PassRun

PASS_NAME = "distill"
TASKS = ("auto", "classification", "regression")
CHAIN_OPS = frozenset(
    {"Gemm", "MatMul", "Conv", "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Gelu", "Softplus", "Identity",
     "Dropout", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "BatchNormalization", "Softmax",
     "LogSoftmax", "Constant"}
)
SMALL_MODEL = 1_000_000  # parameters
HOLD_OUT = 0.2  # share of the only dataset kept aside for early stopping when the other one is missing


@dataclass(frozen=True)
class Config:
    """Student width, training schedule and the distillation loss (see the module docstring)."""

    width: float = 0.5
    epochs: int = 60
    patience: int = 8
    temperature: float = 4.0
    alpha: float = 0.5
    lr: float = 3e-3
    batch_size: int = 64
    task: str = "auto"
    max_time_s: float = 300.0
    seed: int = 0
    train_data: Path | None = data_field()
    validation_data: Path | None = data_field()

    def __post_init__(self) -> None:
        for name in ("train_data", "validation_data"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        checks = [
            ("width", 0 < _number(self.width) <= 1, "a fraction of each hidden width in (0, 1]"),
            ("epochs", _integer(self.epochs) >= 1, "an integer >= 1"),
            ("patience", _integer(self.patience) >= 1, "an integer >= 1"),
            ("temperature", _number(self.temperature) > 0, "a positive number"),
            ("alpha", 0 <= _number(self.alpha) <= 1, "a weight in [0, 1]"),
            ("lr", _number(self.lr) > 0, "a positive number"),
            ("batch_size", _integer(self.batch_size) >= 1, "an integer >= 1"),
            ("task", self.task in TASKS, f"one of {', '.join(TASKS)}"),
            ("max_time_s", _number(self.max_time_s) > 0, "a positive number of seconds"),
            ("seed", _integer(self.seed) >= 0, "an integer >= 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise PassInputError(f"distill option {name} must be {expected}; got {getattr(self, name)!r}.")


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _integer(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def run(src: Path, dst: Path, config: Config) -> PassResult:
    """Distill the teacher at ``src`` into a narrower student written to ``dst / model.onnx``."""
    import torch

    threads = torch.get_num_threads()
    try:
        with PassRun(PASS_NAME, src, dst, config) as job:
            return _distill(job, config)
    finally:
        torch.set_num_threads(threads)


def _distill(job: PassRun, config: Config) -> PassResult:
    import torch

    teacher = job.load()
    graph = onnx_chain.Graph(teacher)
    try:
        steps = read_chain(graph, _label(job.src))
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(str(exc) + onnx_chain.fused_hint(teacher)) from exc
    in_name, out_name = _io_names(teacher)
    train, val, notes = _datasets(teacher, config)
    session = ort.session(job.src, threads=2)
    train.targets, val.targets = _teacher_outputs(session, train.x), _teacher_outputs(session, val.x)
    task = _task(config.task, steps, train.targets)

    torch.manual_seed(config.seed)
    teacher_torch = chain_to_torch(graph, steps)
    _check_reproduces(teacher_torch, val.x[:64], val.targets[:64])
    student = narrow(teacher_torch, config.width, torch.from_numpy(train.x[:2]))
    # Small students train fastest on one thread; extra threads only spin, worst on a shared worker.
    torch.set_num_threads(1 if _params(student) < SMALL_MODEL else min(4, os.cpu_count() or 1))
    logits_head = task == "classification" and isinstance(student[-1], (torch.nn.Softmax, torch.nn.LogSoftmax))
    loss_fn = _loss(task, config, teacher_logits=logits_head, last=student[-1] if logits_head else None)
    history = train_student(student, train, val, loss_fn, config, task=task, drop_last_module=logits_head)

    out = job.save(export_student(student, train.x[:2], in_name, out_name))
    student_out = _teacher_outputs(ort.session(out, threads=2), val.x)
    metrics = _metrics(job, teacher, task, val, student_out, history)
    return job.result(metrics, notes + _notes(config, history, metrics, task, val))


def _notes(config: Config, history: dict[str, Any], metrics: dict[str, Any], task: str, val: _Split) -> list[str]:
    notes = []
    if history["stopped"] == "patience" and history["best_epoch"] <= 2:
        notes.append(
            f"The validation loss was lowest after epoch {history['best_epoch']} and then rose: the student "
            f"overfits or lr={config.lr:g} is too high for this model; a lower lr (e.g. {config.lr / 10:g}) may do better."
        )
    if history["stopped"] == "max_time_s":
        notes.append(f"Training stopped at max_time_s={config.max_time_s:g} after {history['epochs_run']} epoch(s).")
    notes.append(
        f"Student of width {config.width:g}: {metrics['student_params']} parameters vs the teacher's "
        f"{metrics['teacher_params']} ({metrics['param_ratio']:.2f}x), task {task}; metrics are on {val.source}."
    )
    return notes


def _label(src: Path) -> str:
    src = Path(src)
    return f"{src.parent.name}/{src.name}" if src.parent.name else src.name


# --- Reading the teacher ------------------------------------------------------------------------------


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


def _io_names(model: Any) -> tuple[str, str]:
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


def _check_reproduces(model: Any, x: np.ndarray, expected: np.ndarray) -> None:
    """The torch copy of the teacher must give the teacher's outputs, or the student would learn a wrong shape."""
    import torch

    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    tolerance = 1e-3 * (1 + float(np.abs(expected).max()))
    if got.shape != expected.shape or float(np.abs(got - expected).max()) > tolerance:
        raise PassError("The teacher's layer chain could not be rebuilt in torch with the same outputs; distillation stopped.")


# --- Building the student -----------------------------------------------------------------------------


def narrow(teacher: Any, width: float, example: Any) -> Any:
    """A copy of ``teacher`` with every hidden layer's units cut to ``width`` (strongest L1 units kept)."""
    import torch

    nn = torch.nn
    shapes, x = [], example
    with torch.no_grad():
        for module in teacher:
            shapes.append(tuple(x.shape))
            x = module(x)
    layer_types = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    last_layer = max(i for i, m in enumerate(teacher) if isinstance(m, layer_types))
    keep, per_unit, modules = None, 1, []
    for index, module in enumerate(teacher):
        module = copy.deepcopy(module)
        if isinstance(module, layer_types):
            module, keep = _narrow_layer(module, keep, per_unit, None if index == last_layer else width)
            per_unit = 1
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and keep is not None:
            module = _narrow_norm(module, onnx_chain.expand_units(keep, per_unit))
        elif isinstance(module, nn.Flatten) and keep is not None and len(shapes[index]) > 2:
            per_unit = int(np.prod(shapes[index][2:]))
        modules.append(module)
    return nn.Sequential(*modules)


def _params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _narrow_layer(module: Any, keep: np.ndarray | None, per_unit: int, width: float | None) -> tuple[Any, Any]:
    import torch

    weight = module.weight.detach().numpy()
    bias = None if module.bias is None else module.bias.detach().numpy()
    if keep is not None:
        weight = weight[:, onnx_chain.expand_units(keep, per_unit)]
    out_keep = None
    if width is not None:
        importance = onnx_chain.unit_importance(module.weight.detach().numpy(), 0, "l1")
        out_keep = onnx_chain.units_to_keep(importance, 1 - width)
        weight = weight[out_keep]
        bias = None if bias is None else bias[out_keep]
    if isinstance(module, torch.nn.Linear):
        new = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    else:
        new = type(module)(weight.shape[1], weight.shape[0], module.kernel_size, stride=module.stride,
                           padding=module.padding, dilation=module.dilation, bias=bias is not None)
    with torch.no_grad():
        new.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
        if bias is not None:
            new.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))
    return new, out_keep


def _narrow_norm(module: Any, keep: np.ndarray) -> Any:
    import torch

    new = type(module)(keep.size, eps=module.eps, momentum=module.momentum)
    index = torch.from_numpy(keep)
    new.load_state_dict({k: v[index] if v.ndim else v for k, v in module.state_dict().items()})
    return new


# --- Data and training --------------------------------------------------------------------------------


@dataclass
class _Split:
    x: np.ndarray
    labels: np.ndarray | None
    source: str
    targets: np.ndarray | None = None


def _read_split(model: Any, path: Path, role: str) -> _Split:
    signature = signature_from_onnx_model(model)
    try:
        arrays = read_npz(path)
    except FormatError as exc:
        raise PassInputError(f"{role}: {exc}") from exc
    name = signature.inputs[0].name
    if name not in arrays:
        raise PassInputError(f"{role} {path.name} has no array named {name!r}; it has {', '.join(sorted(arrays))}.")
    x = model_inputs(arrays, signature)[name].astype(np.float32, copy=False)
    labels = arrays.get("labels")
    if labels is not None and len(labels) != len(x):
        raise PassInputError(f"{role} {path.name}: labels has {len(labels)} rows but {name} has {len(x)}.")
    return _Split(x=x, labels=labels, source=f"{role} ({path.name}, {len(x)} samples)")


def _split(data: _Split, share: float, seed: int, role: str) -> tuple[_Split, _Split]:
    order = np.random.default_rng(seed).permutation(len(data.x))
    cut = len(order) - max(1, int(round(share * len(order))))
    if cut < 1:
        raise PassInputError(f"{role} has {len(data.x)} sample(s); distillation needs at least 2 to train and validate.")
    parts = []
    for index, what in ((order[:cut], "training part"), (order[cut:], "held-out part")):
        labels = None if data.labels is None else data.labels[index]
        parts.append(_Split(x=data.x[index], labels=labels, source=f"the {what} of {role} ({len(index)} samples)"))
    return parts[0], parts[1]


def _datasets(model: Any, config: Config) -> tuple[_Split, _Split, list[str]]:
    if config.train_data is None and config.validation_data is None:
        raise PassInputError("distill needs train_data or validation_data: inputs the student can learn from.")
    if config.train_data is not None and config.validation_data is not None:
        return (_read_split(model, config.train_data, "train_data"),
                _read_split(model, config.validation_data, "validation_data"), [])
    if config.train_data is None:
        train, val = _split(_read_split(model, config.validation_data, "validation_data"), HOLD_OUT, config.seed,
                            "validation_data")
        return train, val, [
            f"No train_data: the student was trained on {1 - HOLD_OUT:.0%} of validation_data and early-stopped and "
            f"measured on the other {HOLD_OUT:.0%}; later accuracy checks on the full validation set partly see "
            "training data."
        ]
    train, val = _split(_read_split(model, config.train_data, "train_data"), HOLD_OUT, config.seed, "train_data")
    return train, val, [f"No validation_data: early stopping and metrics use a {HOLD_OUT:.0%} hold-out of train_data."]


def _teacher_outputs(session: Any, x: np.ndarray, chunk: int = 2048) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + chunk]})[0] for i in range(0, len(x), chunk)])


def _task(task: str, steps: list[tuple[Any, Any]], outputs: np.ndarray) -> str:
    if task != "auto":
        return task
    last_op = steps[-1][0].op_type
    return "classification" if outputs.ndim == 2 and outputs.shape[1] > 1 and last_op != "Sigmoid" else "regression"


def _loss(task: str, config: Config, *, teacher_logits: bool, last: Any) -> Any:
    """loss(student_out, teacher_out, labels or None) for the task (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    temperature, alpha = config.temperature, config.alpha

    def classification(student: Any, teacher: Any, labels: Any) -> Any:
        if teacher_logits:  # the chain ends in (Log)Softmax: the teacher gave probabilities
            teacher = teacher if isinstance(last, torch.nn.LogSoftmax) else torch.log(teacher.clamp_min(1e-12))
        soft = F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                        reduction="batchmean", log_target=True) * temperature**2
        if labels is None:
            return soft
        return (1 - alpha) * soft + alpha * F.cross_entropy(student, labels)

    def regression(student: Any, teacher: Any, labels: Any) -> Any:
        mimic = F.mse_loss(student, teacher)
        return mimic if labels is None else (1 - alpha) * mimic + alpha * F.mse_loss(student, labels)

    return classification if task == "classification" else regression


def _torch_labels(split: _Split, task: str, outputs_shape: tuple[int, ...]) -> Any:
    import torch

    if split.labels is None:
        return None
    if task == "classification":
        labels = split.labels.argmax(1) if split.labels.ndim == 2 else split.labels.reshape(-1)
        return torch.from_numpy(labels.astype(np.int64))
    if split.labels.size != int(np.prod(outputs_shape)):
        return None
    return torch.from_numpy(split.labels.reshape(outputs_shape).astype(np.float32))


def train_student(student: Any, train: _Split, val: _Split, loss_fn: Any, config: Config, *, task: str,
                  drop_last_module: bool) -> dict[str, Any]:
    """Train with Adam and early stopping on the validation loss; the best epoch's weights are restored."""
    import torch

    started = time.perf_counter()
    xs, ts = torch.from_numpy(train.x), torch.from_numpy(train.targets)
    ys = _torch_labels(train, task, train.targets.shape)
    xv, tv = torch.from_numpy(val.x), torch.from_numpy(val.targets)
    yv = _torch_labels(val, task, val.targets.shape)
    body = student[:-1] if drop_last_module else student
    optimizer = torch.optim.Adam(student.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    def validation_loss() -> float:
        student.eval()
        with torch.no_grad():
            return float(loss_fn(body(xv), tv, yv))

    # Epoch 0 is the teacher-initialised student: training must beat it to replace it.
    best, best_state, best_epoch, bad, epochs_run, stopped = validation_loss(), copy.deepcopy(student.state_dict()), 0, 0, 0, "epochs"
    for epoch in range(1, config.epochs + 1):
        student.train()
        order = torch.randperm(len(xs), generator=generator)
        for start in range(0, len(xs), config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2 and len(xs) > 1:
                continue  # a batch of one breaks BatchNorm and adds noise
            optimizer.zero_grad()
            loss_fn(body(xs[idx]), ts[idx], None if ys is None else ys[idx]).backward()
            optimizer.step()
            if time.perf_counter() - started > config.max_time_s:
                break
        epochs_run = epoch
        val_loss = validation_loss()
        if val_loss < best:
            best, best_state, best_epoch, bad = val_loss, copy.deepcopy(student.state_dict()), epoch, 0
        else:
            bad += 1
        if time.perf_counter() - started > config.max_time_s:
            stopped = "max_time_s"
            break
        if bad >= config.patience:
            stopped = "patience"
            break
    student.load_state_dict(best_state)
    student.eval()
    return {"epochs_run": epochs_run, "best_epoch": best_epoch, "best_val_loss": best, "stopped": stopped,
            "train_time_s": time.perf_counter() - started}


def export_student(student: Any, example: np.ndarray, in_name: str, out_name: str) -> Any:
    """The student as an ONNX ModelProto (TorchScript exporter, opset 17, dynamic batch axis)."""
    import onnx
    import torch

    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is chosen on purpose
        torch.onnx.export(student.eval(), (torch.from_numpy(example),), buffer, dynamo=False, opset_version=17,
                          input_names=[in_name], output_names=[out_name],
                          dynamic_axes={in_name: {0: "batch"}, out_name: {0: "batch"}})
    return onnx.load_model_from_string(buffer.getvalue())


def _metrics(job: PassRun, teacher: Any, task: str, val: _Split, student_out: np.ndarray,
             history: dict[str, Any]) -> dict[str, Any]:
    import onnx

    student = onnx.load(str(job.out))
    teacher_params, student_params = onnx_chain.count_params(teacher), onnx_chain.count_params(student)
    labels = val.labels
    if labels is not None and task == "classification" and labels.ndim == 2 and labels.shape[1] > 1:
        labels = labels.argmax(1)  # one-hot rows -> class ids
    compared = onnx_chain.output_metrics([val.targets], [student_out], labels=labels, task=task)
    renamed = {"accuracy": "student_accuracy", "accuracy_before": "teacher_accuracy", "label_mae": "student_mae",
               "label_mae_before": "teacher_mae", "pearson": "student_pearson", "pearson_before": "teacher_pearson"}
    return {
        "teacher_params": teacher_params,
        "student_params": student_params,
        "param_ratio": student_params / teacher_params if teacher_params else 1.0,
        **job.sizes(),
        **history,
        "validation_samples": int(len(val.x)),
        **{renamed.get(k, k): v for k, v in compared.items()},
    }
