"""Which weight nodes int8 hurts most: measured once per job, on the selection rows.

*Quantize-one*: each weight node (MatMul, Gemm, Conv ... with an initializer) is quantized alone
(dynamic, with the weight settings of the failing recipe closest to the bound: signed weights
saturate int16 sums on CPUs without VNNI, unsigned ones do not) while every other one stays float,
and the outputs' relative L2 error against the float model is measured. Errors of one node do not mix with the others', so the ranking
is steadier than leaving one node out of a fully quantized model (whose minimum-cosine scores mostly
moved by noise). Nodes not reached before the budget ran out rank last.

``exclusion_counts`` is the step-by-step schedule: exclude the top 1, 2, 4, 8 ... nodes (never all).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workers.passes import _onnx_util as util

# The dynamic quantizer's options that decide how weights are quantized (and so a node's error).
WEIGHT_OPTIONS = ("weight_type", "per_channel", "reduce_range")
Score = Callable[[Path], float]  # a quantized model file -> its error (lower: closer to the float model)


def weight_nodes(model_path: Path) -> list[str]:
    """Names of the nodes whose weights quantization changes (MatMul/Gemm/Conv ... with an initializer)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    return [node.name for node in model.graph.node
            if node.op_type in util.WEIGHT_OPS and node.name and any(i in initializers for i in node.input[1:])]


def exclusion_counts(nodes: int) -> list[int]:
    """1, 2, 4, 8 ... below ``nodes``: how many of the most sensitive nodes each step keeps in float."""
    counts, count = [], 1
    while count < nodes:
        counts.append(count)
        count *= 2
    return counts


def rank_nodes(src: Path, work: Path, score: Score, time_left: Callable[[], bool],
               weights: dict[str, Any] | None = None) -> tuple[list[str], dict[str, float]]:
    """Weight nodes of ``src`` most sensitive first, and each one's quantize-one error, each node
    quantized with ``weights`` (``WEIGHT_OPTIONS`` of the dynamic quantizer; its defaults otherwise).

    Names are those of the quantization pre-processing's graph, which every int8 pass builds the same
    way, so they can be passed on as ``nodes_to_exclude``."""
    from workers.passes import quantize_dynamic

    work.mkdir(parents=True, exist_ok=True)
    model_path, _ = quantize_dynamic.preprocess(src, work)
    nodes = weight_nodes(model_path)
    errors: dict[str, float] = {}
    for index, node in enumerate(nodes):
        if not time_left():
            break
        target = work / f"one-{index:03d}" / "model.onnx"
        target.parent.mkdir()
        config = quantize_dynamic.Config(**(weights or {}), nodes_to_exclude=tuple(n for n in nodes if n != node))
        try:
            quantize_dynamic.quantize(model_path, target, config, target.parent)
            errors[node] = score(target)
        except Exception:  # noqa: BLE001 - a node the quantizer cannot take alone ranks last
            errors[node] = math.nan
        shutil.rmtree(target.parent, ignore_errors=True)
    ranked = sorted(nodes, key=lambda n: -errors[n] if math.isfinite(errors.get(n, math.nan)) else math.inf)
    return ranked, errors
