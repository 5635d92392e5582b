"""The promote page says whether server-side batching pays for a variant and offers the switch only then;
the switch is ``services.variant_batching_set`` (approvers), which the serving plane reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from modelhub import services
from modelhub.errors import Forbidden, Invalid
from modelhub.models import BenchmarkResult, Variant
from tests import factories
from tests.workers.evaluation.test_batching import _report
from workers.samples import SampleModel

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def _measured(variant: Variant, batch1_ms: float, batch8_ms: float) -> BenchmarkResult:
    """An on-demand result whose report holds batch 1 and 8 with raw rounds (as a job stores it)."""
    report = _report(batch1_ms, batch8_ms).to_dict()
    return BenchmarkResult.objects.create(variant=variant, kind=BenchmarkResult.Kind.ON_DEMAND, report=report,
                                          p50_ms=batch1_ms, p95_ms=batch1_ms, batch_size=1)


def _page(user: Any, variant: Variant) -> str:
    client = Client()
    client.force_login(user)
    args = [variant.version.model.name, variant.version.number, variant.name]
    response = client.get(reverse("dashboard:promote", args=args))
    assert response.status_code == 200
    return response.content.decode().split('id="batching"')[1]


def test_the_switch_is_offered_and_works_only_when_batching_pays(quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    variant = factories.team_version(maintainer, quality_mlp).variants.get(name=Variant.ORIGINAL)
    _measured(variant, 0.10, 0.78)  # 8 × 0.10 / 0.78: within noise
    panel = _page(approver, variant)
    assert "does not pay" in panel and "not beyond noise" in panel and 'id="batching-form"' not in panel
    with pytest.raises(Invalid, match="does not pay"):
        services.variant_batching_set(variant=variant, enabled=True, by=approver)

    _measured(variant, 0.10, 0.30)  # the latest run: 2.7× the rows per second
    panel = _page(approver, variant)
    assert "batching pays" in panel and 'id="batching-form"' in panel and "Turn batching on" in panel
    client = Client()
    client.force_login(approver)
    url = reverse("dashboard:batching", args=[variant.version.model.name, variant.version.number, variant.name])
    assert client.post(url, {"enabled": "1"}).status_code == 302
    variant.refresh_from_db()
    assert variant.serving_batching is True and "Turn batching off" in _page(approver, variant)
    assert 'id="batching-form"' not in _page(maintainer, variant)  # only approvers change it
    with pytest.raises(Forbidden):
        services.variant_batching_set(variant=variant, enabled=False, by=maintainer)
    client.post(url, {"enabled": "0"})
    variant.refresh_from_db()
    assert variant.serving_batching is False
