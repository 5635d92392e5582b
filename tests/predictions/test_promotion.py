"""Promotion without downtime, routing across processes (each warming its new primary), and serving without Redis."""

from __future__ import annotations

import http.client
import threading
import time
from typing import Any
from urllib.parse import urlparse

import numpy as np
import orjson
import pytest

from predictions import cache, router, routing_table, runtime, services
from predictions.routes import selector_for
from tests.predictions.conftest import OtherProcess, sample
from tests.real_services import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 4
AFTER_PROMOTION = 15  # requests each thread still sends once the promotion is done
MAX_PER_THREAD = 400
TIME_CAP_S = 60.0


def test_promoting_under_load_fails_no_request(live_server: Any, registry: Any, mlp: Any, features: np.ndarray,
                                               settings: Any) -> None:
    """E3: no request sees a half-made switch while a promotion happens under load."""
    settings.MODELHUB_SERVING_AUTH_CACHE_S = 5
    token = registry.token("mlp", rate=0)
    child = registry.copy_variant(mlp, name="graph")
    url = urlparse(live_server.url)
    body = orjson.dumps({"inputs": {"features": features[:1]}}, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    promoted = threading.Event()
    results: list[list[tuple[int, str]]] = [[] for _ in range(THREADS)]
    deadline = time.monotonic() + TIME_CAP_S

    def load(mine: list[tuple[int, str]]) -> None:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        after = 0
        while len(mine) < MAX_PER_THREAD and after < AFTER_PROMOTION and time.monotonic() < deadline:
            after += promoted.is_set()
            try:
                connection.request("POST", "/api/v1/models/mlp/predict", body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                mine.append((response.status, orjson.loads(data).get("variant", "") if response.status == 200 else ""))
            except (OSError, http.client.HTTPException) as exc:
                mine.append((-1, repr(exc)))
                connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        connection.close()

    threads = [threading.Thread(target=load, args=(results[i],)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    while sum(map(len, results)) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    registry.promote(child)
    promoted.set()
    for thread in threads:
        thread.join(timeout=TIME_CAP_S)
    answers = [answer for mine in results for answer in mine]
    assert not any(thread.is_alive() for thread in threads)
    assert [a for a in answers if a[0] != 200] == []
    assert {variant for _, variant in answers} == {"original", "graph"}
    assert all(mine[-1][1] == "graph" for mine in results)  # every thread ends on the new variant


def test_a_promotion_reaches_another_process_through_the_redis_generation(
        serving_redis: RedisServer, registry: Any, mlp: Any, other_process: OtherProcess) -> None:
    """E3: the other process learns of promotions through Redis only, at its next check."""
    other = other_process
    registry.promote(registry.copy_variant(mlp, name="graph"))
    assert other.route().chain[0].name == "original"  # until its next check
    other.next_check()
    assert other.route().chain[0].name == "graph"


def _onnx_loads() -> float:
    return sample("modelhub_runtime_load_seconds_count", {"kind": "onnxruntime"})


def test_another_process_loads_the_new_primary_before_it_routes_a_request_to_it(
        serving_redis: RedisServer, registry: Any, mlp: Any, features: np.ndarray, other_process: OtherProcess) -> None:
    """E3: a process that learns of a promotion through Redis loads and warms the new primary while it
    rebuilds the route, so the first request routed there runs on a ready session and pays no load."""
    other = other_process
    graph = registry.copy_variant(mlp, name="graph")
    registry.promote(graph)
    runtime.RUNTIMES.clear()  # the other process has loaded nothing of the new primary
    loads = _onnx_loads()

    other.next_check()
    route = other.route()
    assert route.chain[0].name == "graph" and runtime.RUNTIMES.loaded(graph.sha256)
    assert _onnx_loads() == loads + 1
    answer = router.run_chain(route, {"features": features[:1]})
    assert (answer.variant.name, answer.fallback_reason) == ("graph", None)
    assert answer.outputs["quality"].shape == (1, 1)
    assert _onnx_loads() == loads + 1  # answered by the session loaded when the route changed


def test_while_one_request_warms_the_new_primary_the_others_keep_the_old_route(
        serving_redis: RedisServer, registry: Any, mlp: Any, other_process: OtherProcess) -> None:
    """E3: during a promotion no request waits for the new primary's load: the route being rebuilt
    (and its primary warmed) by one request is answered by the old route for the others."""
    other = other_process
    registry.promote(registry.copy_variant(mlp, name="graph"))
    other.next_check()

    with other.table._build_lock(("mlp", selector_for(alias="production"))):  # noqa: SLF001 - held as the request warming the new primary holds it
        assert other.route().chain[0].name == "original"
    assert other.route().chain[0].name == "graph"


def test_a_promotion_reaches_another_process_through_the_database_without_redis(
        serving_redis: RedisServer, registry: Any, mlp: Any, other_process: OtherProcess) -> None:
    """E3: with Redis down, the other process notices the promotion through the database instead."""
    other = other_process
    serving_redis.stop()

    registry.promote(registry.copy_variant(mlp, name="graph"))
    other.next_check()
    assert other.route().chain[0].name == "graph"


def test_routes_are_shared_through_the_redis_routing_table(serving_redis: RedisServer, registry: Any,
                                                           mlp: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    selector = selector_for(alias="production")
    first = routing_table.RoutingTable().route("mlp", selector)
    with CaptureQueriesContext(connection) as queries:
        second = routing_table.RoutingTable().route("mlp", selector)  # a fresh process: read from Redis
    assert second == first and len(queries) == 0


def test_predictions_are_answered_while_redis_is_down(serving_redis: RedisServer, registry: Any, mlp: Any,
                                                       caller: Any, features: np.ndarray) -> None:
    services.config_set(model=mlp.model, cache_responses=True, cache_ttl_s=60)
    first = {"inputs": {"features": features[:1]}}
    assert caller.post("mlp", first).json()["cached"] is False
    cache.RESPONSES.clear()  # only Redis has it now
    assert caller.post("mlp", first).json()["cached"] is True

    serving_redis.stop()
    unavailable = sum(sample("modelhub_serving_redis_unavailable_total", {"op": op})
                      for op in ("throttle", "response_get", "response_set", "generation"))
    started = time.monotonic()
    answers = [caller.post("mlp", {"inputs": {"features": features[i:i + 1]}}) for i in range(1, 4)]
    elapsed = time.monotonic() - started
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["cached"] for a in answers] == [False, False, False]
    assert elapsed < 2.0  # no per-request connection timeouts: Redis is left alone while it is down
    assert sum(sample("modelhub_serving_redis_unavailable_total", {"op": op})
               for op in ("throttle", "response_get", "response_set", "generation")) > unavailable
    assert not cache.available()


def test_the_throttle_counts_in_process_while_redis_is_down(serving_redis: RedisServer, registry: Any,
                                                            mlp: Any, make_caller: Any,
                                                            features: np.ndarray) -> None:
    caller = make_caller(registry.token("mlp", rate=2))
    serving_redis.stop()
    statuses = [caller.post("mlp", {"inputs": {"features": features[:1]}}).status_code for _ in range(8)]
    assert 200 in statuses and statuses[-1] == 429
