"""The admin and the dashboard in a real browser: upload, optimize with live progress, charts,
one run per variant table (stamped, with the declared statistic), the promote page's comparison
with production and the gate, force, roll back, history, the models list and the comparison of
versions."""

from __future__ import annotations

import datetime
import re
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.db import connection
from playwright.sync_api import expect

from modelhub import job_runner, nightly, services
from modelhub.models import ModelVersion, OptimizationJob, PromotionEvent
from tests import factories
from tests.browser import axe
from tests.onnx_graphs import onnx_copy
from workers.samples import SampleModel

pytestmark = pytest.mark.django_db(transaction=True)  # the live server's threads see commits only
MODEL = factories.TEAM_MODEL
JOB_TIMEOUT_MS = 240_000


@pytest.fixture(autouse=True)
def short_benchmarks(settings: Any) -> None:
    settings.MODELHUB_BENCH_BUDGET_S = 0.2


def _job(pk: int) -> re.Pattern[str]:
    return re.compile(rf"\bjob {pk}\b")


def _run_job(job_id: int) -> None:
    """Run a queued job to its end in this thread, as a worker would."""
    try:
        job_runner.job_run(job_id=job_id, worker="browser-test")
    finally:
        connection.close()


def test_a_maintainer_registers_a_model_and_uploads_it_with_its_data_through_the_admin(
        page: Any, log_in: Callable[..., None], shoot: Callable[[str], Path],
        quality_mlp: SampleModel, media_root: Path, tmp_path: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    log_in(maintainer)
    expect(page.locator(".empty")).to_contain_text("No models yet.")
    page.click("text=Register a model")
    page.fill("#id_name", MODEL)
    page.select_option("#id_task", "regression")
    page.click("input[name=_save]")
    expect(page.locator("h1")).to_have_text(MODEL)

    page.click("text=Upload a version")
    not_a_model = tmp_path / "model.onnx"
    not_a_model.write_bytes(b"these bytes are no model at all")
    page.set_input_files("#id_file", str(not_a_model))
    page.click("input[name=_save]")
    expect(page.locator(".field-file .errorlist")).to_be_visible()
    assert not ModelVersion.objects.exists()

    wrong_data = tmp_path / "validation.npz"
    np.savez(wrong_data, pixels=np.zeros((4, 3), dtype=np.float32))
    page.set_input_files("#id_file", str(quality_mlp.onnx))
    page.set_input_files("#id_validation_data", str(wrong_data))
    page.click("input[name=_save]")
    expect(page.locator(".field-validation_data .errorlist")).to_contain_text("features")
    expect(page.locator(".errornote, .errorlist.nonfield")).to_contain_text(["Version 1 was saved"])
    shoot("01-upload-dataset-refused")

    page.set_input_files("#id_file", str(quality_mlp.onnx))
    page.set_input_files("#id_validation_data", str(quality_mlp.validation))
    page.set_input_files("#id_calibration_data", str(quality_mlp.calibration))
    page.click("input[name=_save]")
    expect(page.locator("h1")).to_have_text(f"{MODEL} v1")
    expect(page.locator("#datasets")).to_contain_text("512 samples with labels")
    expect(page.locator("#optimize-form")).to_be_visible()
    shoot("02-version-uploaded")
    assert ModelVersion.objects.get().datasets.count() == 2


def test_an_optimization_shows_its_progress_live_until_100_percent(
        page: Any, log_in: Callable[..., None], shoot: Callable[[str], Path],
        queue_tasks: Callable[[], Any], quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.team_version(maintainer, quality_mlp)
    factories.team_profile()
    log_in(maintainer, f"/dashboard/models/{MODEL}/versions/{version.number}/")
    page.click("text=or choose the passes…")
    page.select_option("#id_profile", label=f"{MODEL}-profile")
    page.wait_for_url("**/optimize/?profile=*")
    page.fill("input[name=options__search]", '{"budget_s": 30}')  # the default plan is one budgeted search
    page.fill("#id_bench_budget_s", str(factories.TEAM_BENCH["time_budget_s"]))
    page.fill("#id_batch_sizes", "1")
    shoot("03-choose-passes")

    with queue_tasks():
        page.click("input[value='Start the optimization']")
        page.wait_for_url("**/dashboard/jobs/*/")
        expect(page.locator("#job-status")).to_have_text("queued")
        expect(page.locator("#job-live")).to_have_attribute("aria-live", "polite")  # status changes are announced
        expect(page.locator("#job-events")).to_contain_text("Waiting for a worker")
        expect(page.locator("#job-results")).to_be_hidden()
        page.evaluate("window.stillTheSamePage = true")
        job = OptimizationJob.objects.get()
        assert [(step["name"], step["options"]) for step in job.plan] == [("search", {"budget_s": 30.0})]
        runner = threading.Thread(target=_run_job, args=(job.pk,), daemon=True)
        runner.start()
        try:
            page.wait_for_function("document.querySelectorAll('#job-events tbody tr:not(.placeholder)').length > 0",
                                   timeout=JOB_TIMEOUT_MS)
            shoot("04-job-running")  # the job has started; how far it got by now varies from run to run
            expect(page.locator("#job-percent")).to_have_text("100 %", timeout=JOB_TIMEOUT_MS)
        finally:
            runner.join(timeout=JOB_TIMEOUT_MS / 1000)
    expect(page.locator("#job-status")).to_have_text("succeeded")
    expect(page.locator("#job-results")).to_be_visible()
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place: never reloaded
    expect(page.locator("#job-progress")).to_have_attribute("aria-valuetext", "100 %, succeeded")
    axe.assert_accessible(page, "the job page its script updated to the end")
    shoot("05-job-progress-100")
    page.click("#job-results")
    expect(page.locator("#best-variant")).not_to_be_empty()


def test_a_maintainer_cancels_a_queued_job(
        page: Any, log_in: Callable[..., None], shoot: Callable[[str], Path],
        queue_tasks: Callable[[], Any], quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.team_version(maintainer, quality_mlp)
    with queue_tasks():
        job = services.optimization_request(version=version, user=maintainer, profile=factories.team_profile(),
                                            plan=factories.TEAM_PLAN, bench=factories.TEAM_BENCH)
    log_in(maintainer, f"/dashboard/jobs/{job.pk}/")
    page.click("input[value='Cancel the job']")
    expect(page.locator(".messagelist")).to_contain_text("Job cancelled.")
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.locator("#cancel-form")).to_have_count(0)
    shoot("06-job-cancelled")
    job.refresh_from_db()
    assert job.status == OptimizationJob.Status.CANCELLED


def test_the_version_page_shows_verdicts_lineage_charts_and_downloads_a_bundle(
        page: Any, log_in: Callable[..., None], shoot: Callable[[str], Path],
        quality_mlp: SampleModel, media_root: Path, tmp_path: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    log_in(maintainer, f"/dashboard/models/{MODEL}/versions/{version.number}/")
    expect(page.locator("#best-variant")).not_to_be_empty()
    expect(page.locator("tr[data-variant='original']")).to_contain_text("size 10.5 MB > 5 MB")
    expect(page.locator("tr[data-variant='prune-structured']")).to_contain_text("accuracy drop")
    expect(page.locator("#chart-scatter svg circle.point")).to_have_count(3)
    expect(page.locator("#chart-scatter svg")).to_contain_text("limit 0.02")  # the accuracy limit: drop ≤ 0.02
    expect(page.locator("#chart-sizes svg rect.bar")).to_have_count(3)
    expect(page.locator("#lineage")).to_contain_text("quantize_dynamic")
    expect(page.locator("#advice li").first).to_contain_text("int8-dynamic")
    shoot("07-version-charts")

    with page.expect_download() as download:
        page.locator("tr[data-variant='int8-dynamic'] a", has_text="bundle").click()
    bundle = tmp_path / download.value.suggested_filename
    download.value.save_as(bundle)
    assert bundle.name == f"{MODEL}-v1-int8-dynamic.zip"
    assert "model.onnx" in zipfile.ZipFile(bundle).namelist()


def test_the_version_page_stamps_every_row_with_its_run_and_declares_the_statistic(
        page: Any, log_in: Callable[..., None], shoot: Callable[[str], Path],
        quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    first = version.jobs.get()
    second = factories.team_benchmark(version.variants.get(name="int8-dynamic"), maintainer, factories.team_profile())
    log_in(maintainer, f"/dashboard/models/{MODEL}/versions/{version.number}/")
    head = page.locator("#variants thead")
    for text in ("p50 ms (batch 1) ★", "p95 ms (batch 1)", "p99 ms (batch 1)", "samples/s at batch 1",
                 "Fidelity vs the original", "Task quality vs labels"):
        expect(head).to_contain_text(text)
    expect(page.locator("#judgment")).to_contain_text("ranked by p50 latency at batch 1")
    expect(page.locator("tr[data-variant='int8-dynamic'] td.variant .run")).to_contain_text(f"benchmark job {second.pk}")
    expect(page.locator("tr[data-variant='original'] td.variant .run")).to_contain_text("not in this run")
    expect(page.locator("#chart-scatter svg")).to_contain_text("p50 latency at batch 1 (ms)")

    page.select_option("#id_job", str(first.pk))
    page.click("input[value='Show this run']")
    page.wait_for_url(f"**/?job={first.pk}")
    stamps = page.locator("#variants tbody td.variant .run")
    expect(stamps).to_have_count(3)
    for index in range(3):
        expect(stamps.nth(index)).to_contain_text(_job(first.pk))
        expect(stamps.nth(index)).to_contain_text("profile quality-mlp-profile")
    expect(page.locator("tr[data-variant='int8-dynamic'] td.latency-p50")).to_contain_text(re.compile(r"\d+ calls"))
    expect(page.locator("tr[data-variant='int8-dynamic'] td.latency-p99")).to_contain_text("too few calls")
    expect(page.locator("tr[data-variant='original'] td.variant .run")).not_to_contain_text(_job(second.pk))
    shoot("12-version-one-run-stamped")


def test_the_promote_page_sets_the_candidate_beside_production_with_intervals_and_the_gate(
        page: Any, log_in: Callable[..., None], shoot: Callable[[str], Path],
        quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    job = version.jobs.get()
    factories.promote(version.variants.get(name="int8-dynamic"), approver, reason="fastest passing variant")
    log_in(approver, f"/dashboard/models/{MODEL}/versions/{version.number}/variants/original/promote/")
    expect(page.locator("#gate")).to_contain_text("refused under the governing profile quality-mlp-profile")
    expect(page.locator("#gate")).to_contain_text("size 10.5 MB > 5 MB")
    table = page.locator("#comparison")
    expect(table.locator("thead")).to_contain_text("v1/original")
    expect(table.locator("thead")).to_contain_text("v1/int8-dynamic")
    for statistic in ("p50", "p95"):
        expect(table.locator(f"tr.latency-{statistic} td")).to_have_count(2)
        for index in range(2):
            expect(table.locator(f"tr.latency-{statistic} td").nth(index)).to_contain_text(re.compile(r"\d+ calls"))
    expect(table.locator("tr.latency-p99")).to_contain_text("too few calls")
    expect(table.locator("tr.runs td")).to_have_count(2)
    for index in range(2):
        expect(table.locator("tr.runs td").nth(index)).to_contain_text(_job(job.pk))
    expect(page.locator("#speedup")).to_contain_text("slower")
    expect(page.locator("#speedup")).to_contain_text(f"paired: both measured together in job {job.pk}")
    expect(table).to_contain_text("Fidelity vs the original")
    shoot("13-promote-compares-with-production")
    page.click("input[value='Force the promotion of v1/original']")
    expect(page.locator("#promote-form .errorlist").first).to_contain_text("A forced promotion needs a written reason.")
    assert not PromotionEvent.objects.filter(to_variant__name="original").exists()


def test_an_approver_promotes_forces_a_failing_variant_rolls_back_and_finds_it_all_in_the_history(
        page: Any, log_in: Callable[..., None], shoot: Callable[[str], Path],
        quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    log_in(approver, f"/dashboard/models/{MODEL}/versions/{version.number}/")
    page.locator("tr[data-variant='int8-dynamic'] a", has_text="promote").click()
    expect(page.locator("#verdict")).to_contain_text("passes")
    expect(page.locator("#signature-diff")).to_contain_text("First promotion")
    page.fill("#id_reason", "fastest passing variant")
    page.click("input[value='Promote v1/int8-dynamic to production']")
    expect(page.locator(".messagelist")).to_contain_text("Promoted: v1/int8-dynamic now serves quality-mlp")

    page.goto(page.url.split("/dashboard/")[0] + f"/dashboard/models/{MODEL}/versions/1/variants/prune-structured/promote/")
    expect(page.locator("#verdict")).to_contain_text("accuracy drop")
    expect(page.locator("#signature-diff")).to_contain_text("Compatible signature")
    page.click("input[value='Force the promotion of v1/prune-structured']")
    expect(page.locator("#promote-form .errorlist").first).to_contain_text("A forced promotion needs a written reason.")
    shoot("08-forced-promotion-needs-a-reason")
    page.fill("#id_reason", "smaller model for the edge trial")
    page.check("#id_force")
    page.click("input[value='Force the promotion of v1/prune-structured']")
    expect(page.locator("#production")).to_contain_text("v1/prune-structured serves")

    expect(page.locator("#rollback-form")).to_contain_text("the last known good")
    page.fill("#rollback-form input[name=reason]", "trial lost too much accuracy")
    page.click("input[value='Roll back to v1/int8-dynamic']")
    expect(page.locator(".messagelist")).to_contain_text("v1/int8-dynamic serves quality-mlp again")
    rows = page.locator("#history-table tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("rollback")
    expect(rows.nth(0)).to_contain_text("trial lost too much accuracy")
    expect(rows.nth(0)).to_contain_text("under quality-mlp-profile")
    expect(rows.nth(1)).to_contain_text("forced")
    expect(rows.nth(1)).to_contain_text("no passing judgment")
    expect(rows.nth(1)).to_contain_text("smaller model for the edge trial")
    expect(rows.nth(2)).to_contain_text("fastest passing variant")
    shoot("09-promotion-history")
    kinds = [(e.kind, e.to_variant.name, e.forced, e.by.username) for e in PromotionEvent.objects.all()]
    assert kinds == [("rollback", "int8-dynamic", False, "abe"), ("promote", "prune-structured", True, "abe"),
                     ("promote", "int8-dynamic", False, "abe")]


def test_the_models_list_and_the_comparison_show_production_trends_and_versions(
        page: Any, log_in: Callable[..., None], shoot: Callable[[str], Path],
        quality_mlp: SampleModel, media_root: Path, tmp_path: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    viewer = factories.staff_user("vic", "viewer")
    factories.optimized_team_version(maintainer, quality_mlp)
    retrained = onnx_copy(quality_mlp.onnx, tmp_path / "model.onnx", "retrained")
    second = factories.optimized_team_version(maintainer, quality_mlp, plan=factories.TEAM_PLAN[:1],
                                              model_file=retrained)
    factories.promote(second.variants.get(name="int8-dynamic"), approver, reason="v2 retrained")
    first_night = datetime.date(2026, 1, 10)
    for offset in range(3):
        nightly.nightly_run(night=first_night + datetime.timedelta(days=offset), model=MODEL)

    log_in(viewer)
    row = page.locator("#models tbody tr")
    expect(row).to_contain_text("v2/int8-dynamic")
    expect(row).to_contain_text("serving")
    expect(row.locator("td.last")).to_contain_text("nightly of 2026-01-12")  # production's own latest numbers
    expect(row.locator("td.last")).to_contain_text("at batch 1")
    expect(row.locator("svg.sparkline")).to_have_count(1)
    expect(row).to_contain_text("3 nights")
    expect(page.locator("text=Register a model")).to_have_count(0)  # a viewer registers nothing
    shoot("10-models-list")

    page.click(f"text={MODEL}")
    expect(page.locator("text=Upload a version")).to_have_count(0)
    page.click("text=Compare versions")
    expect(page.locator("#compare thead th")).to_have_count(2)  # one header per version (the corner is a td)
    expect(page.locator("#chart-latency svg circle")).to_have_count(4)
    expect(page.locator("#chart-nightly svg")).to_be_visible()
    shoot("11-compare-versions")
