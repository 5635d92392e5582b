"""The one place that decides whether work is sent to the broker, run here now, or run here later.

With ``REDIS_URL`` tasks are published for a worker. Without it (the embedded default: ``make demo``
then ``manage.py runserver``) there is no broker: small tasks (an upload's inspection) run eagerly
in the calling process, and jobs (optimize, benchmark) go to this process's local runner, one
thread that runs them one at a time off the request, so a page returns at once and the job's live
progress shows. Every sender goes through ``send``; everything that needs to switch (the demo,
bench scripts, tests) goes through ``eager``, which runs every task in the caller while it lasts
(tests stay eager), or ``off_request``, the local default on demand. Tasks are looked up by name in
Celery's registry, so the task code is never imported by the code that sends it (which also keeps
the registry free of an import circle).

The names are those of the first release (``workers.tasks.*``): queue routes and the beat
schedule rows in the database refer to them.
"""

from __future__ import annotations

import logging
import queue as fifo
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from django.db import connections

from modelhub.celery import app

log = logging.getLogger(__name__)

INTAKE = "workers.tasks.intake_version_task"
OPTIMIZE = "workers.tasks.optimize_version_task"
BENCHMARK = "workers.tasks.benchmark_job_task"
RECONCILE = "workers.tasks.reconcile_jobs_task"
NIGHTLY = "workers.tasks.nightly_rebenchmark_task"

# Jobs take seconds to minutes: without a broker they still leave the request.
OFF_REQUEST = frozenset({OPTIMIZE, BENCHMARK})

# What ``eager``/``off_request`` asked for (None: nothing asked, the settings decide).
_asked: bool | None = None


def is_eager() -> bool:
    """Whether tasks run in this process (now, or on the local runner) instead of on a worker."""
    return bool(app.conf.task_always_eager)


def runs_off_request(name: str) -> bool:
    """Whether ``name`` goes to this process's local runner: a job, no broker, and nobody asked
    for eager execution (tests, bench scripts)."""
    return name in OFF_REQUEST and is_eager() and _asked is None


def send(name: str, *args: object, what: str) -> bool:
    """Send the task ``name`` with ``args``; False when the broker could not take it.

    Run eagerly, the task's errors are the caller's errors; on the local runner they are the
    task's own (a job ends FAILED with the reason). Sent, a broker failure means "not sent yet":
    the database row is the outbox and the reconciler sends it again later.
    """
    task = app.tasks[name]
    if runs_off_request(name):
        _RUNNER.submit(name, args)
        return True
    if is_eager():
        task.delay(*args)
        return True
    try:
        task.delay(*args)
    except Exception as exc:  # noqa: BLE001 - any broker failure means "not sent yet", never a lost request
        log.warning("could not send %s to the broker (%s); the reconciler will retry", what, exc)
        return False
    return True


@contextmanager
def _mode(always_eager: bool, asked: bool | None) -> Iterator[None]:
    global _asked
    previous = app.conf.task_always_eager, _asked
    app.conf.task_always_eager, _asked = always_eager, asked
    try:
        yield
    finally:
        app.conf.task_always_eager, _asked = previous


def eager(on: bool = True) -> AbstractContextManager[None]:
    """Run every task in this process, now (``on``), or send them all to the broker, until the block ends."""
    return _mode(on, on)


def off_request() -> AbstractContextManager[None]:
    """The local default, whatever the settings say: jobs on the local runner, the rest eagerly."""
    return _mode(True, None)


# How often the idle local runner does the reconciler's round (beat's job where there is no beat).
RECONCILE_EVERY_S = 60.0


class LocalRunner:
    """One daemon thread running the jobs sent without a broker, in order, as a one-slot worker
    would. A job claims its row with a lease (``jobs.job_claim``); what a stopped server left QUEUED
    or RUNNING is taken back by the reconciler's round, which the runner does when runserver starts
    and every ``RECONCILE_EVERY_S`` while idle (there is no beat in the local default)."""

    def __init__(self) -> None:
        self._work: fifo.Queue[tuple[str, tuple[object, ...]]] = fifo.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, name: str, args: tuple[object, ...]) -> None:
        """Queue ``name(*args)`` behind the jobs already waiting."""
        self._work.put((name, args))
        self._ensure_thread()

    def reconcile(self) -> None:
        """Queue the reconciler's round now (starting the thread if it is not running)."""
        self._work.put((RECONCILE, ()))
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="modelhub-local-runner", daemon=True)
                self._thread.start()

    def wait_idle(self) -> None:
        """Block until every submitted job has run (tests and scripts that need the end)."""
        self._work.join()

    def _loop(self) -> None:
        while True:
            try:
                name, args = self._work.get(timeout=RECONCILE_EVERY_S)
            except fifo.Empty:
                self._work.put((RECONCILE, ()))
                continue
            try:
                # apply() runs the task with its failure handler (a job ends FAILED with the reason).
                app.tasks[name].apply(args=args, throw=False)
            except Exception:  # noqa: BLE001 - one job's crash must not stop the jobs queued behind it
                log.exception("the local runner could not run %s%r", name, args)
            finally:
                connections.close_all()  # this thread's connections; the next job opens its own
                self._work.task_done()


_RUNNER = LocalRunner()


def local_runner_reconcile() -> None:
    """Have the local runner do the reconciler's round now (runserver in the local default does at
    start, so the jobs a stopped server left behind are taken back without waiting for a new one)."""
    _RUNNER.reconcile()


def local_runner_wait() -> None:
    """Block until the local runner has run every job sent to it."""
    _RUNNER.wait_idle()
