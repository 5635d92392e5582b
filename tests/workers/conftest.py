"""Fixtures of the worker tests: a real `celery worker` process on the test's Redis."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real_services import celery_broker, running_worker


@pytest.fixture
def worker(redis_url: str, data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery worker` (prefork, one child) consuming every queue of the test's Redis; this
    process's tasks go to it (the factories still run intakes and their own jobs here)."""
    with celery_broker(redis_url), running_worker(redis_url, data_dir) as process:
        yield process
