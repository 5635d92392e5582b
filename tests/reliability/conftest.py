"""Fixtures of the hostile-input and fault tests: a private Redis per test, a broker switch for the
Celery app of this process, a real worker with its own environment, and a small registered model."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.real_services import RedisServer, celery_broker


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


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


def tiny_onnx_bytes() -> bytes:
    """y = x + W, x float32 [batch, 4]: the smallest model the intake accepts."""
    from tests.workers.test_formats import add_model

    return add_model().SerializeToString()


def register(user: Any, data: bytes | Path, *, name: str = "m", filename: str = "model.onnx") -> Any:
    """Register a model and upload one version, its intake run in this process; returns the version."""
    from modelhub import services
    from modelhub.celery import app
    from modelhub.models import RegisteredModel

    model = RegisteredModel.objects.filter(name=name).first() or services.model_create(name=name, owner=user)
    blob = data.read_bytes() if isinstance(data, Path) else data
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        version, _ = services.version_upload(model=model, stream=io.BytesIO(blob), filename=filename, user=user)
    finally:
        app.conf.task_always_eager = eager
    version.refresh_from_db()
    return version
