"""The distillation student: narrowed from the teacher, trained against its outputs, exported.

``config`` below is the distill pass's ``Config`` (width, schedule, loss weights, datasets).
"""

from __future__ import annotations

import copy
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workers.formats import FormatError, model_inputs, read_npz, signature_from_onnx_model
from workers.passes import onnx_chain
from workers.passes.base import PassInputError

HOLD_OUT = 0.2  # share of the only dataset kept aside for early stopping when the other one is missing


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


def param_count(module: Any) -> int:
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
class Split:
    x: np.ndarray
    labels: np.ndarray | None
    source: str
    targets: np.ndarray | None = None


def _read_split(model: Any, path: Path, role: str) -> Split:
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
    return Split(x=x, labels=labels, source=f"{role} ({path.name}, {len(x)} samples)")


def _split(data: Split, share: float, seed: int, role: str) -> tuple[Split, Split]:
    order = np.random.default_rng(seed).permutation(len(data.x))
    cut = len(order) - max(1, int(round(share * len(order))))
    if cut < 1:
        raise PassInputError(f"{role} has {len(data.x)} sample(s); distillation needs at least 2 to train and validate.")
    parts = []
    for index, what in ((order[:cut], "training part"), (order[cut:], "held-out part")):
        labels = None if data.labels is None else data.labels[index]
        parts.append(Split(x=data.x[index], labels=labels, source=f"the {what} of {role} ({len(index)} samples)"))
    return parts[0], parts[1]


def datasets(model: Any, config: Any) -> tuple[Split, Split, list[str]]:
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


def teacher_outputs(session: Any, x: np.ndarray, chunk: int = 2048) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + chunk]})[0] for i in range(0, len(x), chunk)])


def resolve_task(task: str, steps: list[tuple[Any, Any]], outputs: np.ndarray) -> str:
    if task != "auto":
        return task
    last_op = steps[-1][0].op_type
    return "classification" if outputs.ndim == 2 and outputs.shape[1] > 1 and last_op != "Sigmoid" else "regression"


def loss_function(task: str, config: Any, *, teacher_logits: bool, last: Any) -> Any:
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


def _torch_labels(split: Split, task: str, outputs_shape: tuple[int, ...]) -> Any:
    import torch

    if split.labels is None:
        return None
    if task == "classification":
        labels = split.labels.argmax(1) if split.labels.ndim == 2 else split.labels.reshape(-1)
        return torch.from_numpy(labels.astype(np.int64))
    if split.labels.size != int(np.prod(outputs_shape)):
        return None
    return torch.from_numpy(split.labels.reshape(outputs_shape).astype(np.float32))


def train_student(student: Any, train: Split, val: Split, loss_fn: Any, config: Any, *, task: str,
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
