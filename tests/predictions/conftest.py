"""Fixtures of the serving tests: models registered through modelhub.services, variants, tokens.

Every test starts with empty serving state in this process (routes, runtimes, breaker, caches,
remembered callers) and its own key prefix in the serving cache, so a shared Redis (CI) never
carries one test's routes or counters into another.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.real_services import RedisServer


@pytest.fixture(autouse=True)
def serving_state(settings: Any) -> Iterator[None]:
    from predictions import auth, cache, router, runtime

    settings.MODELHUB_SERVING_KEY_PREFIX = f"test-{uuid.uuid4().hex[:12]}"
    settings.MODELHUB_SERVING_AUTH_CACHE_S = 0

    def reset() -> None:
        router.TABLE.clear()
        router.BREAKER.clear()
        runtime.RUNTIMES.clear()
        cache.reset()
        auth.forget()

    reset()
    yield
    reset()


def onnx_model(path: Path, nodes: list[Any], inputs: list[Any], outputs: list[Any], initializers: list[Any] = ()) -> Path:
    """Write a small ONNX graph (opset 17, IR 8) for a test."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def multi_input_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x float32 [batch, 3], mask bool [batch, 3], ids int64 [batch, 2] -> y = where(mask, x, 0), z = ids + 1."""
    from onnx import TensorProto, helper, numpy_helper

    return onnx_model(
        tmp_path_factory.mktemp("multi") / "multi.onnx",
        [helper.make_node("Where", ["mask", "x", "zero"], ["y"]), helper.make_node("Add", ["ids", "one"], ["z"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", 3]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("z", TensorProto.INT64, ["batch", 2])],
        [numpy_helper.from_array(np.array(0, np.float32), "zero"), numpy_helper.from_array(np.array(1, np.int64), "one")],
    )


def sqrt_onnx(path: Path, *, safe: bool) -> Path:
    """x float32 [batch, 1] -> y = sqrt(|x|) when safe, else sqrt(x) (NaN for negative x)."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Sqrt", ["a"], ["y"])] if safe \
        else [helper.make_node("Sqrt", ["x"], ["y"])]
    return onnx_model(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])])


def onnx_copy(src: Path, dst: Path, note: str) -> Path:
    """The same graph under another sha256 (a different doc string): a second, equivalent variant."""
    import onnx

    model = onnx.load(str(src))
    model.doc_string = note
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """The current value of a Prometheus sample (0 when it was never recorded)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@dataclass
class Registry:
    """Registers sample models through modelhub.services and makes variants, promotions and tokens."""

    maintainer: Any
    approver: Any
    tmp: Path

    def register(self, path: Path, name: str = "mlp") -> Any:
        """A READY version of ``name`` from an ONNX file (the model is created on first use)."""
        from modelhub import services
        from modelhub.models import ModelVersion, RegisteredModel

        model = RegisteredModel.objects.filter(name=name).first() or services.model_create(
            name=name, owner=self.maintainer)
        version, _ = services.version_upload(model=model, stream=io.BytesIO(path.read_bytes()),
                                             filename=path.name, user=self.maintainer)
        version = ModelVersion.objects.get(pk=version.pk)
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
        from modelhub import services

        return services.deployment_promote(model=variant.version.model, variant=variant, by=self.approver,
                                           alias=alias, force=True, reason="test setup")

    def token(self, *model_names: str, rate: int = 600) -> str:
        from modelhub.models import RegisteredModel
        from predictions import auth

        models = list(RegisteredModel.objects.filter(name__in=model_names or ["mlp"]))
        return auth.token_create(name="test", models=models, by=self.maintainer, rate_limit_per_minute=rate)[1]


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
def private_redis(tmp_path: Path, settings: Any) -> Iterator[RedisServer]:
    """A redis-server of this test alone (it may be stopped), wired as the serving cache."""
    server = RedisServer(tmp_path)
    server.start()
    settings.CACHES = {**settings.CACHES, "serving": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": server.url,
        "OPTIONS": {"socket_connect_timeout": 0.1, "socket_timeout": 0.1}}}
    settings.MODELHUB_SERVING_CACHE = "serving"
    try:
        yield server
    finally:
        server.stop()
