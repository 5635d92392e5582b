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

import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from modelhub.errors import ServiceError
from predictions import metrics


class Overloaded(ServiceError):
    """More predictions than this process admits: 503, come back in a second."""

    status = 503
    reason = "overloaded"
    retry_after_s = 1


class Admission:
    """Counts the predictions at work and waiting in this process; ``slot`` admits or refuses one.

    Waiters are served first come, first served, and a freed place is handed straight to the
    longest waiter (it never becomes free for a newcomer to take first): with a plain condition
    variable a request arriving just then could take the place, the woken waiter would go back
    to the end of the line, and under a steady closed loop one could lose that race until its
    wait ran out, a 503 well within capacity. The estimate of how long the queue ahead takes uses
    the median of the last ``HOLDS`` holds, not a moving average: one slow prediction (a worker's
    first, which loads the model; a pause of the host) moved the average by a tenth of its length
    and had a queue that drains in milliseconds refused at once for the next dozens of requests.
    """

    HOLDS = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: deque[threading.Event] = deque()
        self._holds: deque[float] = deque(maxlen=self.HOLDS)
        self.active = 0

    @property
    def queued(self) -> int:
        """Predictions waiting for a place."""
        return len(self._waiters)

    @property
    def hold_s(self) -> float:
        """The median of how long recent predictions held their place (0 before any)."""
        return statistics.median(self._holds) if self._holds else 0.0

    @hold_s.setter
    def hold_s(self, value: float) -> None:
        self._holds.clear()
        self._holds.append(value)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the active places for the ``with`` block; raise Overloaded when none comes in time."""
        self._acquire()
        started = time.perf_counter()
        try:
            yield
        finally:
            self._release(time.perf_counter() - started)

    def _acquire(self) -> None:
        limit = settings.MODELHUB_SERVING_MAX_ACTIVE
        with self._lock:
            if self.active < limit and not self._waiters:
                self.active += 1
                return
            granted = self._enqueue(limit)
        if granted.wait(timeout=settings.MODELHUB_SERVING_QUEUE_WAIT_MS / 1000):
            return
        with self._lock:
            if granted.is_set():
                return  # handed a place just as the wait ran out
            self._waiters.remove(granted)
        raise Overloaded(f"The server is at capacity: no place to work on this prediction within "
                         f"{settings.MODELHUB_SERVING_QUEUE_WAIT_MS} ms; retry in a second.")

    def _enqueue(self, limit: int) -> threading.Event:
        """Join the queue (the lock is held); refuse when it is full or would outlast the wait."""
        wait_s = settings.MODELHUB_SERVING_QUEUE_WAIT_MS / 1000
        if self.queued >= settings.MODELHUB_SERVING_MAX_QUEUED or (self.queued + 1) * self.hold_s / limit > wait_s:
            raise Overloaded(f"The server is at capacity ({limit} predictions at work and "
                             f"{self.queued} waiting in this process); retry in a second.")
        granted = threading.Event()
        self._waiters.append(granted)
        return granted

    def _release(self, held: float) -> None:
        with self._lock:
            self._holds.append(held)
            if self._waiters and self.active <= settings.MODELHUB_SERVING_MAX_ACTIVE:
                self._waiters.popleft().set()  # the place passes to the longest waiter; active stays
            else:
                self.active -= 1


ADMISSION = Admission()
metrics.PREDICT_ACTIVE.set_function(lambda: ADMISSION.active)
metrics.PREDICT_QUEUED.set_function(lambda: ADMISSION.queued)
