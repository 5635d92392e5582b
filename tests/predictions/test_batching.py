"""Server-side batching with real ONNX Runtime sessions and real threads: joined runs, own rows,
shapes that must not meet, deadlines, a bad member, and off by default."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from predictions import batching, metrics, runtime
from predictions.batching import BatchTimeout
from tests.onnx_graphs import linear_onnx, node, onnx_model, tensor, write_model
from workers import ort


def _runtime(path: Path, model: str) -> runtime.OnnxRuntime:
    spec = runtime.VariantSpec(id=0, model=model, version=1, name="test", sha256=model, storage_key="", files=(),
                               runtime=runtime.ONNX, target="cpu", size_bytes=1, signature={}, batching=True)
    return runtime.OnnxRuntime(spec, ort.session(path, threads=1, inter_threads=1), 1)


def _sample(metric: Any, name: str, model: str) -> float:
    """One sample of one of the batcher's metrics (read from it alone: the whole registry asks the database)."""
    found = [s.value for m in metric.collect() for s in m.samples if s.name == name and s.labels == {"model": model}]
    return found[0] if found else 0.0


def _runs(model: str) -> float:
    return _sample(metrics.BATCH_SIZE, "modelhub_batch_size_count", model)


def _rows_joined(model: str) -> float:
    return _sample(metrics.BATCH_SIZE, "modelhub_batch_size_sum", model)


def _at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads started together; each one's result or the exception it raised."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def one(index: int) -> None:
        start.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.fixture
def wide_window(settings: Any) -> Any:
    """A window long enough for every thread of a test to arrive; groups close when full."""
    settings.MODELHUB_SERVING_BATCHING_WINDOW_MS = 2000
    settings.MODELHUB_SERVING_BATCHING_TIMEOUT_MS = 30_000
    return settings


@pytest.fixture(scope="module")
def variable_width(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = relu(x), x float32 [batch, n]: any width, so shapes that differ can arrive together."""
    model = onnx_model([node("Relu", ["x"], ["y"])], [tensor("x", "float32", ["batch", "n"])],
                       [tensor("y", "float32", ["batch", "n"])], name="relu", ir_version=10)
    return write_model(model, tmp_path_factory.mktemp("relu") / "relu.onnx", check=True)


@pytest.fixture(scope="module")
def lookup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = table[idx], idx int64 [batch, 1] into a 4-row table: an index past 3 fails the run."""
    table = np.arange(8, dtype=np.float32).reshape(4, 2)
    model = onnx_model([node("Gather", ["table", "idx"], ["y"], axis=0)], [tensor("idx", "int64", ["batch", 1])],
                       [tensor("y", "float32", ["batch", 1, 2])], {"table": table}, name="lookup", ir_version=10)
    return write_model(model, tmp_path_factory.mktemp("lookup") / "lookup.onnx", check=True)


def test_concurrent_requests_share_one_run_and_each_gets_exactly_its_own_rows(
        quality_mlp: Any, features: np.ndarray, wide_window: Any) -> None:
    """C6 (burst): eight concurrent one-row requests become one session run of eight rows, and each
    caller gets the answer it would have got alone."""
    wide_window.MODELHUB_SERVING_BATCHING_MAX_ROWS = 8
    loaded = _runtime(quality_mlp.onnx, "mlp-joined")
    rows = [np.ascontiguousarray(np.roll(features, i, axis=0)[:1]) for i in range(8)]
    alone = [loaded.run({"features": row})["quality"] for row in rows]
    runs = _runs("mlp-joined")
    answers = _at_once([lambda row=row: batching.run(loaded, {"features": row}) for row in rows])
    assert _runs("mlp-joined") == runs + 1 and _rows_joined("mlp-joined") == 8
    for answer, expected in zip(answers, alone, strict=True):
        assert answer["quality"].shape == expected.shape == (1, 1)
        np.testing.assert_allclose(answer["quality"], expected, rtol=1e-5, atol=1e-6)
    assert _sample(metrics.BATCH_QUEUE, "modelhub_batch_queue_seconds_count", "mlp-joined") == 8


def test_requests_of_several_rows_are_split_back_by_their_own_row_counts(
        quality_mlp: Any, features: np.ndarray, wide_window: Any) -> None:
    """C6 (burst): requests of 1, 2 and 3 rows share a run of six rows; each gets its own rows back."""
    wide_window.MODELHUB_SERVING_BATCHING_MAX_ROWS = 6
    loaded = _runtime(quality_mlp.onnx, "mlp-rows")
    parts = [features[:1], features[1:3], features[:3][::-1].copy()]
    answers = _at_once([lambda part=part: batching.run(loaded, {"features": part}) for part in parts])
    assert _runs("mlp-rows") == 1
    for answer, part in zip(answers, parts, strict=True):
        np.testing.assert_allclose(answer["quality"], loaded.run({"features": part})["quality"], rtol=1e-5, atol=1e-6)


def test_requests_whose_non_batch_dims_or_dtypes_differ_are_not_joined(
        variable_width: Path, wide_window: Any) -> None:
    """C1 (shapes): widths 3 and 5, and float64 beside float32, never share a run: three runs of two."""
    wide_window.MODELHUB_SERVING_BATCHING_MAX_ROWS = 2
    loaded = _runtime(variable_width, "relu-shapes")
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal((1, width)).astype(dtype) for width, dtype in
             [(3, np.float32), (5, np.float32), (3, np.float64)] for _ in range(2)]
    answers = _at_once([lambda x=x: batching.run(loaded, {"x": x}) for x in feeds])
    assert _runs("relu-shapes") == 3 and _rows_joined("relu-shapes") == 6
    for answer, x in zip(answers, feeds, strict=True):
        np.testing.assert_allclose(answer["y"], np.maximum(x, 0).astype(np.float32), rtol=1e-6)


def test_a_model_with_a_fixed_batch_dim_or_no_batch_axis_is_never_batched(tmp_path: Path, wide_window: Any) -> None:
    """C1 (shapes): a [1, 3] input or a rank-1 input has no batch axis to stack rows on: run directly."""
    fixed = _runtime(linear_onnx(tmp_path / "fixed.onnx", np.eye(3), batch=1), "fixed")
    flat_model = onnx_model([node("Relu", ["x"], ["y"])], [tensor("x", "float32", [3])],
                            [tensor("y", "float32", [3])], name="flat", ir_version=10)
    flat = _runtime(write_model(flat_model, tmp_path / "flat.onnx"), "flat")
    assert not fixed.batchable and not flat.batchable
    started = time.monotonic()
    assert batching.run(fixed, {"x": np.ones((1, 3), np.float32)})["y"].shape == (1, 3)
    assert batching.run(flat, {"x": np.ones(3, np.float32)})["y"].shape == (3,)
    assert time.monotonic() - started < 1.5  # no 2 s window waited
    assert _runs("fixed") == _runs("flat") == 0


def test_a_caller_past_its_deadline_before_the_run_is_dropped_and_gets_503(
        quality_mlp: Any, features: np.ndarray, settings: Any) -> None:
    """C6 (burst): a request that gives up while its group waits gets 503 + Retry-After and is left
    out of the run; the leader still answers, in a run of one."""
    settings.MODELHUB_SERVING_BATCHING_WINDOW_MS = 400
    loaded = _runtime(quality_mlp.onnx, "mlp-deadline")
    outcome: dict[str, Any] = {}
    leader = threading.Thread(target=lambda: outcome.update(leader=batching.run(loaded, {"features": features[:1]}, 30)))
    leader.start()
    deadline = time.monotonic() + 10
    while not batching.BATCHER._open and time.monotonic() < deadline:  # noqa: SLF001 - wait for the open group
        time.sleep(0.001)
    with pytest.raises(BatchTimeout) as refused:
        batching.run(loaded, {"features": features[1:2]}, timeout_s=0.05)
    leader.join(timeout=10)
    assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"
    assert outcome["leader"]["quality"].shape == (1, 1)
    assert _runs("mlp-deadline") == 1 and _rows_joined("mlp-deadline") == 1


class _SlowSession:
    """A real ONNX Runtime session whose runs take at least ``delay_s`` longer (a loaded host)."""

    def __init__(self, session: Any, delay_s: float) -> None:
        self.session, self.delay_s = session, delay_s

    def run(self, *args: Any) -> Any:
        time.sleep(self.delay_s)
        return self.session.run(*args)


def test_a_caller_past_its_deadline_during_the_run_gets_503_and_the_others_their_rows(
        quality_mlp: Any, features: np.ndarray, wide_window: Any) -> None:
    """C6 (burst): the run of a full group takes 0.4 s; a member whose deadline is 0.05 s gives up with
    503 while the other keeps waiting and gets its own row."""
    wide_window.MODELHUB_SERVING_BATCHING_MAX_ROWS = 2
    loaded = _runtime(quality_mlp.onnx, "mlp-slow")
    expected = loaded.run({"features": features[:1]})["quality"]
    loaded.session = _SlowSession(loaded.session, 0.4)
    patient, hasty = _at_once([lambda: batching.run(loaded, {"features": features[:1]}, 30),
                               lambda: (time.sleep(0.05), batching.run(loaded, {"features": features[1:2]}, 0.05))])
    assert isinstance(hasty, BatchTimeout)
    np.testing.assert_allclose(patient["quality"], expected, rtol=1e-5, atol=1e-6)
    assert _runs("mlp-slow") == 1 and _rows_joined("mlp-slow") == 2


def test_one_bad_member_gets_its_own_error_and_the_others_their_answers(lookup: Path, wide_window: Any) -> None:
    """C1 (bad input): an index past the table fails the joined run; each member is then run alone,
    so only the bad one gets ONNX Runtime's error."""
    wide_window.MODELHUB_SERVING_BATCHING_MAX_ROWS = 4
    loaded = _runtime(lookup, "lookup")
    indices = [0, 3, 99, 1]
    answers = _at_once([lambda i=i: batching.run(loaded, {"idx": np.array([[i]], np.int64)}) for i in indices])
    assert _runs("lookup") == 1
    assert isinstance(answers[2], Exception) and not isinstance(answers[2], BatchTimeout)
    for index, answer in zip(indices, answers, strict=True):
        if index != 99:
            np.testing.assert_array_equal(answer["y"], [[[2 * index, 2 * index + 1]]])


@pytest.mark.django_db
def test_batching_is_off_by_default_and_the_router_joins_only_a_variant_that_turned_it_on(
        registry: Any, mlp: Any, features: np.ndarray, wide_window: Any) -> None:
    """C6 (burst), E3 (serving under load): a new variant serves unbatched; with its option on, the
    router's concurrent requests for it share one run, and each answer is its own."""
    from modelhub.models import Variant
    from predictions import router, routes

    wide_window.MODELHUB_SERVING_BATCHING_MAX_ROWS = 4
    original = registry.original(mlp)
    assert original.serving_batching is False
    route = routes.build_route("mlp", routes.selector_for(alias="production"))
    assert route.chain[0].batching is False
    runs = _runs("mlp")
    rows = [features[i:i + 1] for i in range(4)]
    unbatched = _at_once([lambda row=row: router.run_chain(route, {"features": row}) for row in rows])
    assert _runs("mlp") == runs
    Variant.objects.filter(pk=original.pk).update(serving_batching=True)
    route = routes.build_route("mlp", routes.selector_for(alias="production"))
    assert route.chain[0].batching is True
    batched = _at_once([lambda row=row: router.run_chain(route, {"features": row}) for row in rows])
    assert _runs("mlp") == runs + 1
    for one, joined in zip(unbatched, batched, strict=True):
        assert joined.fallback_reason is None
        np.testing.assert_allclose(joined.outputs["quality"], one.outputs["quality"], rtol=1e-5, atol=1e-6)


@pytest.mark.django_db
def test_a_batch_timeout_in_the_router_is_a_503_without_fallback_or_breaker(
        registry: Any, mlp: Any, features: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """C6 (burst): a batched request past its deadline is refused (503), not answered by the next link,
    and the variant's breaker is not told (it was load, not the model)."""
    from modelhub.models import Variant
    from predictions import router, routes
    from predictions.breaker import BREAKER

    Variant.objects.filter(pk=registry.original(mlp).pk).update(serving_batching=True)
    route = routes.build_route("mlp", routes.selector_for(alias="production"))

    def too_late(*args: Any, **kwargs: Any) -> Any:
        raise BatchTimeout(1000)

    monkeypatch.setattr(batching, "run", too_late)
    failures: list[str] = []
    monkeypatch.setattr(BREAKER, "failure", lambda sha, **kw: failures.append(sha))
    with pytest.raises(BatchTimeout):
        router.run_chain(route, {"features": features[:1]})
    assert failures == []
