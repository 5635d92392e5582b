"""opset: a model below the opset a quantizer needs, converted first and checked for equal outputs.

onnxruntime's per-channel static quantizer writes ``DequantizeLinear`` nodes with an ``axis``
attribute, which only opset 13 and later define: on an opset-12 model the quantized graph does not
load (INVALID_GRAPH, "Unrecognized attribute: axis"). A model below ``MIN_QUANTIZE_OPSET`` is
therefore converted with ``onnx.version_converter`` before it is quantized; the converted graph
must give the source's outputs on the check rows (max abs error within 1e-4 x max(1, max|ref|)),
else the pass stops with an AccuracyError rather than quantize a different model. Pure: no Django.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from workers import ort
from workers.passes import _onnx_util as util
from workers.passes.base import AccuracyError, UnsupportedModelError, save_onnx

MIN_QUANTIZE_OPSET = 13
RELATIVE_TOLERANCE = 1e-4
_DEFAULT_DOMAINS = ("", "ai.onnx")


def default_opset(model: Any) -> int:
    """The version of the default (ai.onnx) domain a model imports (1 when it imports none)."""
    return max((op.version for op in model.opset_import if op.domain in _DEFAULT_DOMAINS), default=1)


def _convert(model: Any, have: int, target: int) -> Any:
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, target)
    except Exception as exc:  # noqa: BLE001 - the converter raises RuntimeError / ValueError / its own
        raise UnsupportedModelError(
            f"The model is at opset {have}; static quantization needs opset {target} or later and onnx's version "
            f"converter could not convert it ({str(exc)[:300]}). Export the model at opset {target} or later."
        ) from exc


def _equal_outputs(src: Path, converted: Path, feeds: dict[str, np.ndarray]) -> float:
    """Max abs error of the converted model against the source on ``feeds`` (AccuracyError over tolerance)."""
    reference = ort.session(src, level="disable").run(None, feeds)
    (candidate,) = util.run_produced(converted, [feeds], level="disable")
    error, scale = util.max_abs_error(reference, candidate), max(1.0, util.max_abs_value(reference))
    if not error <= RELATIVE_TOLERANCE * scale:
        raise AccuracyError(
            f"Converting the model to opset {MIN_QUANTIZE_OPSET} changed its outputs by {error:.3g} (max abs error), "
            f"over the tolerance {RELATIVE_TOLERANCE:g} x {scale:.3g}: export it at opset {MIN_QUANTIZE_OPSET} or later."
        )
    return error


def ensure_opset(src: Path, work: Path, feeds: dict[str, np.ndarray],
                 minimum: int = MIN_QUANTIZE_OPSET) -> tuple[Path, str | None]:
    """``src`` itself when it is at opset ``minimum`` or later; else its conversion, saved under
    ``work`` and checked on ``feeds``, with a note that says so."""
    import onnx

    model = onnx.load(str(src))
    have = default_opset(model)
    if have >= minimum:
        return Path(src), None
    target = save_onnx(_convert(model, have, minimum), Path(work) / f"opset{minimum}.onnx")
    error = _equal_outputs(Path(src), target, feeds)
    rows = len(next(iter(feeds.values())))
    return target, (f"Converted from opset {have} to {minimum} with onnx's version converter before quantizing "
                    f"(per-channel quantization needs opset {minimum}); outputs equal on {rows} check "
                    f"row{'s' if rows != 1 else ''} (max abs error {error:.2g}).")
