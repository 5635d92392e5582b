"""Fixtures of the hostile-input and fault tests: a private Redis per test, a broker switch for the
Celery app of this process, a real worker with its own environment, and a small registered model."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _free_port, _wait_for_port
from tests.workers.test_worker import _database_url

ROOT = Path(__file__).resolve().parent.parent.parent
QUEUES = ("optimize", "benchmark", "default")


class RedisServer:
    """A redis-server of this test only (loopback, no persistence) that the test may stop and restart."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("needs redis-server")
        self.binary, self.workdir, self.port = binary, workdir, _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def queued(self, queue: str | None = None) -> int:
        """Messages waiting in one queue (or in all of modelhub's queues)."""
        client = self.client()
        return sum(client.llen(name) for name in ([queue] if queue else QUEUES))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Send this process's tasks to ``url`` instead of running them eagerly."""
    from modelhub.celery import app

    previous = app.conf.broker_url, app.conf.task_always_eager
    app.conf.broker_url, app.conf.task_always_eager = url, False
    _forget_connections(app)
    try:
        yield
    finally:
        app.conf.broker_url, app.conf.task_always_eager = previous
        _forget_connections(app)


def _forget_connections(app: Any) -> None:
    """Drop pooled connections to the previous broker: app.close() keeps the producer pool."""
    app.close()
    app.amqp._producer_pool = None


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


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path) -> Path:
    """Storage and work dir of the test, shared with any worker it starts."""
    settings.MODELHUB_WORK_DIR = tmp_path / "work"
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "media")}}}
    return tmp_path


@contextmanager
def running_worker(redis_url: str, data: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery worker` (prefork, one child) on every queue, with extra environment variables."""
    full = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": _database_url(), "DEBUG": "1",
            "MODELHUB_DATA_DIR": str(data), **env}
    with (data / "worker.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "modelhub", "worker", "-Q", ",".join(QUEUES), "--concurrency", "1",
             "--pool", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"],
            cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop_worker(process)


def stop_worker(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, log: Path | None = None) -> Any:
    """Poll ``predicate`` every 0.1 s until it is truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")


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
