"""A whole job whose plan is the default one: the search through the REST API, its lineage, its log,
the held-out verdict and the tuned session options, then serving and the bundle use them."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rest_framework.test import APIClient

from modelhub.models import OptimizationJob, ReadinessProfile, Variant
from tests.workers.search.test_search import WIDTH, _mlp

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _upload(api: APIClient, tmp_path: Path, *, outlier_layer: int | None) -> None:
    model = _mlp(tmp_path / "model.onnx", outlier_layer=outlier_layer)
    np.savez(tmp_path / "rows.npz", x=np.random.default_rng(1).normal(size=(64, WIDTH)).astype(np.float32))
    assert api.post("/api/v1/models", {"name": "enc", "task": "embedding"}, format="json").status_code == 201
    with model.open("rb") as handle:
        assert api.post("/api/v1/models/enc/versions", {"file": handle}, format="multipart").status_code == 201
    with (tmp_path / "rows.npz").open("rb") as handle:
        api.post("/api/v1/models/enc/versions/1/datasets", {"file": handle, "purpose": "validation"}, format="multipart")
    profile = {"name": "close", "accuracy_metric": "cosine_min", "min_accuracy": 0.98}
    assert api.post("/api/v1/profiles", profile, format="json").status_code == 201
    ReadinessProfile.objects.filter(name="close").update(search_budget_s=60)


def _optimize(api: APIClient) -> OptimizationJob:
    response = api.post("/api/v1/models/enc/versions/1/optimize", {"profile": "close"}, format="json")
    assert response.status_code == 202, response.json()
    return OptimizationJob.objects.get(pk=response.json()["id"])


@pytest.fixture
def searched(api: APIClient, media_root: Path, tmp_path: Path) -> OptimizationJob:
    _upload(api, tmp_path, outlier_layer=None)
    return _optimize(api)


def test_the_default_plan_searches_and_lineage_shows_graph_then_int8(searched: OptimizationJob) -> None:
    """(D25) One search step; the kept int8 variant's parent is the graph variant, whose parent is the original."""
    assert searched.status == "SUCCEEDED", searched.error
    assert [step["pass_name"] for step in searched.plan] == ["search"]
    int8 = Variant.objects.filter(pass_name__startswith="quantize").select_related("parent__parent")
    assert int8 and all((v.parent.name, v.parent.parent.name) == ("graph", "original") for v in int8)
    search = searched.result["search"]
    assert search["budget_s"] == 60 and search["spent_s"] > 0 and search["records"]
    assert searched.result["best"] in search["kept"]


def test_the_verdict_is_given_on_held_out_rows_the_search_did_not_select_on(searched: OptimizationJob) -> None:
    """(D26) 64 validation rows: the search selected on 32, the judgment says it used the other 32."""
    split = searched.result["search"]["split"]
    assert (split["selection_rows"], split["holdout_rows"]) == (32, 32)
    assert "32 held-out validation rows" in searched.result["judgment"]["rows"]
    best = Variant.objects.get(name=searched.result["best"])
    assert best.latest_result().accuracy["samples"] == 32


def test_the_chosen_variant_gets_measured_session_options_that_its_bundle_carries(searched: OptimizationJob,
                                                                                 api: APIClient) -> None:
    """(D26) Session options are stored for the pick (the default unless faster beyond noise) and go in the bundle."""
    best = Variant.objects.get(name=searched.result["best"])
    assert set(best.session_options) == {"intra_op_threads", "inter_op_threads", "execution_mode"}
    tuning = searched.result["session_tuning"]
    assert tuning["chosen"] == best.session_options and tuning["why"]
    response = api.get(f"/api/v1/models/enc/versions/1/variants/{best.name}/bundle")
    config = json.loads(zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).read("config.json"))
    assert config["session_options"] == best.session_options


def test_a_model_whose_dynamic_int8_fails_gets_a_passing_int8_from_the_default_plan(api: APIClient, media_root: Path,
                                                                                    tmp_path: Path) -> None:
    """(D23) No plan given, plain int8 fails cosine_min >= 0.98: the job's best is an int8 variant with exclusions."""
    _upload(api, tmp_path, outlier_layer=2)
    job = _optimize(api)
    assert job.status == "SUCCEEDED", job.error
    best = Variant.objects.get(name=job.result["best"])
    assert best.pass_name == "quantize_dynamic" and best.config["nodes_to_exclude"]
    assert job.result["verdicts"][best.name]["passed"] is True
    assert job.result["search"]["records"][0]["name"] == "graph"


def test_the_job_page_shows_what_the_search_tried_and_why_each_was_dropped(searched: OptimizationJob,
                                                                         client: Any, admin_user: Any) -> None:
    """(D24) The job page lists each candidate with its outcome and reason, and the time spent."""
    client.force_login(admin_user)
    page = client.get(f"/dashboard/jobs/{searched.pk}/").content.decode()
    assert 'id="job-search"' in page and "int8-dynamic" in page
    assert f"of a {searched.result['search']['budget_s']}" in page
