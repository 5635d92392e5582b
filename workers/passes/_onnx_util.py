"""Helpers shared by the ONNX passes (export, graph, quantize_*, fp16). Pure: no Django.

Private to ``workers.passes`` (and ``workers.evaluation.prune_advice``, which reads its model as
the pruning passes do): reading a pass's ONNX input, synthetic and dataset feeds, output
comparison, a scratch directory under ``dst``, and small facts about graphs (node counts,
quantized nodes, sizes).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from workers import ort
from workers.formats import FormatError, Signature, model_inputs, read_npz, signature_from_onnx_model
from workers.passes.base import PassInputError, UnsupportedModelError

# Ops that compute on integers (QOperator / dynamic formats); a QDQ graph is counted differently.
INTEGER_OPS = frozenset({
    "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul",
    "QLinearConv", "QGemm", "QAttention", "DynamicQuantizeLSTM", "QEmbedLayerNormalization",
    "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool",
    "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSoftmax", "QLinearWhere", "QLinearReduceMean",
    "QGather",
})
QUANT_MARKERS = INTEGER_OPS | {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# Ops whose weights quantization passes rank and exclude (the bulk of a model's size and error).
WEIGHT_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "FusedGemm", "FusedConv", "FusedMatMul", "Attention")

_FLOAT = 1  # onnx.TensorProto.FLOAT
_SYNTHETIC_DIM = 2
# Synthetic integers stay in the range the input's role allows: token types index a table of two
# rows, ids a vocabulary (any real one has 100 entries), masks are 1 (every token real); other
# integers (indices, counts) get 0..3.
_SYNTHETIC_INT_HIGH = 4
_SYNTHETIC_TYPE_HIGH = 2
_SYNTHETIC_ID_HIGH = 100
# Validation rows a pass checks its output on (a model with a fixed batch takes that many instead).
CHECK_ROWS = 8


def load_onnx_input(src: Path, pass_name: str) -> Any:
    """The pass's source model as an onnx.ModelProto (TorchScript and unreadable files are refused)."""
    import onnx

    src = Path(src)
    if not src.is_file():
        raise PassInputError(f"The {pass_name} pass was given {src}, which is not a file.")
    if zipfile.is_zipfile(src):
        raise UnsupportedModelError(
            f"The {pass_name} pass takes an ONNX model; {src.name} is a TorchScript archive. "
            "Run the export pass first."
        )
    try:
        return onnx.load(str(src))
    except Exception as exc:  # protobuf DecodeError and friends
        raise PassInputError(f"The {pass_name} pass could not read {src.name} as ONNX: {exc}") from exc


def require_float_model(model: Any, pass_name: str) -> None:
    """Refuse graphs that are already quantized or hold no float32 weights."""
    quant = sorted({n.op_type for n in model.graph.node if n.op_type in QUANT_MARKERS})
    if quant:
        raise UnsupportedModelError(
            f"The {pass_name} pass takes a float32 model; this one is already quantized "
            f"(it has {', '.join(quant)}). Quantize the float32 model instead."
        )
    weights = [init for init in model.graph.initializer if init.dims and int(np.prod(init.dims)) > 1]
    if weights and not any(init.data_type == _FLOAT for init in weights):
        raise UnsupportedModelError(
            f"The {pass_name} pass takes a float32 model; this one has no float32 weights "
            "(float16 or integer only). Use the float32 model."
        )


def node_count(model: Any) -> int:
    """Number of nodes in the main graph."""
    return len(model.graph.node)


def quantized_node_count(model: Any) -> int:
    """Nodes that compute with quantized weights: integer ops, plus (QDQ) float ops fed by a
    DequantizeLinear of an initializer (a stored int8 weight)."""
    initializers = {init.name for init in model.graph.initializer}
    dq_of_weight = {
        node.output[0]
        for node in model.graph.node
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] in initializers
    }
    count = 0
    for node in model.graph.node:
        if node.op_type in INTEGER_OPS:
            count += 1
        elif node.op_type not in QUANT_MARKERS and any(name in dq_of_weight for name in node.input):
            count += 1
    return count


def prune_opset_imports(model: Any) -> Any:
    """Drop opset imports of domains no node uses (ORT adds every domain it knows)."""
    used = {node.domain for node in model.graph.node} | {""}
    for function in model.functions:
        used.add(function.domain)
        used.update(node.domain for node in function.node)
    keep = [op for op in model.opset_import if op.domain in used or op.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    return model


@contextlib.contextmanager
def scratch_dir(dst: Path) -> Iterator[Path]:
    """A private directory under ``dst`` for intermediate files; removed on the way out."""
    path = Path(dst) / f".work-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow the progress prints of onnxruntime's quantization tools and the warnings they log on
    the root logger (a 1-D LayerNorm weight "out-of-range" for per-channel axis 1, which it then
    quantizes per tensor): a job's log and the demo's output would otherwise carry dozens of them."""
    root = logging.getLogger()
    root.addFilter(_not_quantizer_chatter)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeFilter(_not_quantizer_chatter)


def _not_quantizer_chatter(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


def _dim(value: int | str, batch: int) -> int:
    return value if isinstance(value, int) and value > 0 else batch


def _synthetic_ints(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Integers in the range an input of this name takes (see the constants above)."""
    lowered = name.lower()
    if "mask" in lowered:
        return np.ones(shape, dtype=np.int64)
    if "type" in lowered:
        return rng.integers(0, _SYNTHETIC_TYPE_HIGH, size=shape)
    high = _SYNTHETIC_ID_HIGH if "id" in lowered else _SYNTHETIC_INT_HIGH
    return rng.integers(0, high, size=shape)


def synthetic_inputs(signature: Signature, *, batch: int = _SYNTHETIC_DIM, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs built from the signature alone: symbolic dims -> ``batch``; floats ~ N(0, 1);
    ints -> values in the range their name implies (token types 0..1, ids 0..99, masks 1, others
    0..3); bools -> random."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        shape = tuple(_dim(d, batch) for d in spec.shape)
        if spec.dtype in ("float32", "float16", "float64"):
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == "bool":
            feeds[spec.name] = rng.random(shape) < 0.5
        elif spec.dtype in ("int8", "int16", "int32", "int64", "uint8"):
            feeds[spec.name] = _synthetic_ints(spec.name, shape, rng).astype(spec.dtype)
        else:
            raise UnsupportedModelError(f"Input {spec.name!r} has element type {spec.dtype}, which cannot be synthesized.")
    return feeds


def cast_feeds(feeds: dict[str, np.ndarray], signature: Signature) -> dict[str, np.ndarray]:
    """The same values cast to another model's input types (e.g. float16 inputs)."""
    return {spec.name: feeds[spec.name].astype(spec.dtype, copy=False) for spec in signature.inputs}


def dataset_feeds(path: Path, signature: Signature, *, what: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The arrays of a dataset that feed the model (cast to its types), and its labels if any."""
    try:
        arrays = read_npz(Path(path))
    except FormatError as exc:
        raise PassInputError(f"The {what} dataset cannot be used: {exc}") from exc
    missing = [name for name in signature.input_names if name not in arrays]
    if missing:
        raise PassInputError(
            f"The {what} dataset has no array named {', '.join(missing)} (the model's inputs are "
            f"{', '.join(signature.input_names)}); it has {', '.join(sorted(arrays)) or 'no arrays'}."
        )
    feeds = model_inputs(arrays, signature)
    rows = {len(v) for v in feeds.values()}
    if len(rows) != 1 or 0 in rows:
        raise PassInputError(f"The {what} dataset's input arrays must have the same, non-zero number of rows.")
    return feeds, arrays.get("labels")


def fixed_batch(signature: Signature) -> int | None:
    """The model's fixed first dim (e.g. 1), or None when the batch axis is symbolic."""
    for spec in signature.inputs:
        if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0:
            return spec.shape[0]
    return None


def batches(feeds: dict[str, np.ndarray], size: int, *, rows: int | None = None,
            exact: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Slices of the feeds of ``size`` rows (the short tail is dropped when ``exact``)."""
    total = min(len(v) for v in feeds.values()) if rows is None else rows
    for start in range(0, total, size):
        stop = min(start + size, total)
        if exact and stop - start < size:
            return
        yield {name: value[start:stop] for name, value in feeds.items()}


def run_batched(session: Any, feeds: dict[str, np.ndarray], *, batch: int = 64,
                fixed: int | None = None) -> list[np.ndarray]:
    """Run a session over all rows of the feeds in batches and concatenate each output."""
    chunks = [session.run(None, part) for part in batches(feeds, fixed or batch, exact=fixed is not None)]
    if not chunks:
        raise PassInputError("The dataset has fewer rows than the model's fixed batch size.")
    return [np.concatenate([chunk[i] for chunk in chunks]) for i in range(len(chunks[0]))]


def max_abs_error(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    """Largest absolute difference over all outputs; inf when shapes differ or the candidate is
    non-finite where the reference is finite."""
    worst = 0.0
    for ref, cand in zip(reference, candidate, strict=True):
        if np.shape(ref) != np.shape(cand):
            return float("inf")
        if np.size(ref) == 0:
            continue
        ref64, cand64 = np.asarray(ref, dtype=np.float64), np.asarray(cand, dtype=np.float64)
        finite = np.isfinite(ref64)  # positions where the reference itself is Inf/NaN are not compared
        if not np.all(np.isfinite(cand64[finite])):
            return float("inf")
        if np.any(finite):
            worst = max(worst, float(np.max(np.abs(cand64[finite] - ref64[finite]))))
    return worst


def max_abs_value(outputs: list[np.ndarray]) -> float:
    """Largest finite |value| over all outputs (0 when there is none): the scale of a tolerance."""
    values = []
    for output in outputs:
        array = np.abs(np.asarray(output, dtype=np.float64))
        array = array[np.isfinite(array)]
        if array.size:
            values.append(float(np.max(array)))
    return max(values, default=0.0)


def file_size(path: Path) -> int:
    """Size of a file in bytes."""
    return os.path.getsize(path)


def signature_of(model: Any) -> Signature:
    """The signature of a loaded onnx.ModelProto."""
    return signature_from_onnx_model(model)


def check_rows(path: Path, signature: Signature) -> dict[str, np.ndarray]:
    """The first CHECK_ROWS rows of a validation dataset (the fixed batch's worth for a fixed-batch model)."""
    feeds, _ = dataset_feeds(Path(path), signature, what="validation (output check)")
    rows = fixed_batch(signature) or CHECK_ROWS
    if min(len(v) for v in feeds.values()) < rows:
        rows = min(len(v) for v in feeds.values())
    return {name: value[:rows] for name, value in feeds.items()}


def output_error(src: Path, out: Path, signature: Signature, check_data: Path | None,
                 seeds: tuple[int, ...] = (0, 1, 2)) -> tuple[float | None, float, str | None]:
    """(max abs error of ``out`` vs ``src``, max |reference|, note) on real validation rows when the
    job has a validation set (``check_data``), else on synthetic batches (``synthetic_error``).

    Real rows are in the model's domain: a BERT-like model's token types and ids are never out of
    range there, so its outputs are always checked.
    """
    if check_data is None:
        return synthetic_error(src, out, signature, seeds)
    from workers.formats import signature_from_onnx

    feeds = check_rows(Path(check_data), signature)
    try:
        reference = ort.session(src, level="disable").run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise PassInputError(f"The source model does not run on the validation rows: {str(exc)[:300]}") from exc
    (candidate,) = run_produced(out, [cast_feeds(feeds, signature_from_onnx(out))], level="disable")
    rows = len(next(iter(feeds.values())))
    return max_abs_error(reference, candidate), max_abs_value(reference), f"Outputs checked on {rows} validation rows."


def synthetic_error(src: Path, out: Path, signature: Signature,
                    seeds: tuple[int, ...] = (0, 1, 2)) -> tuple[float | None, float, str | None]:
    """(max abs error of ``out`` vs ``src`` on synthetic batches, max |reference|, note).

    Both run with graph optimizations disabled, so the stored graphs themselves are compared. The
    error is None (and the note says why) when the source cannot run on synthetic inputs, e.g. a
    dim the signature leaves symbolic must have a particular size.
    """
    from workers.formats import signature_from_onnx

    try:
        reference_session = ort.session(src, level="disable")
        feeds = [synthetic_inputs(signature, seed=seed) for seed in seeds]
        references = [reference_session.run(None, feed) for feed in feeds]
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        return None, 0.0, f"Outputs not checked: the source model does not run on synthetic inputs ({str(exc)[:200]})."
    candidates = run_produced(out, [cast_feeds(feed, signature_from_onnx(out)) for feed in feeds], level="disable")
    worst = max(max_abs_error(r, c) for r, c in zip(references, candidates, strict=True))
    return worst, max(max_abs_value(r) for r in references), None


def run_produced(path: Path, feeds: list[dict[str, np.ndarray]], *, level: str = "all") -> list[list[np.ndarray]]:
    """Run a model a pass produced on each feed; onnxruntime failing on it is an UnsupportedModelError."""
    try:
        session = ort.session(path, level=level)
        return [session.run(None, feed) for feed in feeds]
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
        raise UnsupportedModelError(f"onnxruntime cannot run the produced model: {str(exc)[:500]}") from exc


# Ops that onnxruntime's graph pass creates and its quantizer does not know: their weights stay float.
FUSED_OPS = ("FusedGemm", "FusedConv", "FusedMatMul", "NhwcConv")


def nothing_quantized(model: Any, what: str, op_types: tuple[str, ...] = ()) -> UnsupportedModelError:
    """The error for a graph in which the quantizer found no weight to quantize."""
    fused = sorted({n.op_type for n in model.graph.node if n.op_type in FUSED_OPS})
    message = f"{what} found nothing to quantize: it handles MatMul, Gemm, Conv, Gather and Attention nodes with float32 weights"
    if op_types:
        message += f" (op_types limited it to {', '.join(op_types)})"
    if fused:
        message += (
            f". This graph holds onnxruntime fusions ({', '.join(fused)}) that the quantizer does not handle: "
            "quantize the model before the graph pass, or use graph level 'basic'"
        )
    return UnsupportedModelError(message + ".")
