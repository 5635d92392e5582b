"""graph: onnxruntime's offline graph optimizations, stored as a portable ONNX file.

ORT applies the optimizations of the chosen level (``basic``: constant folding and redundant node
elimination; ``extended``: also fusions such as Gemm+activation, LayerNorm, GELU, attention) and
writes the optimized graph through ``SessionOptions.optimized_model_filepath``; the file is then
re-saved with ``save_onnx`` (one file, IR version the pinned onnxruntime loads) and opset imports
of unused domains are dropped. ``extended`` graphs may hold ``com.microsoft`` contrib ops
(FusedGemm, BiasGelu, SkipLayerNormalization ...): they load in any onnxruntime, not in other
runtimes. ``all`` is refused: its layout transforms (NCHWc) depend on the CPU they ran on and ORT
documents that such a model must not be stored; ORT applies that level at session load anyway.

``transformer`` is for models with attention (``has_attention``: MatMul -> Softmax -> MatMul, or an
attention op): onnxruntime's transformers optimizer (``onnxruntime.transformers.optimizer``, model
type "bert", heads and hidden size detected from the graph) fuses attention, SkipLayerNormalization,
BiasGelu ...; the notes name the fused-op counts. Its fusion step (``optimize_by_fusion``, what
``optimize_model`` runs at opt_level 0) is called directly because ``optimize_model`` also makes a
temporary directory outside ``dst``. A model without attention is refused at that level; the
pass's default (``extended``) is the same for every model.

The result is checked against the source on a few real validation rows when the job has a
validation set (``check_data``), else on three synthetic batches built from the signature
(symbolic dims -> 2, ints in the range their name implies, floats ~ N(0, 1)): max abs error within
1e-4 x max(1, max|ref|).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers import ort
from workers.passes import _onnx_util as util
from workers.passes.base import AccuracyError, PassError, PassInputError, PassResult, UnsupportedModelError, data_field
from workers.passes.frame import PassRun

NAME = "graph"
LEVELS = ("basic", "extended")  # onnxruntime's own levels, for any model
TRANSFORMER = "transformer"  # onnxruntime's transformer fusions, for models with attention only
RELATIVE_TOLERANCE = 1e-4
_CHECK_SEEDS = (0, 1, 2)
# Ops that are attention already (a model exported or optimized with fused attention).
_ATTENTION_OPS = frozenset({"Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention",
                            "PackedMultiHeadAttention", "QAttention"})
# Ops between an attention MatMul and its Softmax (scale, mask, bias) or after it (dropout, casts).
_SCORE_OPS = frozenset({"Add", "Div", "Mul", "Sub", "Where", "Cast", "Reshape", "Transpose", "Dropout", "Identity"})
_HOPS = 4
_MATMULS = frozenset({"MatMul", "FusedMatMul"})  # onnxruntime's extended level folds the scale into FusedMatMul


@dataclass(frozen=True)
class Config:
    """Options of the graph pass: the onnxruntime optimization level to store."""

    level: str = "extended"
    check_data: Path | None = data_field()  # validation rows the output is checked on (the job fills it)

    def __post_init__(self) -> None:
        if isinstance(self.check_data, str):
            object.__setattr__(self, "check_data", Path(self.check_data))
        if self.level == "all":
            raise PassInputError(
                "Graph level 'all' is not stored: ORT_ENABLE_ALL adds layout optimizations specific to the "
                "CPU they run on, and onnxruntime applies them itself when a session loads the model. "
                "Use 'extended' (or 'basic')."
            )
        if self.level not in (*LEVELS, TRANSFORMER):
            raise PassInputError(f"Unknown graph level {self.level!r}; use one of {', '.join((*LEVELS, TRANSFORMER))}.")


def _reaches_matmul(model: Any, start: str, forward: bool) -> bool:
    """Whether a MatMul is reached from tensor ``start`` within _HOPS nodes of _SCORE_OPS (walking to
    producers, or to consumers when ``forward``)."""
    nodes = model.graph.node
    frontier = {start}
    for _ in range(_HOPS):
        step = [n for n in nodes if frontier & set(n.input if forward else n.output)]
        if any(n.op_type in _MATMULS for n in step):
            return True
        frontier = {t for n in step if n.op_type in _SCORE_OPS for t in (n.output if forward else n.input)}
        if not frontier:
            return False
    return False


def has_attention(model: Any) -> bool:
    """Whether a model (onnx.ModelProto or a path) has attention: an attention op, or a Softmax
    fed by a MatMul (through scale / mask ops) whose output feeds a MatMul."""
    import onnx

    if not hasattr(model, "graph"):
        model = onnx.load(str(model), load_external_data=False)
    if any(n.op_type in _ATTENTION_OPS for n in model.graph.node):
        return True
    return any(
        _reaches_matmul(model, softmax.input[0], forward=False) and _reaches_matmul(model, softmax.output[0], forward=True)
        for softmax in model.graph.node if softmax.op_type == "Softmax"
    )


def _transformer_fusions(source: Any) -> tuple[Any, dict[str, int]]:
    """onnxruntime's transformer fusions of ``source`` (BERT-like) and the count of each fused op."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_by_fusion

    if not has_attention(source):
        raise UnsupportedModelError(
            "Graph level 'transformer' is for models with attention (MatMul -> Softmax -> MatMul); this model has "
            "none. Use 'extended'."
        )
    try:
        with util.quiet():
            optimizer = optimize_by_fusion(onnx.ModelProto.FromString(source.SerializeToString()), "bert", 0, 0)
            fused = {op: int(n) for op, n in optimizer.get_fused_operator_statistics().items() if n}
    except Exception as exc:  # noqa: BLE001 - the optimizer raises whatever its graph walk meets
        raise UnsupportedModelError(f"onnxruntime's transformer optimizer failed on this model: {str(exc)[:600]}") from exc
    if not fused:
        raise UnsupportedModelError("onnxruntime's transformer optimizer found no fusion in this model; use 'extended'.")
    return util.prune_opset_imports(optimizer.model), fused


def _optimize(src: Path, target: Path, level: str) -> None:
    try:
        ort.session(src, level=level, optimized_path=target)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UnsupportedModelError(f"onnxruntime could not load the model to optimize it: {str(exc)[:600]}") from exc


def _notes(optimized: Any, check_note: str | None, fused: dict[str, int]) -> list[str]:
    contrib = sorted({n.op_type for n in optimized.graph.node if n.domain == "com.microsoft"})
    notes = [f"The graph uses onnxruntime contrib ops ({', '.join(contrib)}): it runs in onnxruntime only."] if contrib else []
    if fused:
        notes.append("Transformer fusions: " + ", ".join(f"{op} x{n}" for op, n in sorted(fused.items())) + ".")
    return notes + ([check_note] if check_note else [])


def _ort_optimized(src: Path, dst: Path, level: str) -> Any:
    """The graph onnxruntime stores at ``level`` (its scratch file under ``dst``)."""
    import onnx

    with util.scratch_dir(dst) as work:
        raw = work / "ort_optimized.onnx"
        _optimize(src, raw, level)
        if not raw.is_file():
            raise PassError("onnxruntime did not write the optimized model.")
        return util.prune_opset_imports(onnx.load(str(raw)))


def run(src: Path, dst: Path, config: Config | None = None) -> PassResult:
    """Optimize ``src`` at the configured level into ``dst/model.onnx`` and check its outputs."""
    config = config or Config()
    with PassRun(NAME, src, dst, config) as job:
        source = job.load(float_only=False)
        fused: dict[str, int] = {}
        if config.level == TRANSFORMER:
            optimized, fused = _transformer_fusions(source)
        else:
            optimized = _ort_optimized(job.src, job.dst, config.level)
        job.save(optimized)
        error, reference_scale, check_note = job.check_error(source, _CHECK_SEEDS)
        scale = max(1.0, reference_scale)
        if error is not None and not error <= RELATIVE_TOLERANCE * scale:
            on = "validation rows" if job.check_data else "synthetic inputs"
            raise AccuracyError(
                f"The optimized graph's outputs differ from the source's by {error:.3g} (max abs error on {on}), "
                f"over the tolerance {RELATIVE_TOLERANCE:g} x {scale:.3g}."
            )
        metrics = {
            "nodes_before": util.node_count(source),
            "nodes_after": util.node_count(optimized),
            "max_abs_error": error,
            **job.sizes(),
        }
        if fused:
            metrics["fused_ops"] = fused
        return job.result(metrics, _notes(optimized, check_note, fused))
