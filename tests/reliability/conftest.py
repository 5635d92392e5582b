"""Fixtures of the hostile-input and fault tests: a broker switch for the Celery app of this process,
to the test's private Redis (tests/conftest.py) or to an in-memory transport nobody reads."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.real_services import RedisServer, celery_broker


@pytest.fixture
def broker(private_redis: RedisServer) -> Iterator[RedisServer]:
    """Tasks of this process go to the test's private Redis; nothing consumes them unless a test starts a worker."""
    with celery_broker(private_redis.url):
        yield private_redis


@pytest.fixture
def memory_broker() -> Iterator[None]:
    """Tasks are published to an in-memory transport and never run (rows stay QUEUED)."""
    with celery_broker("memory://"):
        yield
