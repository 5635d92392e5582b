"""Fixtures shared by the whole suite."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.real_services import RedisServer
from workers.samples import SampleModel, build_sample


@pytest.fixture(scope="session")
def samples_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the sample models are built: a new directory each run, or the directory MODELHUB_TEST_SAMPLES
    names (`make test-fast`), whose samples, built once from the same seeds, later runs reuse."""
    given = os.environ.get("MODELHUB_TEST_SAMPLES")
    if not given:
        return tmp_path_factory.mktemp("samples")
    root = Path(given).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _sample(name: str, root: Path) -> SampleModel:
    """build_sample, safe for runs sharing a directory: a sample not there yet is built beside it and
    moved in whole, so no run ever reads a half-built one."""
    if not (root / name).exists():
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        try:
            build_sample(name, staging)
            with contextlib.suppress(OSError):  # another run moved its own in first
                (staging / name).rename(root / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return build_sample(name, root)


@pytest.fixture(scope="session")
def quality_mlp(samples_root: Path) -> SampleModel:
    return _sample("quality_mlp", samples_root)


@pytest.fixture(scope="session")
def digits_cnn(samples_root: Path) -> SampleModel:
    return _sample("digits_cnn", samples_root)


@pytest.fixture(scope="session")
def tiny_transformer(samples_root: Path) -> SampleModel:
    return _sample("tiny_transformer", samples_root)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, which the test may stop, flush and start again."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: REDIS_URL when the environment gives one, else a private redis-server."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def make_user(db: None) -> Callable[..., Any]:
    """factories.user: a user holding the given roles (make_user("alice", "maintainer", torchscript=True))."""
    from tests import factories

    return factories.user


@pytest.fixture
def maintainer(make_user: Callable[..., Any]) -> Any:
    return make_user("maria", "maintainer")


@pytest.fixture
def approver(make_user: Callable[..., Any]) -> Any:
    return make_user("abe", "approver")


@pytest.fixture
def api(maintainer: Any) -> Any:
    """A DRF client logged in with the maintainer's token."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=maintainer).key}")
    return client


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path) -> Path:
    """One data directory for the test (and any worker it starts): storage in media/, work in work/,
    so tests never see each other's files."""
    settings.MODELHUB_WORK_DIR = tmp_path / "work"
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "media")}}}
    return tmp_path


@pytest.fixture
def media_root(data_dir: Path) -> Path:
    """The test's private storage directory."""
    return data_dir / "media"


@pytest.fixture(autouse=True)
def short_benchmarks(settings: Any) -> None:
    """Jobs in tests measure briefly, one process per variant (a test may ask for more); the
    product's own defaults (2 s, 2 processes) are for numbers people read, and bench/ prints those."""
    settings.MODELHUB_BENCH_BUDGET_S = 0.2
    settings.MODELHUB_BENCH_PROCESSES = 1


@pytest.fixture(autouse=True)
def eager_tasks() -> Iterator[None]:
    """Tasks run in the calling process unless a test starts a real worker (even when CI gives
    REDIS_URL, which otherwise switches the settings to a real broker)."""
    from modelhub import queue

    with queue.eager():
        yield
