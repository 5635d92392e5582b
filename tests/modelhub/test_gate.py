"""One gate to an alias: only a passing judgment under the alias's governing profile promotes,
unless an approver forces it with a reason, and the audit says which it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelhub import gate, services
from modelhub.errors import Forbidden, Invalid
from modelhub.models import GoverningProfileChange, PromotionEvent
from predictions import routes
from tests import factories

# Nothing here needs a commit: the factories run what the services leave for it (a job's lease
# heartbeat, on a connection of its own, first beats after LEASE_SECONDS / 4, long after these jobs).
pytestmark = [pytest.mark.django_db, pytest.mark.slow]  # every test runs whole optimization jobs
# quality_mlp's original is about 10.5 MB: a 5 MB limit refuses it and passes its int8 variant.
SMALL = {"max_size_mb": 5.0, "accuracy_metric": "mae", "max_accuracy_drop": 0.02}


@pytest.fixture
def judged(maintainer: Any, approver: Any, quality_mlp: Any, media_root: Path, settings: Any) -> Any:
    """Version 1 of "mlp" governed by "small", after one job under it: original refused, int8 passes."""
    settings.MODELHUB_BENCH_BUDGET_S = 0.2
    return factories.optimized_version(maintainer, quality_mlp, profile=factories.profile("small", **SMALL))


def _variant(version: Any, name: str) -> Any:
    return version.variants.get(name=name)


def _promote(version: Any, name: str, by: Any, **kwargs: Any) -> PromotionEvent:
    return factories.promote(_variant(version, name), by, **kwargs)


def test_a_job_under_no_profile_cannot_make_a_refused_variant_promotable(judged: Any, maintainer: Any,
                                                                           approver: Any) -> None:
    """G1: the original, refused under the governing profile, stays refused after a job that judged nothing."""
    unjudged = factories.job(judged, maintainer, None, plan=[])
    original = _variant(judged, "original")
    assert original.results.get(job=unjudged).passed is None  # measured, not judged
    with pytest.raises(Invalid, match="fails production's governing profile 'small'.*size"):
        _promote(judged, "original", approver)
    assert not PromotionEvent.objects.exists()


def test_a_judgment_under_a_more_lenient_profile_does_not_open_the_gate(judged: Any, maintainer: Any,
                                                                          approver: Any) -> None:
    """G1: passing some other profile is not passing the one that governs production."""
    lenient = factories.profile("lenient", max_size_mb=50.0)
    factories.job(judged, maintainer, lenient, plan=[])
    assert _variant(judged, "original").results.filter(profile=lenient, passed=True).exists()
    assert gate.decide(variant=_variant(judged, "original")).passed is False
    with pytest.raises(Invalid, match="governing profile 'small'"):
        _promote(judged, "original", approver)


def test_a_passing_variant_is_promoted_and_the_event_names_its_judgment(judged: Any, approver: Any) -> None:
    """B3: a promotion through the gate records the governing profile and the result that opened it."""
    event = _promote(judged, "int8", approver, reason="smaller")
    assert event.forced is False and event.profile_name == "small"
    assert event.judgment.job.profile.name == "small" and event.judgment.passed is True


def test_tightening_the_governing_profile_closes_the_gate_until_judged_again(judged: Any, approver: Any) -> None:
    """G1: a judgment under limits that have since changed is stale."""
    small = gate.governing_profile(model=judged.model)
    small.max_size_mb = 1.0
    small.save()
    decision = gate.decide(variant=_variant(judged, "int8"))
    assert decision.passed is False and "current limits" in decision.reason


def test_without_a_governing_profile_only_a_forced_promotion_goes_through(maintainer: Any, approver: Any,
                                                                            quality_mlp: Any, media_root: Path,
                                                                            settings: Any) -> None:
    """B3: no profile governs the alias, so nothing is judged passing; force + reason is audited."""
    settings.MODELHUB_BENCH_BUDGET_S = 0.2
    version = factories.version(maintainer, quality_mlp)
    factories.job(version, maintainer, factories.profile("small", **SMALL))
    with pytest.raises(Invalid, match="no governing readiness profile"):
        _promote(version, "int8", approver)
    event = _promote(version, "int8", approver, force=True, reason="first deployment, profile to follow")
    assert event.forced is True and event.judgment is None


def test_auto_promotion_follows_the_same_gate(maintainer: Any, approver: Any, quality_mlp: Any, media_root: Path,
                                              settings: Any) -> None:
    """G1: a job under no profile never auto-promotes; one under the governing profile does."""
    settings.MODELHUB_BENCH_BUDGET_S = 0.2
    approver.groups.add(*maintainer.groups.all())  # who starts a job is who auto-promotes: both roles
    version = factories.version(approver, quality_mlp)
    small = factories.profile("small", **SMALL)
    factories.govern(version, small, maintainer)
    unjudged = factories.job(version, approver, None, auto_promote=True)
    assert unjudged.result["best"] is None and not PromotionEvent.objects.exists()
    factories.job(version, approver, small, auto_promote=True)
    assert PromotionEvent.objects.get().to_variant.name == "int8"


def test_the_version_route_does_not_change_when_a_maintainer_runs_another_job(judged: Any, maintainer: Any,
                                                                               approver: Any) -> None:
    """G2: ?version=N serves what an approver chose for the version, never the newest job's best."""
    assert routes.build_route("mlp", "version:1").chain[0].name == "original"  # nothing chosen yet
    _promote(judged, "int8", approver, reason="smaller")
    lenient = factories.profile("lenient", max_size_mb=50.0)
    graph = [{"name": "graph", "pass_name": "graph", "options": {"level": "extended"}}]
    later = factories.job(judged, maintainer, lenient, plan=graph)
    assert later.result["best"] is not None
    assert routes.build_route("mlp", "version:1").chain[0].name == "int8"


def test_rollback_skips_a_failing_variant_unless_forced(judged: Any, approver: Any) -> None:
    """G3: int8 (passes) → original (forced, fails) → int8 again; rolling back skips the failing
    original; when only failing variants are left, a rollback needs force and a reason."""
    _promote(judged, "int8", approver, reason="smaller")
    _promote(judged, "original", approver, force=True, reason="compare in production")
    rolled = services.deployment_rollback(model=judged.model, by=approver)
    assert rolled.to_variant.name == "int8" and rolled.forced is False and rolled.kind == "rollback"
    again = _promote(judged, "original", approver, force=True, reason="once more")
    assert again.from_variant.name == "int8"
    services.deployment_rollback(model=judged.model, by=approver)  # back to int8, the last known good
    with pytest.raises(Invalid, match="No earlier variant .* passes its governing profile.*force"):
        services.deployment_rollback(model=judged.model, by=approver)
    forced = services.deployment_rollback(model=judged.model, by=approver, force=True, reason="int8 misbehaves")
    assert forced.to_variant.name == "original" and forced.forced is True


def test_a_forced_rollback_needs_a_reason(judged: Any, approver: Any) -> None:
    """G3: the forced flow is the forced flow: an approver and a written reason."""
    _promote(judged, "original", approver, force=True, reason="first")
    _promote(judged, "int8", approver, reason="smaller")
    with pytest.raises(Invalid, match="needs a written reason"):
        services.deployment_rollback(model=judged.model, by=approver, force=True)


def test_changing_the_governing_profile_needs_a_maintainer_and_a_reason_and_is_audited(judged: Any, maintainer: Any,
                                                                                      approver: Any) -> None:
    """B3: the governing profile changes only with an audit entry."""
    strict = factories.profile("strict", max_size_mb=1.0)
    with pytest.raises(Forbidden):
        services.governing_profile_set(model=judged.model, profile=strict, by=approver, reason="x")
    with pytest.raises(Invalid, match="needs a reason"):
        services.governing_profile_set(model=judged.model, profile=strict, by=maintainer)
    services.governing_profile_set(model=judged.model, profile=strict, by=maintainer, reason="smaller devices")
    change = GoverningProfileChange.objects.first()
    assert (change.from_profile, change.to_profile, change.by, change.reason) == (
        "small", "strict", maintainer, "smaller devices")
    assert gate.decide(variant=_variant(judged, "int8")).passed is False  # judged under small, not strict


def test_a_variant_whose_stored_file_was_altered_cannot_be_promoted_even_by_force(judged: Any, approver: Any) -> None:
    """A13: one byte of the stored file flipped after it was judged: the promotion is refused by hash,
    forced or not, and the alias stays where it was."""
    from modelhub import artifacts

    path = artifacts.local_path(_variant(judged, "int8").storage_key)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    for force in (False, True):
        with pytest.raises(Invalid, match="does not match its sha256"):
            _promote(judged, "int8", approver, force=force, reason="try anyway")
    assert not PromotionEvent.objects.filter(model=judged.model).exists()
