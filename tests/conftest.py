"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.real_services import RedisServer
from workers.samples import SampleModel, build_sample


@pytest.fixture(scope="session")
def samples_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("samples")


@pytest.fixture(scope="session")
def quality_mlp(samples_root: Path) -> SampleModel:
    return build_sample("quality_mlp", samples_root)


@pytest.fixture(scope="session")
def digits_cnn(samples_root: Path) -> SampleModel:
    return build_sample("digits_cnn", samples_root)


@pytest.fixture(scope="session")
def tiny_transformer(samples_root: Path) -> SampleModel:
    return build_sample("tiny_transformer", samples_root)


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
    """Create a user holding the given roles (groups made by the roles migration)."""
    from django.contrib.auth.models import Group, Permission, User

    from modelhub.roles import sync_role_groups

    sync_role_groups(Group, Permission)  # transactional tests flush the groups the migration made

    def make(username: str = "alice", *roles: str, torchscript: bool = False, superuser: bool = False) -> Any:
        user = User.objects.create_user(username=username, password="pw-" + username, is_superuser=superuser,
                                        is_staff=superuser)
        user.groups.set(Group.objects.filter(name__in=roles))
        if torchscript:
            user.user_permissions.add(Permission.objects.get(codename="upload_torchscript"))
        return User.objects.get(pk=user.pk)  # fresh object: permission caches start empty

    return make


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
    from modelhub.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous
