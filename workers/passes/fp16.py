"""fp16: float16 weights and compute, float32 inputs and outputs kept by default.

Uses ``onnxruntime.transformers.float16.convert_float_to_float16`` (installed with onnxruntime).
Its default block list (ops left in float32: ML ops, TopK, Range, CumSum, ...) always applies;
``op_block_list`` adds to it. When onnxruntime's CPU provider has no float16 kernel for an op of the
converted graph (e.g. contrib ops fused by the graph pass), that op type is added to the block list
and the conversion retried; the notes name the ops kept in float32.

On this CPU onnxruntime runs float16 at float32 speed (it upcasts internally): the gain is half
the file size and memory for weights, not latency. The output is checked on synthetic inputs
(max abs error in ``metrics``); outputs that overflow float16 to Inf/NaN raise AccuracyError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers import ort
from workers.passes import _onnx_util as util
from workers.passes.base import AccuracyError, PassInputError, PassResult, UnsupportedModelError, save_onnx
from workers.passes.frame import PassRun

NAME = "fp16"
_MAX_RETRIES = 8
_MISSING_KERNEL = re.compile(r"Could not find an implementation for (\w+)\(")


@dataclass(frozen=True)
class Config:
    """Options of the float16 conversion."""

    keep_io_types: bool = True
    op_block_list: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.keep_io_types, bool):
            raise PassInputError(f"keep_io_types must be true or false; got {self.keep_io_types!r}.")
        if isinstance(self.op_block_list, str) or not all(isinstance(v, str) for v in self.op_block_list):
            raise PassInputError(f"op_block_list must be a list of op types; got {self.op_block_list!r}.")
        object.__setattr__(self, "op_block_list", tuple(self.op_block_list))


def _convert(source: Any, keep_io_types: bool, block_list: list[str]) -> Any:
    import copy

    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        return convert_float_to_float16(copy.deepcopy(source), keep_io_types=keep_io_types, op_block_list=block_list)
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedModelError(f"float16 conversion failed: {str(exc)[:600]}") from exc


def _write_loadable(source: Any, out_path: Path, keep_io_types: bool, block_list: list[str]) -> list[str]:
    """Convert and save; op types onnxruntime has no float16 kernel for are blocked and the
    conversion retried. Returns those op types (the frame removes the file when this raises)."""
    kept: list[str] = []
    for _attempt in range(_MAX_RETRIES + 1):
        save_onnx(util.prune_opset_imports(_convert(source, keep_io_types, block_list + kept)), out_path)
        try:
            ort.session(out_path, level="disable")
            return kept
        except Exception as exc:  # noqa: BLE001 - onnxruntime's NOT_IMPLEMENTED and friends
            missing = _MISSING_KERNEL.search(str(exc))
            if not missing or missing.group(1) in block_list + kept:
                raise UnsupportedModelError(f"onnxruntime cannot load the float16 model: {str(exc)[:600]}") from exc
            kept.append(missing.group(1))
    raise UnsupportedModelError(f"Too many ops lack float16 kernels on CPU ({', '.join(kept)}).")


def _notes(config: Config, kept: list[str], check_note: str | None) -> list[str]:
    notes = ["onnxruntime on this CPU runs float16 at float32 speed: the gain is half the file and weight memory, "
             "not latency."]
    if kept:
        notes.append(f"Kept in float32 (no float16 kernel on CPU): {', '.join(kept)}.")
    if not config.keep_io_types:
        notes.append("Inputs and outputs are float16: callers must feed float16 arrays.")
    return notes + ([check_note] if check_note else [])


def run(src: Path, dst: Path, config: Config | None = None) -> PassResult:
    """Convert ``src`` to float16 into ``dst/model.onnx`` and measure its error on synthetic inputs."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    config = config or Config()
    with PassRun(NAME, src, dst, config) as job:
        source = job.load()
        block_list = list(dict.fromkeys([*DEFAULT_OP_BLOCK_LIST, *config.op_block_list]))
        kept = _write_loadable(source, job.output(), config.keep_io_types, block_list)
        error, _, check_note = job.synthetic_error(source)
        if error == float("inf"):
            raise AccuracyError(
                "The float16 model produces Inf/NaN where the float32 model does not (values beyond float16's "
                "range, 65504). Keep the overflowing ops in float32 with op_block_list."
            )
        metrics = {**job.sizes(ratio=True), "max_abs_error": error}  # the error is on synthetic inputs
        return job.result(metrics, _notes(config, kept, check_note))
