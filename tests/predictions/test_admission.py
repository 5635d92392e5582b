"""Admission control: a bounded number of predictions at work per process, a bounded wait, then 503."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from predictions.admission import ADMISSION, Admission, Overloaded
from tests.predictions.conftest import sample


@pytest.fixture
def one_at_a_time(settings: Any) -> Any:
    settings.MODELHUB_SERVING_MAX_ACTIVE = 1
    settings.MODELHUB_SERVING_MAX_QUEUED = 4
    settings.MODELHUB_SERVING_QUEUE_WAIT_MS = 50
    return settings


def _wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


@pytest.mark.django_db
def test_a_process_at_capacity_refuses_a_prediction_with_503_and_retry_after(
        caller: Any, features: np.ndarray, one_at_a_time: Any) -> None:
    """C6: past capacity a prediction is refused at once with 503 and Retry-After, and counted."""
    one_at_a_time.MODELHUB_SERVING_MAX_QUEUED = 0
    body = {"inputs": {"features": features.tolist()}}
    refused_before = sample("modelhub_predict_errors_total", {"reason": "overloaded"})
    with ADMISSION.slot():
        response = caller.post("mlp", body)
    assert response.status_code == 503 and response["Retry-After"] == "1"
    assert "at capacity" in response.json()["error"]
    assert sample("modelhub_predict_errors_total", {"reason": "overloaded"}) == refused_before + 1
    assert caller.post("mlp", body).status_code == 200
    assert (ADMISSION.active, ADMISSION.queued) == (0, 0)


def test_a_waiting_prediction_is_admitted_when_a_place_frees_within_the_wait(one_at_a_time: Any) -> None:
    one_at_a_time.MODELHUB_SERVING_QUEUE_WAIT_MS = 30_000
    admission, outcome = Admission(), []

    def second() -> None:
        with admission.slot():
            outcome.append("admitted")

    with admission.slot():
        waiter = threading.Thread(target=second)
        waiter.start()
        _wait_until(lambda: admission.queued == 1)
    waiter.join(timeout=10)
    assert outcome == ["admitted"] and (admission.active, admission.queued) == (0, 0)


def test_a_waiting_prediction_is_refused_when_its_wait_runs_out(one_at_a_time: Any) -> None:
    admission, outcome = Admission(), []

    def second() -> None:
        try:
            with admission.slot():
                outcome.append("admitted")
        except Overloaded as exc:
            outcome.append(exc.message)

    with admission.slot():
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(timeout=10)
    assert len(outcome) == 1 and "no place to work on this prediction within 50 ms" in outcome[0]


def test_a_queue_that_would_outlast_the_wait_is_refused_without_waiting(one_at_a_time: Any) -> None:
    one_at_a_time.MODELHUB_SERVING_QUEUE_WAIT_MS = 30_000
    admission = Admission()
    admission.hold_s = 60.0  # recent predictions held their place for a minute each
    with admission.slot(), pytest.raises(Overloaded, match=r"1 predictions at work and 0 waiting"):
        with admission.slot():
            pass
    assert (admission.active, admission.queued) == (0, 0)


def test_a_prediction_that_fails_gives_its_place_back(one_at_a_time: Any) -> None:
    admission = Admission()
    with pytest.raises(ValueError), admission.slot():
        raise ValueError("the model failed")
    with admission.slot():
        assert admission.active == 1
    assert admission.active == 0 and admission.hold_s >= 0


def _closed_loop(admission: Admission, clients: int, requests: int, work: Any) -> tuple[int, list[Overloaded]]:
    """``clients`` threads each sending ``requests`` one after another (a closed loop): (answered, refusals)."""
    answered, refused, lock = [0], [], threading.Lock()
    start = threading.Barrier(clients)

    def client(index: int) -> None:
        start.wait()
        for number in range(requests):
            try:
                with admission.slot():
                    work(index, number)
                with lock:
                    answered[0] += 1
            except Overloaded as exc:
                with lock:
                    refused.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answered[0], refused


def test_a_closed_loop_of_32_within_capacity_is_never_refused_even_after_one_slow_prediction(settings: Any) -> None:
    """C6: 32 clients in a closed loop fit (4 at work, 28 waiting a few ms each): none is refused, also
    after one prediction held its place for 0.4 s (a worker's first, loading the model), which made
    the old moving average refuse queues that drain in milliseconds."""
    settings.MODELHUB_SERVING_MAX_ACTIVE, settings.MODELHUB_SERVING_MAX_QUEUED = 4, 32
    settings.MODELHUB_SERVING_QUEUE_WAIT_MS = 100
    admission = Admission()

    def work(index: int, number: int) -> None:
        time.sleep(0.4 if (index, number) == (0, 0) else 0.001)

    answered, refused = _closed_loop(admission, clients=32, requests=25, work=work)
    assert (answered, len(refused)) == (32 * 25, 0), [r.message for r in refused[:3]]
    assert (admission.active, admission.queued) == (0, 0)


def test_an_overload_beyond_the_queue_is_still_refused_with_503_and_retry_after(settings: Any) -> None:
    """C6: 48 clients against 2 places and a queue of 8: the excess is refused (503, Retry-After), the
    rest answered, and the counts return to zero."""
    settings.MODELHUB_SERVING_MAX_ACTIVE, settings.MODELHUB_SERVING_MAX_QUEUED = 2, 8
    settings.MODELHUB_SERVING_QUEUE_WAIT_MS = 100
    admission = Admission()
    answered, refused = _closed_loop(admission, clients=48, requests=5, work=lambda i, n: time.sleep(0.005))
    assert refused and answered and answered + len(refused) == 48 * 5
    assert {(r.status, r.headers["Retry-After"]) for r in refused} == {(503, "1")}
    assert (admission.active, admission.queued) == (0, 0)


def test_a_freed_place_goes_to_the_longest_waiter_not_to_a_newcomer(one_at_a_time: Any) -> None:
    """A place handed over on release: a request arriving right then queues behind the waiter."""
    one_at_a_time.MODELHUB_SERVING_QUEUE_WAIT_MS = 30_000
    admission, order = Admission(), []

    def waiter(name: str) -> None:
        with admission.slot():
            order.append(name)

    first = threading.Thread(target=waiter, args=("waiter",))
    with admission.slot():
        first.start()
        _wait_until(lambda: admission.queued == 1)
    newcomer = threading.Thread(target=waiter, args=("newcomer",))
    newcomer.start()
    first.join(timeout=10)
    newcomer.join(timeout=10)
    assert order[0] == "waiter" and sorted(order) == ["newcomer", "waiter"]
