"""Fixtures of the serving tests: models registered through the factories, variants, tokens.

Every test starts with empty serving state in this process (routes, runtimes, breaker, caches,
remembered callers) and its own key prefix in the serving cache, so a shared Redis (CI) never
carries one test's routes or counters into another.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import factories
from tests.onnx_graphs import node, onnx_copy, onnx_model, tensor, write_model
from tests.real_services import RedisServer
from tests.serving_state import fresh_serving_state


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A serving test that registers a model (the registry fixture, behind mlp and caller) waits for the
    sandboxed intake child of each upload, over a second apiece: slow (`make test-fast` leaves it out)."""
    for item in items:
        if "registry" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def serving_state(settings: Any) -> Iterator[None]:
    """Fresh serving-process state (routes, breaker, runtimes, Redis back-off, callers) around each test."""
    yield from fresh_serving_state(settings)


@pytest.fixture(scope="session")
def multi_input_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x float32 [batch, 3], mask bool [batch, 3], ids int64 [batch, 2] -> y = where(mask, x, 0), z = ids + 1."""
    model = onnx_model(
        [node("Where", ["mask", "x", "zero"], ["y"]), node("Add", ["ids", "one"], ["z"])],
        [tensor("x", "float32", ["batch", 3]), tensor("mask", "bool", ["batch", 3]),
         tensor("ids", "int64", ["batch", 2])],
        [tensor("y", "float32", ["batch", 3]), tensor("z", "int64", ["batch", 2])],
        {"zero": np.array(0, np.float32), "one": np.array(1, np.int64)}, name="multi")
    return write_model(model, tmp_path_factory.mktemp("multi") / "multi.onnx", check=True)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """The current value of a Prometheus sample (0 when it was never recorded)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@dataclass
class Registry:
    """Registers models through the factories and makes variants, promotions and tokens."""

    maintainer: Any
    approver: Any
    tmp: Path

    def register(self, path: Path, name: str = "mlp") -> Any:
        """A READY version of ``name`` from a model file (the model is created on first use)."""
        version = factories.upload(self.maintainer, path, name=name)
        assert version.status == "READY", version.status_reason
        return version

    def original(self, version: Any) -> Any:
        return version.variants.get(name="original")

    def add_variant(self, version: Any, path: Path, name: str, parent: Any = None, pass_name: str = "graph") -> Any:
        """A READY ONNX variant row for a file (as the job runner stores a pass's output)."""
        from modelhub import artifacts
        from modelhub.models import Variant
        from workers import formats

        sha = formats.sha256_file(path)
        key = artifacts.save_file(path, f"variants/{sha}/model.onnx")
        size = path.stat().st_size
        return Variant.objects.create(
            version=version, name=name, parent=parent or self.original(version), pass_name=pass_name,
            config={"test": name}, config_hash=sha[:16], storage_key=key, sha256=sha, size_bytes=size,
            files=[{"path": "model.onnx", "key": key, "sha256": sha, "size": size}])

    def copy_variant(self, version: Any, name: str = "copy", parent: Any = None) -> Any:
        source = parent or self.original(version)
        from modelhub import artifacts

        path = onnx_copy(artifacts.local_path(source.storage_key), self.tmp / f"{name}-{uuid.uuid4().hex}.onnx",
                         note=name)
        return self.add_variant(version, path, name, parent=source)

    def promote(self, variant: Any, alias: str = "production") -> Any:
        return factories.promote(variant, self.approver, alias, force=True, reason="test setup")

    def token(self, *model_names: str, rate: int = 600) -> str:
        from modelhub.models import RegisteredModel
        from predictions import services

        models = list(RegisteredModel.objects.filter(name__in=model_names or ["mlp"]))
        return services.token_create(name="test", models=models, by=self.maintainer, rate_limit_per_minute=rate)[1]


@pytest.fixture
def registry(maintainer: Any, approver: Any, media_root: Path, tmp_path: Path) -> Registry:
    return Registry(maintainer=maintainer, approver=approver, tmp=tmp_path / "made")


@pytest.fixture
def mlp(registry: Registry, quality_mlp: Any) -> Any:
    """quality_mlp registered as model "mlp", its original promoted to production."""
    version = registry.register(quality_mlp.onnx)
    registry.promote(registry.original(version))
    return version


@pytest.fixture
def features(quality_mlp: Any) -> np.ndarray:
    with np.load(quality_mlp.validation) as data:
        return data["features"][:4]


class Caller:
    """Django test client posting predictions with a bearer token."""

    def __init__(self, token: str | None) -> None:
        from django.test import Client

        self.client = Client()
        self.token = token

    def post(self, model: str, body: Any = None, *, raw: bytes | None = None, content_type: str = "application/json",
             query: str = "", **headers: str) -> Any:
        import orjson

        data = raw if raw is not None else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        extra = {"HTTP_AUTHORIZATION": f"Bearer {self.token}"} if self.token else {}
        extra.update(headers)
        return self.client.post(f"/api/v1/models/{model}/predict{query}", data=data, content_type=content_type,
                                **extra)


@pytest.fixture
def caller(mlp: Any, registry: Registry) -> Caller:
    return Caller(registry.token("mlp"))


@pytest.fixture
def make_caller() -> Callable[[str | None], Caller]:
    return Caller


@pytest.fixture
def serving_redis(private_redis: RedisServer, settings: Any) -> RedisServer:
    """The test's private redis-server (it may be stopped) wired as the serving cache: routes,
    generations, throttle counters and cached answers go through it."""
    settings.CACHES = {**settings.CACHES, "serving": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": private_redis.url,
        "OPTIONS": {"socket_connect_timeout": 0.1, "socket_timeout": 0.1}}}
    settings.MODELHUB_SERVING_CACHE = "serving"
    return private_redis


@dataclass
class OtherProcess:
    """The routing table of a second serving process sharing Redis, on a clock the test moves."""

    table: Any
    now: list[float]
    check_s: float

    def route(self, model: str = "mlp", alias: str = "production") -> Any:
        from predictions.routes import selector_for

        return self.table.route(model, selector_for(alias=alias))

    def next_check(self) -> None:
        """Move the clock past the routing check interval: the next route() reads the generation."""
        self.now[0] += self.check_s + 0.01


@pytest.fixture
def other_process(serving_redis: RedisServer, mlp: Any, monkeypatch: pytest.MonkeyPatch,
                  settings: Any) -> OtherProcess:
    """Another web process, sharing the test's Redis, that already routes mlp's production to its original."""
    from predictions import routing_table

    now = [100.0]
    monkeypatch.setattr(routing_table, "clock", lambda: now[0])
    other = OtherProcess(routing_table.RoutingTable(), now, settings.MODELHUB_SERVING_ROUTING_CHECK_MS / 1000)
    assert other.route().chain[0].name == "original"
    return other
