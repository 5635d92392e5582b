"""The one place that decides whether work is sent to the broker or run here, now.

Without ``REDIS_URL`` (the embedded default) Celery runs tasks eagerly, in the calling process;
with it, they are published for a worker. Every sender goes through ``send``, and everything that
needs to switch (the demo, bench scripts, tests) goes through ``eager``, so the switch is read
in one place and the task code is never imported by the code that sends it (tasks are looked up
by name in Celery's registry, which also keeps the registry free of an import circle).

The names are those of the first release (``workers.tasks.*``): queue routes and the beat
schedule rows in the database refer to them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from modelhub.celery import app

log = logging.getLogger(__name__)

INTAKE = "workers.tasks.intake_version_task"
OPTIMIZE = "workers.tasks.optimize_version_task"
BENCHMARK = "workers.tasks.benchmark_job_task"
RECONCILE = "workers.tasks.reconcile_jobs_task"
NIGHTLY = "workers.tasks.nightly_rebenchmark_task"


def is_eager() -> bool:
    """Whether tasks run in the calling process instead of on a worker."""
    return bool(app.conf.task_always_eager)


def send(name: str, *args: object, what: str) -> bool:
    """Send the task ``name`` with ``args``; False when the broker could not take it.

    Run eagerly, the task's errors are the caller's errors. Sent, a broker failure means "not
    sent yet": the database row is the outbox and the reconciler sends it again later.
    """
    task = app.tasks[name]
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
def eager(on: bool = True) -> Iterator[None]:
    """Run tasks in this process (``on``) or send them to the broker, until the block ends."""
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = on
    try:
        yield
    finally:
        app.conf.task_always_eager = previous
