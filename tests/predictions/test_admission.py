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


@pytest.mark.django_db(transaction=True)
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
