"""Structured pruning: remove whole neurons and convolution channels so size and latency really fall.

For every prunable hidden layer the units (Gemm/MatMul output columns with their bias entries, Conv
output channels) with the smallest L1 or L2 weight norm are removed, and the layer that reads them
loses the matching input columns (for a Flatten in between, each channel's H*W features). A layer
is prunable when its units reach the next layer only through elementwise ops, BatchNormalization
(its parameters shrink too), pooling and Flatten; the layer that makes the model output is never
pruned, so input and output shapes stay the same.

There is no fine-tuning here: outputs move, and the pass reports by how much on the validation data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workers.passes import onnx_chain
from workers.passes.base import PassInputError, PassResult, UnsupportedModelError, data_field
from workers.passes.frame import PassRun

PASS_NAME = "prune_structured"
CRITERIA = ("l1", "l2")
SUPPORTED = (
    "plain MLP and CNN layer chains: Gemm, MatMul(+Add) and Conv layers joined only by elementwise "
    "activations (Relu, Sigmoid, Tanh, Gelu, LeakyRelu, ...), BatchNormalization, MaxPool/AveragePool "
    "and Flatten"
)
EVAL_SAMPLES = 512


@dataclass(frozen=True)
class Config:
    """``ratio`` of the units of each targeted layer is removed, ranked by ``criterion`` (weight norm).

    Targets: ``per_layer`` pairs (layer, ratio) prune exactly those layers at their own ratios (the
    shape of ``workers.evaluation.prune_advice``'s proposal); ``layers`` adds layers pruned at ``ratio``; when both are
    empty every prunable hidden layer is pruned at ``ratio``. Layer names are the node names (or the
    weight initializer names) listed in the ``prunable_layers`` metric.
    """

    ratio: float = 0.5
    criterion: str = "l1"
    layers: tuple[str, ...] = ()
    per_layer: tuple[tuple[str, float], ...] = ()
    validation_data: Path | None = data_field()

    def __post_init__(self) -> None:
        if isinstance(self.per_layer, dict):
            object.__setattr__(self, "per_layer", tuple(self.per_layer.items()))
        try:
            per_layer = tuple((str(name), float(r)) for name, r in self.per_layer)
        except (TypeError, ValueError) as exc:
            raise PassInputError(f"per_layer must be (layer, ratio) pairs, got {self.per_layer!r}.") from exc
        object.__setattr__(self, "per_layer", per_layer)
        if isinstance(self.layers, str):
            raise PassInputError("layers must be a list of layer names, not one string.")
        object.__setattr__(self, "layers", tuple(str(name) for name in self.layers))
        if self.validation_data is not None:
            object.__setattr__(self, "validation_data", Path(self.validation_data))
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0 < self.ratio < 1:
            raise PassInputError(f"ratio must be a fraction of units to remove, strictly between 0 and 1; got {self.ratio!r}.")
        if self.criterion not in CRITERIA:
            raise PassInputError(f"criterion must be one of {', '.join(CRITERIA)}; got {self.criterion!r}.")
        for name, ratio in per_layer:
            if not 0 <= ratio < 1:
                raise PassInputError(f"per_layer ratio for {name!r} must be in [0, 1); got {ratio}.")


def run(src: Path, dst: Path, config: Config) -> PassResult:
    """Remove the weakest units of each prunable hidden layer and write the smaller model."""
    with PassRun(PASS_NAME, src, dst, config) as job:
        model = job.load()
        graph = onnx_chain.Graph(model)
        routes, skipped = onnx_chain.prunable_routes(graph)
        if not routes:
            raise UnsupportedModelError(unsupported_message(job.src, skipped) + onnx_chain.fused_hint(model))
        pruned, rows = prune_model(graph, resolve_targets(config, routes, skipped), config.criterion)
        job.save(pruned)
        change = onnx_chain.pruning_change(model, job.src, job.out, config.validation_data, max_samples=EVAL_SAMPLES)
        params_before, params_after = onnx_chain.count_params(model), onnx_chain.count_params(pruned)
        metrics: dict[str, Any] = {
            "params_before": params_before,
            "params_after": params_after,
            "param_ratio": params_after / params_before if params_before else 1.0,
            **job.sizes(),
            "pruned_layers": rows,
            "prunable_layers": [_layer_row(r) for r in routes],
            **change,
        }
        metrics["size_ratio"] = metrics["size_after"] / metrics["size_before"]
        return job.result(metrics, _notes(metrics, rows, skipped))


def _notes(metrics: dict[str, Any], rows: list[dict[str, Any]], skipped: list[str]) -> list[str]:
    notes = [
        f"Removed whole units from {len(rows)} layer(s); parameters {metrics['params_before']} -> "
        f"{metrics['params_after']} ({metrics['param_ratio']:.2f}x): the dense weight matrices themselves shrink, "
        "and the compute with them.",
        "No fine-tuning was done: outputs differ from the original; the errors in metrics were measured on "
        f"{metrics['error_data']}.",
    ]
    if skipped:
        notes.append("Layers left whole: " + "; ".join(skipped) + ".")
    return notes


def unsupported_message(src: Path, skipped: list[str]) -> str:
    """Why ``src`` has no prunable layer: what the pass supports, and each layer's reason."""
    reasons = "; ".join(skipped[:8]) or "it has no Gemm, MatMul or Conv layer with weight initializers"
    return (
        f"Structured pruning found no prunable layer in {Path(src).name}. It supports {SUPPORTED}. Graphs with "
        "residual connections, attention, LayerNormalization or embeddings (transformers such as the "
        f"tiny_transformer sample) are not supported. Why each layer was left whole: {reasons}."
    )


def _layer_row(route: onnx_chain.Route) -> dict[str, Any]:
    layer = route.layer
    return {"layer": layer.name, "weight": layer.weight, "kind": layer.kind, "units": layer.units,
            "consumer": route.consumer.name}


def resolve_targets(config: Config, routes: list[onnx_chain.Route], skipped: list[str]) -> dict[str, float]:
    """Layer name -> ratio to remove, from the config; unknown or unprunable names are refused."""
    by_name = {r.layer.name: r.layer.name for r in routes} | {r.layer.weight: r.layer.name for r in routes}
    wanted = list(config.per_layer) + [(name, config.ratio) for name in config.layers]
    if not wanted:
        return {r.layer.name: config.ratio for r in routes}
    targets: dict[str, float] = {}
    for name, ratio in wanted:
        if name not in by_name:
            why = [s for s in skipped if s.startswith(f"{name}:")]
            raise PassInputError(
                (f"Layer {name!r} cannot be pruned ({why[0].split(': ', 1)[1]}). " if why else f"No layer named {name!r}. ")
                + f"Prunable layers: {', '.join(r.layer.name for r in routes)}."
            )
        targets.setdefault(by_name[name], ratio)
    if not any(targets.values()):
        raise PassInputError("Nothing to prune: every targeted layer has ratio 0 (skip this pass instead).")
    return targets


def prune_model(graph: onnx_chain.Graph, targets: dict[str, float], criterion: str) -> tuple[Any, list[dict[str, Any]]]:
    """A copy of ``graph.model`` with ``targets`` (layer name -> ratio) pruned, plus one row per layer.

    Units are ranked on the original weights, then every slice is applied, so the order of the
    layers does not matter.
    """
    routes = {r.layer.name: r for r in onnx_chain.prunable_routes(graph)[0]}
    keeps = {}
    for name, ratio in targets.items():
        if ratio > 0:
            layer = routes[name].layer
            importance = onnx_chain.unit_importance(graph.array(layer.weight), layer.out_axis, criterion)
            keeps[name] = onnx_chain.units_to_keep(importance, ratio)
    arrays: dict[str, np.ndarray] = {}

    def shrink(name: str, index: np.ndarray, axis: int) -> None:
        current = arrays.get(name, graph.array(name))
        arrays[name] = np.take(current, index, axis=axis if axis >= 0 else current.ndim + axis)

    rows = []
    for name, keep in keeps.items():
        route = routes[name]
        layer, consumer = route.layer, route.consumer
        shrink(layer.weight, keep, layer.out_axis)
        if layer.bias:
            shrink(layer.bias, keep, -1)
        for norm in route.batch_norms:
            for param in norm.input[1:5]:
                shrink(param, keep, 0)
        shrink(consumer.weight, onnx_chain.expand_units(keep, route.features_per_unit), consumer.in_axis)
        rows.append({"layer": name, "weight": layer.weight, "units_before": layer.units, "units_after": int(keep.size),
                     "ratio": targets[name], "consumer": consumer.name})
    return onnx_chain.with_initializers(graph.model, arrays, drop_shapes=True), rows
