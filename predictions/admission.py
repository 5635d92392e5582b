"""Admission control: a bounded number of predictions at work per process, a bounded wait, then 503.

A burst beyond what the host can serve must not turn into a queue that grows until every answer
is late or the process runs out of memory. Each process works on at most
``MODELHUB_SERVING_MAX_ACTIVE`` predictions at once; up to ``MODELHUB_SERVING_MAX_QUEUED`` more
wait, each for at most ``MODELHUB_SERVING_QUEUE_WAIT_MS``. A request is refused with 503 and
``Retry-After`` before its body is read or decoded when the queue is full, or at once when the
queue ahead of it would already take longer than the wait (estimated from how long recent
predictions held their place), or when its wait runs out. So an admitted request waits at most
the queue bound before its own work starts, and a refusal costs almost nothing.

For the queue to be seen here rather than in the server's accept queue, run more server threads
per process than ``MAX_ACTIVE`` (gunicorn ``--threads``, see the README).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from modelhub.errors import ServiceError
from predictions import metrics


class Overloaded(ServiceError):
    """More predictions than this process admits: 503, come back in a second."""

    status = 503
    reason = "overloaded"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": "1"}


class Admission:
    """Counts the predictions at work and waiting in this process; ``slot`` admits or refuses one."""

    def __init__(self) -> None:
        self._ready = threading.Condition(threading.Lock())
        self.active = 0
        self.queued = 0
        self.hold_s = 0.0  # moving average of how long a prediction holds its place

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the active places for the ``with`` block; raise Overloaded when none comes in time."""
        with self._ready:
            if self.active >= settings.MODELHUB_SERVING_MAX_ACTIVE:
                self._wait()
            self.active += 1
        started = time.perf_counter()
        try:
            yield
        finally:
            held = time.perf_counter() - started
            with self._ready:
                self.active -= 1
                self.hold_s += (held - self.hold_s) * 0.1
                if self.queued:
                    self._ready.notify()  # Condition wakes its waiters first come, first served

    def _wait(self) -> None:
        """Wait for a free place (the lock is held); refuse when the queue is full or the wait too long."""
        limit = settings.MODELHUB_SERVING_MAX_ACTIVE
        wait_s = settings.MODELHUB_SERVING_QUEUE_WAIT_MS / 1000
        if self.queued >= settings.MODELHUB_SERVING_MAX_QUEUED or (self.queued + 1) * self.hold_s / limit > wait_s:
            raise Overloaded(f"The server is at capacity ({limit} predictions at work and "
                             f"{self.queued} waiting in this process); retry in a second.")
        self.queued += 1
        try:
            admitted = self._ready.wait_for(lambda: self.active < limit, timeout=wait_s)
        finally:
            self.queued -= 1
        if not admitted:
            raise Overloaded(f"The server is at capacity: no place to work on this prediction within "
                             f"{settings.MODELHUB_SERVING_QUEUE_WAIT_MS} ms; retry in a second.")


ADMISSION = Admission()
metrics.PREDICT_ACTIVE.set_function(lambda: ADMISSION.active)
metrics.PREDICT_QUEUED.set_function(lambda: ADMISSION.queued)
