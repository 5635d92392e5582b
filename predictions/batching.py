"""Server-side dynamic batching: concurrent requests for one variant share one session run.

Off unless a variant turns it on (``Variant.serving_batching``, set from the dashboard only when
its benchmark says batching pays). Within one process, requests for the same loaded runtime whose
inputs have the same names, dtypes and non-batch dimensions meet in an open *group*: the first
one is its leader and waits up to ``MODELHUB_SERVING_BATCHING_WINDOW_MS`` (less when the group
fills to ``MODELHUB_SERVING_BATCHING_MAX_ROWS`` rows first), then stacks the rows of every member
still waiting, runs the session once in its own thread and hands each member exactly its rows of
every output. No background thread: nothing to start after a fork or stop at exit, and while one
group runs the next one fills, so runs overlap as they did unbatched.

- Deadlines: a member waits at most ``MODELHUB_SERVING_BATCHING_TIMEOUT_MS`` for its answer and
  then gets ``BatchTimeout`` (503 + Retry-After); one that gave up before its group ran is left
  out of the run (cancelled), one whose run was under way has its rows dropped.
- Errors: when a joined run fails, or returns outputs that cannot be split by rows, each member is
  run again alone, so a bad member gets its own error and the others their answers; a run of one
  raises as it would unbatched. The router then treats outputs and errors exactly as unbatched
  (fallback, breaker, non-finite check, cache and metrics unchanged).
- Never batched: runtimes without a free leading dimension on every input and output
  (``Runtime.batchable``), a request whose inputs disagree on their row count, a request that
  alone fills the maximum.

Admission bounds what can meet: with ``MODELHUB_SERVING_MAX_ACTIVE`` predictions at work per
process, a group holds at most that many requests.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings

from predictions import metrics
from predictions.refusals import Unavailable
from predictions.runtime import Runtime

WAITING, TAKEN, CANCELLED = "waiting", "taken", "cancelled"


class BatchTimeout(Unavailable):
    """A batched request got no answer within its deadline (503: the server is too busy now)."""

    reason = "batch_timeout"

    def __init__(self, waited_ms: float) -> None:
        super().__init__(f"No answer within {waited_ms:.0f} ms while batched with other requests; retry shortly.",
                         retry_after=1)


@dataclass(eq=False)
class Ticket:
    """One request in a group: its inputs, rows, deadline, and what its run gave it."""

    feeds: dict[str, np.ndarray]
    rows: int
    deadline: float
    enqueued: float = field(default_factory=time.monotonic)
    state: str = WAITING
    done: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: BaseException | None = None

    def answer(self) -> dict[str, np.ndarray]:
        """The outputs of this request, or its error raised."""
        if self.error is not None:
            raise self.error
        assert self.outputs is not None
        return self.outputs


@dataclass(eq=False)
class Group:
    """Tickets waiting for one run; ``full`` wakes the leader before its window ends."""

    tickets: list[Ticket] = field(default_factory=list)
    rows: int = 0
    full: threading.Event = field(default_factory=threading.Event)


def batch_key(runtime: Runtime, feeds: dict[str, np.ndarray]) -> tuple[Any, ...] | None:
    """What requests must share to be joined (runtime, then each input's name, dtype and non-batch
    dims), or None when this request cannot be batched."""
    if not runtime.batchable or not feeds:
        return None
    arrays = sorted(feeds.items())
    if any(a.ndim == 0 for _, a in arrays) or len({a.shape[0] for _, a in arrays}) != 1:
        return None
    return (id(runtime), *((name, a.dtype.str, a.shape[1:]) for name, a in arrays))


def _rows(feeds: dict[str, np.ndarray]) -> int:
    return next(iter(feeds.values())).shape[0]


class Batcher:
    """This process's open groups, by ``batch_key``; ``run`` answers one request through them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[tuple[Any, ...], Group] = {}

    def run(self, runtime: Runtime, feeds: dict[str, np.ndarray], timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """The outputs of ``feeds`` on ``runtime``, computed in a run shared with concurrent requests
        where they can be joined; ``BatchTimeout`` past the deadline."""
        key = batch_key(runtime, feeds)
        limit = settings.MODELHUB_SERVING_BATCHING_MAX_ROWS
        if key is None or _rows(feeds) >= limit:
            return runtime.run(feeds)
        timeout_s = settings.MODELHUB_SERVING_BATCHING_TIMEOUT_MS / 1000 if timeout_s is None else timeout_s
        ticket = Ticket(feeds=feeds, rows=_rows(feeds), deadline=time.monotonic() + timeout_s)
        group, leads = self._join(key, ticket, limit)
        if leads:
            self._lead(key, group, ticket, runtime)
            return ticket.answer()
        return self._follow(ticket, timeout_s)

    def _join(self, key: tuple[Any, ...], ticket: Ticket, limit: int) -> tuple[Group, bool]:
        """Add the ticket to the open group of its key, or open a new one that it leads."""
        with self._lock:
            group = self._open.get(key)
            leads = group is None or group.rows + ticket.rows > limit
            if leads:
                if group is not None:
                    group.full.set()  # it cannot take these rows: let its leader run it now
                group = self._open[key] = Group()
            group.tickets.append(ticket)
            group.rows += ticket.rows
            if group.rows >= limit:
                group.full.set()
                del self._open[key]
        return group, leads

    def _lead(self, key: tuple[Any, ...], group: Group, ticket: Ticket, runtime: Runtime) -> None:
        """Wait for the window (or a full group), close the group, run its live members."""
        window_s = settings.MODELHUB_SERVING_BATCHING_WINDOW_MS / 1000
        group.full.wait(timeout=max(0.0, min(window_s, ticket.deadline - time.monotonic())))
        with self._lock:
            if self._open.get(key) is group:
                del self._open[key]
            members = [t for t in group.tickets if t.state == WAITING]
            for member in members:
                member.state = TAKEN
        execute(runtime, members)

    def _follow(self, ticket: Ticket, timeout_s: float) -> dict[str, np.ndarray]:
        """Wait for the leader's run until the deadline; give up (and leave the group) after it."""
        if ticket.done.wait(timeout=max(0.0, ticket.deadline - time.monotonic())):
            return ticket.answer()
        with self._lock:
            if ticket.state == WAITING:
                ticket.state = CANCELLED  # its leader will leave it out of the run
        if ticket.done.is_set():  # answered in the meantime
            return ticket.answer()
        raise BatchTimeout(timeout_s * 1000)


def execute(runtime: Runtime, members: list[Ticket]) -> None:
    """One run for all members' rows, each given its own slice; every member is done afterwards."""
    model = runtime.spec.model
    started = time.monotonic()
    metrics.BATCH_SIZE.labels(model).observe(len(members))
    for member in members:
        metrics.BATCH_QUEUE.labels(model).observe(started - member.enqueued)
    try:
        if len(members) == 1 or not _run_joined(runtime, members):
            _run_each(runtime, members)
    finally:
        for member in members:
            if member.outputs is None and member.error is None:
                member.error = RuntimeError("the batched run ended without an answer for this request")
            member.done.set()


def _run_joined(runtime: Runtime, members: list[Ticket]) -> bool:
    """Run the stacked rows once and split the outputs; False when that failed or cannot be split
    (then nobody has been answered yet)."""
    names = list(members[0].feeds)
    joined = {name: np.concatenate([m.feeds[name] for m in members]) for name in names}
    total = sum(m.rows for m in members)
    try:
        outputs = runtime.run(joined)
    except Exception:  # noqa: BLE001 - which member was bad is found by running each alone
        return False
    if any(np.ndim(out) == 0 or np.shape(out)[0] != total for out in outputs.values()):
        return False  # an output without one row per input row: split would be a guess
    offset = 0
    for member in members:
        member.outputs = {name: out[offset:offset + member.rows] for name, out in outputs.items()}
        offset += member.rows
    return True


def _run_each(runtime: Runtime, members: list[Ticket]) -> None:
    for member in members:
        try:
            member.outputs = runtime.run(member.feeds)
        except Exception as exc:  # noqa: BLE001 - raised again in the member's own thread
            member.error = exc


BATCHER = Batcher()


def run(runtime: Runtime, feeds: dict[str, np.ndarray], timeout_s: float | None = None) -> dict[str, np.ndarray]:
    """``BATCHER.run``: this process's batcher answers one request."""
    return BATCHER.run(runtime, feeds, timeout_s)
