"""A whole job on a BERT-like model uploaded with sentences padded to 128: its passes check their
outputs on the job's validation rows (never on a path a client names), and accuracy is judged at
the profile's batch size over real tokens only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelhub.models import OptimizationJob, Variant
from tests.workers import encoders

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PLAN = [
    {"name": "fused", "pass_name": "graph", "options": {"level": "transformer"}},
    {"name": "int8", "pass_name": "quantize_dynamic", "options": {"check_data": "/etc/hostname"}, "source": "fused"},
]


def _upload(api: Any, tmp_path: Path) -> None:
    model = encoders.bert_like_onnx(tmp_path / "model.onnx")
    np.savez(tmp_path / "rows.npz", **encoders.padded(encoders.sentences(32), 128))
    assert api.post("/api/v1/models", {"name": "enc", "task": "embedding"}, format="json").status_code == 201
    with model.open("rb") as handle:
        assert api.post("/api/v1/models/enc/versions", {"file": handle}, format="multipart").status_code == 201
    with (tmp_path / "rows.npz").open("rb") as handle:
        response = api.post("/api/v1/models/enc/versions/1/datasets", {"file": handle, "purpose": "validation"},
                            format="multipart")
    assert response.status_code == 201, response.json()
    profile = {"name": "batch4", "accuracy_metric": "cosine_min", "min_accuracy": 0.5, "batch_size": 4}
    assert api.post("/api/v1/profiles", profile, format="json").status_code == 201


def test_a_job_checks_passes_on_its_rows_and_judges_accuracy_at_the_profile_batch(api: Any, media_root: Path,
                                                                                 tmp_path: Path) -> None:
    """G13: both steps say their outputs were checked on 8 validation rows (the client's check_data path
    is ignored); the dynamic INT8 variant's accuracy was measured at batch 4, the fused float one at 64,
    both over real tokens only."""
    _upload(api, tmp_path)
    response = api.post("/api/v1/models/enc/versions/1/optimize", {"profile": "batch4", "plan": PLAN}, format="json")
    assert response.status_code == 202, response.json()
    job = OptimizationJob.objects.get(pk=response.json()["id"])
    assert job.status == "SUCCEEDED", job.error

    fused, int8 = Variant.objects.get(name="fused"), Variant.objects.get(name="int8")
    assert int8.parent == fused and fused.status == int8.status == Variant.Status.READY
    for variant in (fused, int8):
        assert "Outputs checked on 8 validation rows." in variant.notes
    assert any(note.startswith("Transformer fusions: Attention x2") for note in fused.notes)
    assert int8.latest_result().accuracy["batch_size"] == 4
    assert fused.latest_result().accuracy["batch_size"] == 64
    assert int8.latest_result().accuracy["real_positions_only"] is True
