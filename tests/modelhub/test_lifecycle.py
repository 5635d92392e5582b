"""The lifecycle through the REST API: upload, optimize, read verdicts, promote, roll back, audit."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from modelhub.models import BenchmarkResult, OptimizationJob, PromotionEvent
from workers.samples import SampleModel

# Answers report the intake and the jobs that run at commit; every test uploads, most run a job.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
PLAN = [{"name": "int8", "pass_name": "quantize_dynamic", "options": {}},
        {"name": "pruned", "pass_name": "prune_structured", "options": {"ratio": 0.5}}]


def _client(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def _register(api: APIClient, sample: SampleModel) -> None:
    api.post("/api/v1/models", {"name": "mlp", "task": "regression"}, format="json")
    with sample.onnx.open("rb") as handle:
        assert api.post("/api/v1/models/mlp/versions", {"file": handle}, format="multipart").status_code == 201
    with sample.validation.open("rb") as handle:
        api.post("/api/v1/models/mlp/versions/1/datasets", {"file": handle, "purpose": "validation"},
                 format="multipart")
    profile = {"name": "small", "max_size_mb": 5, "accuracy_metric": "mae", "max_accuracy_drop": 0.02}
    assert api.post("/api/v1/profiles", profile, format="json").status_code == 201
    governing = api.post("/api/v1/models/mlp/governing-profiles", {"profile": "small"}, format="json")
    assert governing.status_code == 200 and governing.json()["governing"] == {"production": "small"}


def _optimize(api: APIClient) -> dict[str, Any]:
    response = api.post("/api/v1/models/mlp/versions/1/optimize", {"profile": "small", "plan": PLAN}, format="json")
    assert response.status_code == 202, response.json()
    return response.json()


@pytest.fixture
def optimized(api: APIClient, quality_mlp: SampleModel, media_root: Path, settings: Any) -> dict[str, Any]:
    settings.MODELHUB_BENCH_BUDGET_S = 0.2  # keep the eager job short
    _register(api, quality_mlp)
    job = _optimize(api)
    return api.get(f"/api/v1/jobs/{job['id']}").json()


def test_an_optimization_job_makes_variants_with_verdicts_and_names_the_best(optimized: dict[str, Any],
                                                                           api: APIClient) -> None:
    assert optimized["status"] == "SUCCEEDED", optimized["error"]
    assert optimized["progress"] == 100.0
    assert any("int8: " in e["message"] for e in optimized["events"])
    results = api.get("/api/v1/models/mlp/versions/1/results").json()
    rows = {row["name"]: row for row in results["variants"]}
    assert set(rows) == {"original", "int8", "pruned"}
    assert rows["int8"]["passed"] is True and rows["int8"]["size_bytes"] < 0.3 * rows["original"]["size_bytes"]
    assert rows["original"]["passed"] is False
    assert any("size" in failure for failure in rows["original"]["verdict"]["failures"])
    assert results["best"] == "int8"
    assert results["advice"]


def test_an_approver_promotes_the_passing_variant_and_rolls_back(optimized: dict[str, Any], approver: Any) -> None:
    from modelhub.models import RegisteredModel

    RegisteredModel.objects.filter(name="mlp").update(team=approver.groups.first())
    client = _client(approver)
    promoted = client.post("/api/v1/models/mlp/promote", {"version": 1, "variant": "int8", "reason": "smaller"},
                           format="json")
    assert promoted.status_code == 201, promoted.json()
    refused = client.post("/api/v1/models/mlp/promote", {"version": 1, "variant": "original"}, format="json")
    assert refused.status_code == 400 and "fails production's governing profile 'small'" in refused.json()["error"]
    forced = client.post("/api/v1/models/mlp/promote", {"version": 1, "variant": "original", "force": True,
                                                        "reason": "int8 drifts on the new data"}, format="json")
    assert forced.status_code == 201 and forced.json()["forced"] is True
    rolled = client.post("/api/v1/models/mlp/rollback", {"reason": "back to int8"}, format="json")
    assert rolled.status_code == 201 and rolled.json()["to_variant"] == "v1/int8"
    history = client.get("/api/v1/models/mlp/history").json()
    assert [(e["kind"], e["to_variant"], e["by"]) for e in history] == [
        ("rollback", "v1/int8", "abe"), ("promote", "v1/original", "abe"), ("promote", "v1/int8", "abe")]
    assert client.get("/api/v1/models/mlp").json()["production"] == "v1/int8"


def test_a_maintainer_cannot_promote(optimized: dict[str, Any], api: APIClient) -> None:
    response = api.post("/api/v1/models/mlp/promote", {"version": 1, "variant": "int8"}, format="json")
    assert response.status_code == 403 and "approver role" in response.json()["error"]
    assert PromotionEvent.objects.count() == 0


def test_a_forced_promotion_needs_a_reason(optimized: dict[str, Any], approver: Any) -> None:
    from modelhub.models import RegisteredModel

    RegisteredModel.objects.filter(name="mlp").update(team=approver.groups.first())
    response = _client(approver).post("/api/v1/models/mlp/promote",
                                      {"version": 1, "variant": "original", "force": True}, format="json")
    assert response.status_code == 400 and "needs a written reason" in response.json()["error"]


def test_the_deployment_bundle_holds_model_config_loader_and_readme(optimized: dict[str, Any],
                                                                   api: APIClient) -> None:
    response = api.get("/api/v1/models/mlp/versions/1/variants/int8/bundle")
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert sorted(archive.namelist()) == ["README.md", "config.json", "index.html", "loader.mjs", "model.onnx",
                                          "node/package.json", "node/predict.mjs", "ort/ort-wasm-simd-threaded.mjs",
                                          "ort/ort-wasm-simd-threaded.wasm", "ort/ort.wasm.min.mjs", "predict.py",
                                          "tensors.mjs"]
    assert b'"pass": "quantize_dynamic"' in archive.read("config.json")


def test_a_re_benchmark_measures_one_variant_again(optimized: dict[str, Any], api: APIClient) -> None:
    response = api.post("/api/v1/models/mlp/versions/1/variants/int8/benchmark")
    assert response.status_code == 202
    job = OptimizationJob.objects.get(pk=response.json()["id"])
    assert job.status == "SUCCEEDED", job.error
    assert BenchmarkResult.objects.filter(job=job, kind="on_demand").count() == 1


def test_a_bad_plan_is_refused_before_any_job_exists(api: APIClient, quality_mlp: SampleModel,
                                                    media_root: Path) -> None:
    _register(api, quality_mlp)
    response = api.post("/api/v1/models/mlp/versions/1/optimize",
                        {"plan": [{"name": "x", "pass_name": "teleport", "options": {}}]}, format="json")
    assert response.status_code == 400 and "teleport" in response.json()["error"]
    assert OptimizationJob.objects.count() == 0


def test_cancelling_a_queued_job_ends_it(api: APIClient, quality_mlp: SampleModel, media_root: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from modelhub import queue
    from modelhub.celery import app

    _register(api, quality_mlp)
    # Nothing consumes the in-memory broker, so the job waits in QUEUED.
    monkeypatch.setattr(app.conf, "broker_url", "memory://")
    app.close()
    with queue.eager(False):
        job = api.post("/api/v1/models/mlp/versions/1/optimize", {"plan": PLAN}, format="json").json()
    cancelled = api.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert cancelled.json()["status"] == "CANCELLED"
    again = api.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 400 and "already ended" in again.json()["error"]
    app.close()
