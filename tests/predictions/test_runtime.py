"""Loaded runtimes: one load per file, a memory budget, explicit threads, warm-up, and the admin of tokens."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from typing import Any

import numpy as np
import pytest

from predictions import runtime
from tests.predictions.conftest import sample

pytestmark = pytest.mark.django_db(transaction=True)


def _loads() -> float:
    return sample("modelhub_runtime_load_seconds_count", {"kind": "onnxruntime"})


def test_many_threads_asking_at_once_load_a_file_once(registry: Any, mlp: Any) -> None:
    spec = runtime.VariantSpec.from_variant(registry.original(mlp))
    runtime.RUNTIMES.clear()
    before = _loads()
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(runtime.get(spec))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(got) == 8 and len({id(r) for r in got}) == 1
    assert _loads() == before + 1


def test_the_least_recently_used_runtime_leaves_beyond_the_budget_and_a_held_one_still_runs(
        registry: Any, mlp: Any, settings: Any, features: np.ndarray) -> None:
    first = runtime.VariantSpec.from_variant(registry.original(mlp))
    second = runtime.VariantSpec.from_variant(registry.copy_variant(mlp, name="graph"))
    settings.MODELHUB_SERVING_MAX_RUNTIME_MB = int((first.size_bytes * 1.5) // (1024 * 1024)) + 1
    runtime.RUNTIMES.clear()
    held = runtime.get(first)
    runtime.get(second)
    assert not runtime.RUNTIMES.loaded(first.sha256) and runtime.RUNTIMES.loaded(second.sha256)
    assert sample("modelhub_runtimes_loaded") == 1
    assert held.run({"features": features[:1]})["quality"].shape == (1, 1)  # a request holding it finishes


def test_sessions_use_the_configured_threads_and_the_cpu_unless_cuda_is_targeted_and_present(
        registry: Any, mlp: Any, settings: Any) -> None:
    settings.MODELHUB_SERVING_INTRA_OP_THREADS = 2
    runtime.RUNTIMES.clear()
    loaded = runtime.get(runtime.VariantSpec.from_variant(registry.original(mlp)))
    assert loaded.session.get_session_options().intra_op_num_threads == 2
    assert loaded.provider == "CPUExecutionProvider"
    assert runtime.providers_for("cpu") == ["CPUExecutionProvider"]
    cuda = "CUDAExecutionProvider" in runtime.available_providers()
    assert runtime.providers_for("cuda")[0] == ("CUDAExecutionProvider" if cuda else "CPUExecutionProvider")


def test_a_variant_with_tuned_session_options_is_served_with_them_over_the_server_defaults(
        registry: Any, mlp: Any, settings: Any) -> None:
    """(D26) The job's measured options travel in the routing table's spec and reach the session."""
    import onnxruntime

    from modelhub.models import Variant

    settings.MODELHUB_SERVING_INTRA_OP_THREADS = 2
    variant = registry.original(mlp)
    Variant.objects.filter(pk=variant.pk).update(session_options={"intra_op_threads": 1, "inter_op_threads": 2,
                                                                  "execution_mode": "parallel"})
    variant.refresh_from_db()
    spec = runtime.VariantSpec.from_dict(runtime.VariantSpec.from_variant(variant).to_dict())
    runtime.RUNTIMES.clear()
    options = runtime.get(spec).session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 2)
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_PARALLEL


def test_warm_loads_and_runs_a_synthetic_batch(registry: Any, mlp: Any) -> None:
    variant = registry.copy_variant(mlp, name="graph")
    runtime.RUNTIMES.clear()
    warmed = runtime.warm(runtime.VariantSpec.from_variant(variant))
    assert runtime.RUNTIMES.loaded(variant.sha256) and warmed.synthetic_feeds()["features"].shape == (1, 2056)


def test_a_file_onnx_runtime_refuses_is_a_load_error_in_its_words(registry: Any, mlp: Any) -> None:
    from modelhub import artifacts

    variant = registry.copy_variant(mlp, name="graph")
    garbage = b"not a model"
    artifacts.local_path(variant.storage_key).write_bytes(garbage)
    sha = hashlib.sha256(garbage).hexdigest()  # recorded as it is now: the hash check passes, ORT refuses
    spec = dataclasses.replace(runtime.VariantSpec.from_variant(variant), sha256=sha,
                               files=(("model.onnx", variant.storage_key, sha),))
    with pytest.raises(runtime.LoadError, match="ONNX Runtime could not load v1/graph") as caught:
        runtime.warm(spec)
    assert caught.value.reason == "onnxruntime" and not runtime.RUNTIMES.loaded(sha)


def test_the_admin_makes_a_token_and_shows_it_once(mlp: Any, make_user: Any) -> None:
    from django.test import Client

    from predictions import auth
    from predictions.models import PredictToken

    admin = make_user("root", superuser=True)
    client = Client()
    client.force_login(admin)
    response = client.post("/admin/predictions/predicttoken/add/",
                           {"name": "scoring-service", "allowed_models": [mlp.model.pk],
                            "rate_limit_per_minute": 120}, follow=True)
    assert response.status_code == 200
    token = PredictToken.objects.get()
    messages = [str(m) for m in response.context["messages"]]
    shown = [m for m in messages if m.startswith("Predict token")]
    assert len(shown) == 1
    raw = shown[0].split(": ", 1)[1].split(" ")[0]
    assert auth.hash_token(raw) == token.token_hash
    assert sum(raw in m for m in messages) == 1  # shown once, then only its prefix
    assert list(token.allowed_models.values_list("name", flat=True)) == ["mlp"]
