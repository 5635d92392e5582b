"""The search on real ONNX Runtime with small models made here: exclusion, early pruning, the budget,
chains, the pick, the recipe space and the hold-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers.evaluation.readiness import ProfileSpec
from workers.search import loop, space, splits
from workers.search.budget import Budget
from workers.search.records import DROPPED, KEPT, UNREACHED

WIDTH = 256


def _mlp(path: Path, *, outlier_layer: int | None = None, depth: int = 4) -> Path:
    """MatMul + Tanh layers; ``outlier_layer`` gets one huge weight row, which ruins that layer's int8 scales."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "x"
    for i in range(depth):
        w = rng.normal(0, 1 / np.sqrt(WIDTH), (WIDTH, WIDTH)).astype(np.float32)
        if i == outlier_layer:
            w[0, :] = 40.0 * np.sign(rng.normal(size=WIDTH))
        weights.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"mm{i}"], name=f"layer{i}"),
                  helper.make_node("Tanh", [f"mm{i}"], [f"h{i}"], name=f"act{i}")]
        x = f"h{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", WIDTH])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _cnn(path: Path) -> Path:
    """Three 3x3 convolutions: dynamic int8 turns them into ConvInteger, several times slower on CPU."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "x"
    for i in range(3):
        weights.append(numpy_helper.from_array(rng.normal(0, 0.1, (32, 32, 3, 3)).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x = f"r{i}"
    nodes += [helper.make_node("GlobalAveragePool", [x], ["p"]), helper.make_node("Flatten", ["p"], ["y"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _rows(path: Path, shape: tuple[int, ...]) -> Path:
    np.savez(path, x=np.random.default_rng(1).normal(size=shape).astype(np.float32))
    return path


def _search(tmp_path: Path, model: Path, data: Path, min_cosine: float, **kwargs: object) -> loop.SearchResult:
    spec = ProfileSpec(accuracy_metric="cosine_min", min_accuracy=min_cosine)
    hooks = kwargs.pop("hooks", None)
    config = loop.SearchConfig(spec=spec, budget_s=kwargs.pop("budget_s", 120), validation=data, task="embedding",
                               **kwargs)
    return loop.run_search(model, model, tmp_path / "search", config, hooks)


@pytest.mark.slow
def test_a_model_whose_dynamic_int8_fails_the_bound_gets_a_passing_int8_by_exclusion(tmp_path: Path) -> None:
    """(D23) Plain int8 misses cosine_min >= 0.98; keeping the most sensitive node in float passes."""
    model = _mlp(tmp_path / "model.onnx", outlier_layer=2)
    result = _search(tmp_path, model, _rows(tmp_path / "rows.npz", (128, WIDTH)), 0.98)
    plain = result.log.get("int8-dynamic")
    assert plain.status == DROPPED and "cosine_min" in plain.why
    best = result.log.get(result.best)
    assert best.status == KEPT and best.passed and best.accuracy >= 0.98
    assert best.options["nodes_to_exclude"][0] == "layer2"  # the outlier layer ranks most sensitive
    assert any("Sensitivity" in note for note in result.log.notes)


@pytest.mark.slow
def test_a_recipe_slower_than_its_parent_is_dropped_before_its_accuracy_is_measured(tmp_path: Path) -> None:
    """(D22) ConvInteger is several times slower than the float Conv: dropped, accuracy never run."""
    model = _cnn(tmp_path / "model.onnx")
    search = loop.Search(model, model, tmp_path / "search", loop.SearchConfig(
        spec=ProfileSpec(accuracy_metric="cosine_min", min_accuracy=0.9), validation=_rows(tmp_path / "rows.npz",
                                                                                             (16, 32, 32, 32)),
        task="embedding"))
    result = search.run()
    slow = [r for r in result.log.records if r.pass_name == "quantize_dynamic" and r.status == DROPPED]
    assert slow and all("slower than its parent" in r.why and "accuracy not measured" in r.why for r in slow)
    assert all(r.speedup["high"] < 1 / 1.1 and r.accuracy is None for r in slow)
    assert not {r.name for r in slow} & set(search.accuracy_runs) and search.accuracy_runs  # others were measured
    assert not {r.name for r in slow} & {b.name for b in result.kept}


@pytest.mark.slow
def test_the_search_never_returns_a_failing_variant_as_best(tmp_path: Path) -> None:
    """(D24) A bound no int8 recipe can meet: no pick, and only passing candidates are kept."""
    model = _mlp(tmp_path / "model.onnx", outlier_layer=2)
    result = _search(tmp_path, model, _rows(tmp_path / "rows.npz", (64, WIDTH)), 0.999999, budget_s=20)
    lossy = [r for r in result.log.records if r.pass_name.startswith("quantize")]
    assert lossy and not any(r.status == KEPT for r in lossy)
    assert result.best in (None, "graph")  # only the accuracy-free step can pass
    assert all(b.passed for b in result.kept)


@pytest.mark.slow
def test_accuracy_free_steps_feed_int8_so_lineage_reads_graph_then_int8(tmp_path: Path) -> None:
    """(D25) The graph step is not slower than the original, so int8 is built on top of it."""
    model = _mlp(tmp_path / "model.onnx")
    result = _search(tmp_path, model, _rows(tmp_path / "rows.npz", (64, WIDTH)), 0.98)
    int8 = result.log.get("int8-dynamic")
    assert int8.parent == "graph" and int8.status == KEPT
    kept = {b.name: b for b in result.kept}
    assert kept["graph"].parent == "original" and [b.name for b in result.kept].index("graph") == 0


class _Clock:
    """A fake clock (the true edge): jumps past the budget when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.slow
def test_the_budget_stops_the_search_and_keeps_the_best_found_so_far(tmp_path: Path) -> None:
    """(D21) The clock passes the budget while the second int8 recipe is built: what was built is
    measured and the best passing one kept; every later recipe is recorded as not reached."""
    clock = _Clock()

    def event(message: str) -> None:
        if message.startswith("search: building int8-dynamic-u8"):
            clock.now = 1e6

    model = _mlp(tmp_path / "model.onnx")
    result = _search(tmp_path, model, _rows(tmp_path / "rows.npz", (64, WIDTH)), 0.98, clock=clock,
                     hooks=loop.Hooks(event=event))
    assert result.log.stopped_by_budget
    assert result.log.get("int8-dynamic-rr").status == UNREACHED
    assert result.best in ("int8-dynamic", "int8-dynamic-u8") and result.log.get(result.best).passed


def test_recipes_a_target_cannot_run_are_skipped_with_the_reason() -> None:
    """(D21) browser-wasm has no signed-int8 ConvInteger: those recipes are skipped, not tried."""
    tried, skipped = space.int8_recipes(target="browser-wasm", op_types={"Conv"}, calibrated=False)
    assert "int8-dynamic" in [r.name for r, _ in skipped] and "int8-dynamic-u8" in [r.name for r in tried]
    assert all("ConvInteger" in why for _, why in skipped)
    assert space.int8_recipes(target="cuda", op_types={"MatMul"}, calibrated=True) == ([], [])
    static = space.int8_recipes(target="cpu", op_types={"MatMul"}, calibrated=True)[0]
    assert {r.options["format"] for r in static if r.calibrated} == {"qdq", "qoperator"}
    assert not any(r.calibrated for r in space.int8_recipes(target="cpu", op_types=set(), calibrated=False)[0])


def test_lossy_chains_follow_the_task_and_the_data() -> None:
    """(D25) Embeddings are not pruned; a classifier distills without training data; a regressor only with it."""
    names = lambda **kw: [r.name for r in space.lossy_firsts(target="cpu", **kw)]  # noqa: E731
    assert names(task="embedding", has_training=False) == []
    assert names(task="classification", has_training=False) == ["prune-structured", "distill"]
    assert names(task="regression", has_training=False) == ["prune-structured"]
    assert "distill" in names(task="regression", has_training=True)


def test_a_budget_is_spent_by_its_clock_and_refuses_nonsense() -> None:
    """(D21) The budget reads only its clock; a budget of zero seconds is refused."""
    clock = _Clock()
    budget = Budget(10, clock)
    clock.now = 4
    assert (budget.spent, budget.left, budget.exhausted) == (4, 6, False)
    clock.now = 10
    assert budget.exhausted and budget.left == 0
    with pytest.raises(ValueError, match="positive"):
        Budget(0, clock)


def test_the_split_holds_out_every_other_row_and_keeps_small_sets_whole(tmp_path: Path) -> None:
    """(D26) Selection and held-out rows never overlap; labels follow their rows; tiny sets are not split."""
    np.savez(tmp_path / "v.npz", x=np.arange(40, dtype=np.float32).reshape(20, 2), labels=np.arange(20))
    split = splits.write_splits(tmp_path / "v.npz", tmp_path / "out")
    selection, held = np.load(split.selection), np.load(split.holdout)
    assert list(selection["labels"]) == list(range(0, 20, 2)) and list(held["labels"]) == list(range(1, 20, 2))
    assert (held["x"][:, 0] == held["labels"] * 2).all()
    assert "10 held-out validation rows" in split.describe()
    np.savez(tmp_path / "small.npz", x=np.zeros((6, 2), np.float32))
    small = splits.write_splits(tmp_path / "small.npz", tmp_path / "small")
    assert not small.held_out and "too few" in small.describe()

