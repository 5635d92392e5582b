"""quantize_dynamic: INT8 weights, activations quantized at run time (no calibration data).

Uses ``onnxruntime.quantization.quantize_dynamic`` after ORT's quantization pre-processing
(symbolic shape inference + basic optimization) when that succeeds; when it fails the model is
quantized as it is and a note says so. ``extra_options={"DefaultTensorType": FLOAT}`` is always
passed: graphs already fused by onnxruntime (FusedGemm ...) carry tensors without type info that
the quantizer otherwise refuses.

Defaults follow what was measured on this project's models: per-channel weights keep transformer
accuracy where per-tensor QInt8 loses it, at the same speed; ``reduce_range`` (7-bit weights, for
CPUs without VNNI) alone makes accuracy worse.

The output is checked against the source on a few real validation rows when the job has a
validation set (``check_data``), else on synthetic inputs in the model's domain: a sanity figure
(``max_abs_error``); the accuracy claim is the job's evaluation.

Every intermediate file (pre-processed model, ORT's ``-inferred`` copy) lives in a scratch
directory under ``dst`` that is removed afterwards; the source file is only read.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.passes import _onnx_util as util
from workers.passes.base import PassError, PassInputError, PassResult, UnsupportedModelError, data_field, save_onnx
from workers.passes.frame import PassRun

NAME = "quantize_dynamic"
WEIGHT_TYPES = ("qint8", "quint8")


@dataclass(frozen=True)
class Config:
    """Options of dynamic INT8 quantization (weights int8, activations quantized per batch at run time)."""

    weight_type: str = "qint8"
    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] = ()  # empty: onnxruntime's default set for dynamic quantization
    nodes_to_exclude: tuple[str, ...] = ()
    check_data: Path | None = data_field()  # validation rows the output is checked on (the job fills it)

    def __post_init__(self) -> None:
        if isinstance(self.check_data, str):
            object.__setattr__(self, "check_data", Path(self.check_data))
        if self.weight_type not in WEIGHT_TYPES:
            raise PassInputError(f"Unknown weight_type {self.weight_type!r}; use one of {', '.join(WEIGHT_TYPES)}.")
        for name in ("op_types", "nodes_to_exclude"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise PassInputError(f"{name} must be a list of names; got {value!r}.")
            object.__setattr__(self, name, tuple(value))


def quant_type(name: str) -> Any:
    """onnxruntime's QuantType for a config name (qint8 / quint8)."""
    from onnxruntime.quantization import QuantType

    return {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[name]


# ORT's symbolic shape inference, when it cannot finish, saves "sym_shape_infer_temp.onnx" and
# uuid-named weight files into the *working directory*. Pre-processing therefore runs with the
# working directory inside the pass's scratch directory; the lock keeps two passes of one process
# from moving it under each other.
_CWD_LOCK = threading.Lock()


def preprocess(src: Path, work: Path) -> tuple[Path, str | None]:
    """ORT's quantization pre-processing into ``work`` and a note when it was partial or skipped.

    Symbolic shape inference fails on graphs fused by onnxruntime (contrib ops); the second try
    keeps ONNX shape inference and the optimizer, the last resort quantizes the model as it is.
    """
    target = (work / "preprocessed.onnx").resolve()
    try:
        _pre_process(src, target, skip_symbolic_shape=False)
        return target, None
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises bare Exception here
        first = f"{exc.__class__.__name__}: {str(exc)[:200]}"
    try:
        _pre_process(src, target, skip_symbolic_shape=True)
        return target, f"Quantization pre-processing ran without symbolic shape inference ({first})."
    except Exception as exc:  # noqa: BLE001
        fallback = work / "input.onnx"
        save_onnx(_load(src), fallback)
        return fallback, f"Quantization pre-processing was skipped ({first}; then {exc.__class__.__name__}: {str(exc)[:200]})."


def _pre_process(src: Path, target: Path, *, skip_symbolic_shape: bool) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _CWD_LOCK, contextlib.chdir(target.parent), util.quiet():
        quant_pre_process(str(Path(src).resolve()), str(target), skip_symbolic_shape=skip_symbolic_shape)
    save_onnx(_load(target), target)  # pin the IR version for the sessions that follow


def _load(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


def prepare(src: Path, work: Path, nodes_to_exclude: tuple[str, ...]) -> tuple[Path, list[str]]:
    """The pre-processed model in ``work`` and notes (pre-processing, exclusions naming no node)."""
    import onnx

    model_path, note = preprocess(src, work)
    notes = [note] if note else []
    names = {node.name for node in onnx.load(str(model_path), load_external_data=False).graph.node}
    unknown = sorted(set(nodes_to_exclude) - names)
    if unknown:
        notes.append(f"nodes_to_exclude names no node of the graph: {', '.join(unknown)}.")
    return model_path, notes


def quantize(model_path: Path, out_path: Path, config: Config, work: Path) -> Any:
    """Quantize a (pre-processed) model file under ``work`` and save it to ``out_path``."""
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    raw = work / f"dynamic-{out_path.parent.name}.onnx"
    excluded = list(config.nodes_to_exclude)
    if excluded:
        # The dynamic quantizer rewrites Gemm as MatMul (+ Add) named "<gemm>_MatMul" before it
        # applies the exclusions, so a Gemm is excluded under that name too.
        gemms = {n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node if n.op_type == "Gemm"}
        excluded += [f"{name}_MatMul" for name in config.nodes_to_exclude if name in gemms]
    try:
        with util.quiet():
            quantize_dynamic(
                str(model_path),
                str(raw),
                op_types_to_quantize=list(config.op_types) or None,
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                weight_type=quant_type(config.weight_type),
                nodes_to_exclude=excluded or None,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedModelError(f"onnxruntime's dynamic quantization failed: {str(exc)[:600]}") from exc
    model = onnx.load(str(raw))
    raw.unlink(missing_ok=True)
    save_onnx(model, out_path)
    return model


def _notes(config: Config) -> list[str]:
    notes = []
    if not config.per_channel:
        notes.append("Per-tensor weights: on transformer-class models per_channel=True keeps accuracy at the same speed.")
    if config.reduce_range:
        notes.append("reduce_range (7-bit weights) only helps CPUs without VNNI and costs accuracy.")
    return notes


def run(src: Path, dst: Path, config: Config | None = None) -> PassResult:
    """Quantize ``src`` dynamically into ``dst/model.onnx``; the source file is only read."""
    config = config or Config()
    with PassRun(NAME, src, dst, config) as job:
        source = job.load()
        with util.scratch_dir(job.dst) as work:
            model_path, notes = prepare(job.src, work, config.nodes_to_exclude)
            quantized = quantize(model_path, job.output(), config, work)
        metrics = {**job.sizes(ratio=True), "quantized_nodes": util.quantized_node_count(quantized)}
        if metrics["quantized_nodes"] == 0:
            raise util.nothing_quantized(source, "Dynamic quantization", config.op_types)
        error, _, check_note = job.check_error(source)
        if error == float("inf"):
            on = "validation rows" if job.check_data else "synthetic inputs"
            raise PassError(f"The quantized model produces non-finite outputs on {on}.")
        metrics["max_abs_error"] = error  # a sanity figure on a few rows, not an accuracy claim
        notes += ([check_note] if check_note else []) + _notes(config)
        return job.result(metrics, notes)
