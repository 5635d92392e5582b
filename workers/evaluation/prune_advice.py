"""Per-layer pruning sensitivity: how much each layer can lose before the outputs move too much.

Not a pass (pure engine: no Django): :func:`advise_sparsity` measures, and its proposal is the
``per_layer`` option of the ``prune_structured`` pass. Each prunable layer is pruned alone (with
the same code as ``prune_structured``) at each candidate ratio and the mean absolute output error
is measured on a slice of the validation data. A layer gets the largest candidate whose error stays under
``max_error``; then the proposal is checked with every layer pruned at once and, while that joint
error is over the bound, the layer whose own error is largest steps down to its next candidate.

``max_error`` defaults to ``DEFAULT_ERROR_FRACTION`` (10 %) of the output scale: the standard
deviation of the original model's outputs on the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.passes import _onnx_util as util
from workers.passes import onnx_chain
from workers.passes.base import PassInputError, UnsupportedModelError
from workers.passes.prune_structured import prune_model, unsupported_message

DEFAULT_ERROR_FRACTION = 0.1


@dataclass(frozen=True)
class SensitivityRow:
    """The output error with one layer pruned alone at one ratio."""

    layer: str
    ratio: float
    error: float

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON."""
        return {"layer": self.layer, "ratio": self.ratio, "error": self.error}


@dataclass
class SparsityAdvice:
    """Sensitivity rows, the proposed per-layer ratios and the error they give together."""

    rows: list[SensitivityRow]
    proposal: dict[str, float]
    max_error: float
    output_scale: float
    combined_error: float
    samples: int
    criterion: str = "l1"
    notes: list[str] = field(default_factory=list)

    @property
    def per_layer(self) -> tuple[tuple[str, float], ...]:
        """The proposal as ``prune_structured.Config(per_layer=...)``, layers left whole omitted.

        Empty when no layer can lose a candidate share within ``max_error``: then skip the pass.
        """
        return tuple((layer, ratio) for layer, ratio in self.proposal.items() if ratio > 0)

    def to_dict(self) -> dict[str, Any]:
        """The advice as JSON (the proposal also as ``per_layer`` pairs)."""
        return {
            "rows": [row.to_dict() for row in self.rows],
            "proposal": dict(self.proposal),
            "per_layer": [list(pair) for pair in self.per_layer],
            "max_error": self.max_error,
            "output_scale": self.output_scale,
            "combined_error": self.combined_error,
            "samples": self.samples,
            "criterion": self.criterion,
            "notes": list(self.notes),
        }


def advise_sparsity(
    model: Path,
    validation_data: Path,
    *,
    candidates: tuple[float, ...] = (0.25, 0.5, 0.75),
    max_error: float | None = None,
    max_samples: int = 128,
    criterion: str = "l1",
) -> SparsityAdvice:
    """Measure each prunable layer's sensitivity and propose per-layer ratios under ``max_error``."""
    candidates = _checked(candidates, max_error, max_samples, criterion)
    proto = util.load_onnx_input(Path(model), "prune advisor")
    graph = onnx_chain.Graph(proto)
    routes, skipped = onnx_chain.prunable_routes(graph)
    if not routes:
        raise UnsupportedModelError(unsupported_message(Path(model), skipped) + onnx_chain.fused_hint(proto))
    data = onnx_chain.load_eval_data(proto, Path(validation_data), max_samples=max_samples)
    reference = onnx_chain.run_model(Path(model), data.inputs)
    scale = onnx_chain.output_std(reference)
    bound = DEFAULT_ERROR_FRACTION * scale if max_error is None else float(max_error)

    def error(targets: dict[str, float]) -> float:
        pruned, _ = prune_model(graph, targets, criterion)
        outputs = onnx_chain.run_model(pruned, data.inputs)
        return onnx_chain.mean_abs_error(reference, outputs)

    layers = [r.layer.name for r in routes]
    rows = [SensitivityRow(layer, ratio, error({layer: ratio})) for layer in layers for ratio in candidates]
    table = {(row.layer, row.ratio): row.error for row in rows}
    proposal = {layer: max([r for r in candidates if table[layer, r] <= bound], default=0.0) for layer in layers}
    combined = error(proposal) if any(proposal.values()) else 0.0
    while combined > bound and any(proposal.values()):
        worst = max((layer for layer in layers if proposal[layer] > 0), key=lambda layer: table[layer, proposal[layer]])
        proposal[worst] = max([r for r in candidates if r < proposal[worst]], default=0.0)
        combined = error(proposal) if any(proposal.values()) else 0.0
    notes = [
        f"Errors are mean absolute output differences on {data.source}; "
        f"max_error {bound:.4g} ({'given' if max_error is not None else f'{DEFAULT_ERROR_FRACTION:.0%} of the output std {scale:.4g}'}).",
    ]
    if skipped:
        notes.append("Layers that cannot be pruned: " + "; ".join(skipped) + ".")
    return SparsityAdvice(rows=rows, proposal=proposal, max_error=bound, output_scale=scale, combined_error=combined,
                          samples=data.samples, criterion=criterion, notes=notes)


def _checked(candidates: Any, max_error: float | None, max_samples: int, criterion: str) -> tuple[float, ...]:
    try:
        values = tuple(sorted({float(c) for c in candidates}))
    except (TypeError, ValueError) as exc:
        raise PassInputError(f"candidates must be numbers, got {candidates!r}.") from exc
    if not values or not all(0 < c < 1 for c in values):
        raise PassInputError(f"candidates must be ratios strictly between 0 and 1; got {list(candidates)}.")
    if max_error is not None and not max_error > 0:
        raise PassInputError(f"max_error must be positive; got {max_error!r}.")
    if max_samples < 1:
        raise PassInputError(f"max_samples must be at least 1; got {max_samples!r}.")
    if criterion not in ("l1", "l2"):
        raise PassInputError(f"criterion must be l1 or l2; got {criterion!r}.")
    return values
