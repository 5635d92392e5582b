"""The recipe space of the search: accuracy-free steps first, then the int8 family, then lossy chains.

A recipe is one pass with its options. ``recipe_problem`` (the targets' one home of what a target can
run) decides which recipes are skipped before any time is spent on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workers.targets.capabilities import recipe_problem


@dataclass(frozen=True)
class Recipe:
    """One pass and its options; ``lossy`` recipes must meet the profile's accuracy bound."""

    name: str
    pass_name: str
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    lossy: bool = True
    calibrated: bool = False  # needs calibration rows (static int8)

    def with_options(self, name: str, **options: Any) -> Recipe:
        """The same recipe with more options (an exclusion list) under a new name."""
        return Recipe(name, self.pass_name, {**self.options, **options}, self.lossy, self.calibrated)


def _transformer_level_exists() -> bool:
    """Whether the graph pass offers transformer fusions (attention, LayerNorm, GELU)."""
    from workers.passes import graph

    return getattr(graph, "TRANSFORMER", None) == "transformer" or "transformer" in getattr(graph, "LEVELS", ())


def free_recipes(*, has_attention: bool) -> list[Recipe]:
    """Graph fusions (seconds, no accuracy lost); transformer fusions for models with attention."""
    recipes = [Recipe("graph", "graph", {"level": "extended"}, lossy=False)]
    if has_attention and _transformer_level_exists():
        recipes.append(Recipe("graph-transformer", "graph", {"level": "transformer"}, lossy=False))
    return recipes


def _dynamic() -> list[Recipe]:
    # Per-channel weights keep transformer accuracy where per-tensor loses it at the same speed;
    # QUInt8 weights are what some kernels (wasm ConvInteger) need; reduce_range helps CPUs without VNNI.
    return [Recipe("int8-dynamic", "quantize_dynamic", {"per_channel": True, "weight_type": "qint8"}),
            Recipe("int8-dynamic-u8", "quantize_dynamic", {"per_channel": True, "weight_type": "quint8"}),
            Recipe("int8-dynamic-rr", "quantize_dynamic", {"per_channel": True, "weight_type": "qint8",
                                                           "reduce_range": True})]


def _static() -> list[Recipe]:
    # QDQ first: onnxruntime fuses it into its fastest int8 kernels; QOperator last.
    return [Recipe(f"int8-static-{fmt}-{method}", "quantize_static",
                   {"format": "qdq" if fmt == "qdq" else "qoperator", "method": method, "per_channel": True},
                   calibrated=True)
            for fmt in ("qdq", "qop") for method in ("minmax", "entropy", "percentile")]


def int8_recipes(*, target: str, op_types: set[str], calibrated: bool) -> tuple[list[Recipe], list[tuple[Recipe, str]]]:
    """The int8 recipes to try on ``target`` (cheapest first) and those skipped, each with why."""
    if target == "cuda":
        return [], []  # onnxruntime's CUDA provider has no int8 kernels: those models would run dequantized
    tried: list[Recipe] = []
    skipped: list[tuple[Recipe, str]] = []
    for recipe in _dynamic() + (_static() if calibrated else []):
        problem = recipe_problem(target, recipe.pass_name, recipe.options, op_types)
        if problem:
            skipped.append((recipe, problem))
        else:
            tried.append(recipe)
    return tried, skipped


def lossy_firsts(*, task: str, has_training: bool, target: str) -> list[Recipe]:
    """Lossy passes that int8 can follow once they pass: pruning, distillation."""
    recipes = []
    if task in ("classification", "regression"):
        # An embedding's geometry is too sensitive to pruning without retraining.
        recipes.append(Recipe("prune-structured", "prune_structured", {"ratio": 0.5}))
    if has_training or task == "classification":
        recipes.append(Recipe("distill", "distill", {"width": 0.5}))
    if target == "cuda":
        recipes.append(Recipe("fp16", "fp16", {"keep_io_types": True}))
    return recipes
