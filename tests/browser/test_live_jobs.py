"""The live progress bar in the README's default setup: no broker, so jobs run on the local
runner, off the request; the page that started the job answers at once and the job page shows
the job moving, then its result."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from modelhub import queue
from modelhub.models import OptimizationJob
from tests import factories
from workers.samples import SampleModel

pytestmark = pytest.mark.django_db(transaction=True)  # the live server's and the runner's threads see commits only
MODEL = factories.TEAM_MODEL
JOB_TIMEOUT_MS = 240_000


@pytest.fixture(autouse=True)
def short_benchmarks(settings: Any) -> None:
    settings.MODELHUB_BENCH_BUDGET_S = 0.2


def test_in_the_default_setup_optimize_answers_at_once_and_the_bar_moves_to_the_result(
        page: Any, log_in: Callable[..., None], shoot: Callable[[str], Path],
        quality_mlp: SampleModel, media_root: Path) -> None:
    """D6: with no broker (the local default) pressing Optimize is never a hung request: the job
    page opens while the job is still queued or running, its bar and event log move in place
    (no reload) and it ends at 100 % with a link to the run's results."""
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.team_version(maintainer, quality_mlp)
    quick = factories.profile("quick-search", max_size_mb=5.0, search_budget_s=6)
    with queue.off_request():
        try:
            log_in(maintainer, f"/dashboard/models/{MODEL}/versions/{version.number}/")
            page.select_option("#optimize-form select[name=profile]", label=quick.name)
            page.click("#optimize-form input[value='Optimize']")
            page.wait_for_url("**/dashboard/jobs/*/")
            job = OptimizationJob.objects.get()
            expect(page.locator("#job-status")).to_have_text("queued" if job.status == "QUEUED" else "running")
            assert not OptimizationJob.objects.get().is_finished  # the page answered before the job ended
            page.evaluate("window.stillTheSamePage = true")
            page.wait_for_function(
                "(() => { const n = Number(document.getElementById('job-progress').getAttribute('aria-valuenow'));"
                " return n > 0 && n < 100; })()", timeout=JOB_TIMEOUT_MS)
            shoot("live-01-job-running-in-the-default-setup")
            expect(page.locator("#job-percent")).to_have_text("100 %", timeout=JOB_TIMEOUT_MS)
        finally:
            queue.local_runner_wait()  # the runner's thread is done before the database is emptied
    expect(page.locator("#job-status")).to_have_text("succeeded")
    expect(page.locator("#job-results")).to_be_visible()
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place: never reloaded
    shoot("live-02-job-finished-in-the-default-setup")
    page.click("#job-results")
    expect(page.locator("#variants")).to_be_visible()
