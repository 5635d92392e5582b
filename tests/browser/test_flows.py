"""The alias and notes flows in a real browser: promote to staging through its own gate, force a
failing variant there with a reason, roll staging back; write a version's notes, tags and source."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from modelhub.models import Deployment, ModelVersion, PromotionEvent
from tests import factories
from tests.browser import axe
from workers.samples import SampleModel

pytestmark = pytest.mark.django_db(transaction=True)  # the live server's threads see commits only
MODEL = factories.TEAM_MODEL


@pytest.fixture(autouse=True)
def short_benchmarks(settings: Any) -> None:
    settings.MODELHUB_BENCH_BUDGET_S = 0.2


def test_an_approver_promotes_to_staging_through_its_gate_forces_a_failing_one_and_rolls_staging_back(
        page: Any, log_in: Callable[..., None], shoot: Callable[[str], Path],
        quality_mlp: SampleModel, media_root: Path) -> None:
    """G1, G3: an alias beyond production is chosen on the promote page and judged by its own
    governing profile; a variant failing it needs force and a reason; the model page lists each
    alias with what it serves and its profile, and staging rolls back to its last known good while
    production stays as it was."""
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    factories.govern(version, factories.team_profile(), maintainer, alias="staging")
    base = f"/dashboard/models/{MODEL}/versions/{version.number}/variants"
    log_in(approver, f"{base}/int8-dynamic/promote/")
    page.fill("#id_alias", "staging")
    page.click("input[value=\"Check this alias's gate\"]")
    page.wait_for_url("**/promote/?alias=staging")
    expect(page.locator("#gate")).to_contain_text("passes")
    expect(page.locator("h2.section").first).to_contain_text("quality-mlp@staging")
    page.fill("#promote-form textarea[name=reason]", "staging trial")
    page.click("#promote-form input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("now serves quality-mlp@staging")

    page.goto(page.url.split("/dashboard/")[0] + f"{base}/prune-structured/promote/?alias=staging")
    expect(page.locator("#gate")).to_contain_text("refused under the governing profile quality-mlp-profile")
    page.fill("#promote-form textarea[name=reason]", "edge trial on staging")
    page.check("#promote-form input[name=force]")
    page.click("#promote-form input[type=submit]")
    staging = page.locator("#alias-table tr[data-alias='staging']")
    expect(staging).to_contain_text("v1/prune-structured")
    expect(staging).to_contain_text("quality-mlp-profile")
    expect(page.locator("#alias-table tr[data-alias='production']")).to_contain_text("nothing yet")
    axe.assert_accessible(page, "the model page with its aliases")
    shoot("flows-01-aliases")

    staging.locator("input[name=reason]").fill("prune lost accuracy")
    staging.locator("input[type=submit]").click()
    expect(page.locator(".messagelist")).to_contain_text("serves quality-mlp@staging again")
    expect(page.locator("#alias-table tr[data-alias='staging']")).to_contain_text("v1/int8-dynamic")
    event = PromotionEvent.objects.first()
    assert (event.alias, event.kind, event.to_variant.name, event.forced) == ("staging", "rollback", "int8-dynamic",
                                                                               False)
    assert not Deployment.objects.filter(alias="production").exists()


def test_a_maintainer_writes_notes_tags_and_a_source_link_that_opens_nothing_on_the_server(
        page: Any, log_in: Callable[..., None], shoot: Callable[[str], Path],
        quality_mlp: SampleModel, media_root: Path) -> None:
    """B5: notes, tags and source are edited on the version page; the source URL becomes a link
    with rel="noopener noreferrer nofollow" (the server never fetches it) and a bad tag is refused
    with its reason, keeping what was saved."""
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.team_version(maintainer, quality_mlp)
    log_in(maintainer, f"/dashboard/models/{MODEL}/versions/{version.number}/")
    page.click("#notes-editor summary")
    page.fill("#notes-form textarea[name=notes]", "Exported from the Q3 notebook.\nBaseline for the edge trial.")
    page.fill("#notes-form input[name=tags]", "baseline, q3")
    page.fill("#notes-form input[name=source]", "https://example.org/notebooks/q3")
    page.click("#notes-form input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("Saved the notes, tags and source of v1")
    expect(page.locator("#version-tags .tag")).to_have_text(["baseline", "q3"])
    link = page.locator("#version-source a")
    expect(link).to_have_attribute("href", "https://example.org/notebooks/q3")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    expect(page.locator("#version-notes-text")).to_contain_text("Baseline for the edge trial.")
    axe.assert_accessible(page, "the version page with its notes")
    shoot("flows-02-notes")

    page.click("#notes-editor summary")
    page.fill("#notes-form input[name=tags]", "no spaces allowed!")
    page.click("#notes-form input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("is not a short slug")
    assert ModelVersion.objects.get().tags == ["baseline", "q3"]
