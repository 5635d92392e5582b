"""graph: onnxruntime's offline graph optimizations, stored as a portable ONNX file.

ORT applies the optimizations of the chosen level (``basic``: constant folding and redundant node
elimination; ``extended``: also fusions such as Gemm+activation, LayerNorm, GELU, attention) and
writes the optimized graph through ``SessionOptions.optimized_model_filepath``; the file is then
re-saved with ``save_onnx`` (one file, IR version the pinned onnxruntime loads) and opset imports
of unused domains are dropped. ``extended`` graphs may hold ``com.microsoft`` contrib ops
(FusedGemm, BiasGelu, SkipLayerNormalization ...): they load in any onnxruntime, not in other
runtimes. ``all`` is refused: its layout transforms (NCHWc) depend on the CPU they ran on and ORT
documents that such a model must not be stored; ORT applies that level at session load anyway.

The result is checked against the source on three synthetic batches built from the signature
(symbolic dims -> 2, ints -> 0..3, floats ~ N(0, 1)): max abs error within 1e-4 x max(1, max|ref|).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers import ort
from workers.passes import _onnx_util as util
from workers.passes.base import AccuracyError, PassError, PassInputError, PassResult, UnsupportedModelError
from workers.passes.frame import PassRun

NAME = "graph"
LEVELS = ("basic", "extended")
RELATIVE_TOLERANCE = 1e-4
_CHECK_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Config:
    """Options of the graph pass: the onnxruntime optimization level to store."""

    level: str = "extended"

    def __post_init__(self) -> None:
        if self.level == "all":
            raise PassInputError(
                "Graph level 'all' is not stored: ORT_ENABLE_ALL adds layout optimizations specific to the "
                "CPU they run on, and onnxruntime applies them itself when a session loads the model. "
                "Use 'extended' (or 'basic')."
            )
        if self.level not in LEVELS:
            raise PassInputError(f"Unknown graph level {self.level!r}; use one of {', '.join(LEVELS)}.")


def _optimize(src: Path, target: Path, level: str) -> None:
    try:
        ort.session(src, level=level, optimized_path=target)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UnsupportedModelError(f"onnxruntime could not load the model to optimize it: {str(exc)[:600]}") from exc


def _notes(optimized: Any, check_note: str | None) -> list[str]:
    contrib = sorted({n.op_type for n in optimized.graph.node if n.domain == "com.microsoft"})
    notes = [f"The graph uses onnxruntime contrib ops ({', '.join(contrib)}): it runs in onnxruntime only."] if contrib else []
    return notes + ([check_note] if check_note else [])


def run(src: Path, dst: Path, config: Config | None = None) -> PassResult:
    """Optimize ``src`` at the configured level into ``dst/model.onnx`` and check its outputs."""
    import onnx

    config = config or Config()
    with PassRun(NAME, src, dst, config) as job:
        source = job.load(float_only=False)
        with util.scratch_dir(job.dst) as work:
            raw = work / "ort_optimized.onnx"
            _optimize(job.src, raw, config.level)
            if not raw.is_file():
                raise PassError("onnxruntime did not write the optimized model.")
            optimized = util.prune_opset_imports(onnx.load(str(raw)))
        job.save(optimized)
        error, reference_scale, check_note = job.synthetic_error(source, _CHECK_SEEDS)
        scale = max(1.0, reference_scale)
        if error is not None and not error <= RELATIVE_TOLERANCE * scale:
            raise AccuracyError(
                f"The optimized graph's outputs differ from the source's by {error:.3g} (max abs error on synthetic "
                f"inputs), over the tolerance {RELATIVE_TOLERANCE:g} x {scale:.3g}."
            )
        metrics = {
            "nodes_before": util.node_count(source),
            "nodes_after": util.node_count(optimized),
            "max_abs_error": error,
            **job.sizes(),
        }
        return job.result(metrics, _notes(optimized, check_note))
