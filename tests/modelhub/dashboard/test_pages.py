"""Dashboard pages through the Django test client: what they show, and what their forms do.

Every figure on a page belongs to one run (job, time, profile) and carries its statistic, batch
size and 95 % interval; a variant table shows one judgment at a time, and nightly measurements
never mix into it."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse

from modelhub import gate
from modelhub.dashboard import numbers
from modelhub.models import (
    BenchmarkResult,
    GoverningProfile,
    GoverningProfileChange,
    ModelVersion,
    OptimizationJob,
    PromotionEvent,
)
from tests import factories
from workers.evaluation import stats
from workers.samples import SampleModel

pytestmark = pytest.mark.django_db
MODEL = factories.TEAM_MODEL


@pytest.fixture(autouse=True)
def short_benchmarks(settings: Any) -> None:
    settings.MODELHUB_BENCH_BUDGET_S = 0.2


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_an_empty_registry_says_how_to_begin() -> None:
    page = _client(factories.staff_user("maria", "maintainer")).get("/dashboard/").content.decode()
    assert "No models yet." in page and "Register a model" in page


@pytest.mark.slow
def test_a_version_before_optimization_offers_the_optimize_form(quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.team_version(maintainer, quality_mlp)
    page = _client(maintainer).get(reverse("dashboard:version", args=[MODEL, version.number])).content.decode()
    assert "No measurements yet." in page
    assert 'id="optimize-form"' in page and "512 samples with labels" in page


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the admin's form shows the intake's outcome: it runs at commit
def test_the_admin_upload_form_names_each_refused_file(quality_mlp: SampleModel,
                                                       media_root: Path, tmp_path: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    model = factories.team_model(maintainer)
    client = _client(maintainer)
    url = reverse("admin:modelhub_modelversion_add")
    response = client.post(url, {"model": model.pk, "file": io.BytesIO(b"just some text")})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["file"]
    assert not ModelVersion.objects.filter(status=ModelVersion.Status.READY).exists()

    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixels=np.zeros((4, 3), dtype=np.float32))
    with quality_mlp.onnx.open("rb") as model_file, wrong.open("rb") as data:
        response = client.post(url, {"model": model.pk, "file": model_file, "validation_data": data})
    form = response.context["adminform"].form
    assert "features" in " ".join(form.errors["validation_data"])  # names the input the file lacks
    assert "Version 1 was saved" in " ".join(form.non_field_errors())
    assert ModelVersion.objects.get().status == ModelVersion.Status.READY


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the admin's form shows the intake's outcome: it runs at commit
def test_an_upload_with_its_datasets_leads_to_the_version_page(quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    model = factories.team_model(maintainer)
    with quality_mlp.onnx.open("rb") as model_file, quality_mlp.validation.open("rb") as data:
        response = _client(maintainer).post(reverse("admin:modelhub_modelversion_add"),
                                            {"model": model.pk, "file": model_file, "validation_data": data})
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:version", args=[MODEL, 1])
    assert ModelVersion.objects.get().dataset("validation").sample_count == 512


@pytest.mark.slow
def test_the_progress_endpoint_reports_a_finished_job(quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    job = version.jobs.get()
    body = _client(maintainer).get(reverse("dashboard:job-progress", args=[job.pk])).json()
    assert body["status"] == OptimizationJob.Status.SUCCEEDED and body["finished"] is True
    assert body["progress"] == 100.0 and body["best"] == "int8-dynamic"
    assert any("prune-structured" in event["message"] for event in body["events"])


def _table(page: str) -> str:
    return page.split('id="variants"')[1].split("</table>")[0]


def _row(page: str, variant: str) -> str:
    return _table(page).split(f'data-variant="{variant}"')[1].split("</tr>")[0]


@pytest.mark.slow
def test_the_version_page_shows_verdicts_charts_lineage_and_advice(quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    page = _client(maintainer).get(reverse("dashboard:version", args=[MODEL, version.number])).content.decode()
    assert "size 10.5 MB &gt; 5 MB" in page  # the original fails on size, rule by rule
    assert "accuracy drop" in page  # prune-structured fails on accuracy
    assert page.count('class="point"') == 3 and 'class="pareto"' in page and 'class="limit"' in page
    assert page.count('class="bar"') == 3
    assert 'id="lineage"' in page and 'id="advice"' in page
    assert "<script" not in page.split('id="chart-scatter"')[1].split("</svg>")[0]


@pytest.mark.slow
def test_the_variant_table_declares_its_statistic_batch_and_intervals_and_names_its_metric_columns(
        quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    job = version.jobs.get()
    response = _client(maintainer).get(reverse("dashboard:version", args=[MODEL, version.number]))
    page = response.content.decode()
    head = _table(page).split("</thead>")[0]
    assert "p50 ms (batch 1) ★" in head and "p95 ms (batch 1)" in head and "p99 ms (batch 1)" in head
    assert "samples/s at batch 1" in head
    assert "Fidelity vs the original" in head and "Task quality vs labels" in head
    assert response.context["results"].fidelity == ["mae", "max_abs_error", "rel_l2"]
    assert response.context["results"].task_metrics == ["label_mae", "pearson"]
    int8 = BenchmarkResult.objects.get(job=job, variant__name="int8-dynamic")
    row = _row(page, "int8-dynamic")
    assert f"job {job.pk}</a>" in row and "profile quality-mlp-profile" in row  # the run stamp
    p50 = int8.intervals["p50"]
    assert numbers.milliseconds(p50["value"]) in row and f"{p50['calls']} calls" in row
    assert f"[{numbers.significant(p50['low'])}–{numbers.significant(p50['high'])}]" in row
    # p99 needs 1,000 calls; a 0.2 s benchmark makes a few hundred: the page says so instead of a number.
    assert not int8.intervals["p99"]["enough"]
    assert f"too few calls ({int8.intervals['p99']['calls']})" in row
    speedup = stats.Estimate.from_dict(job.result["comparisons"]["int8-dynamic"])
    assert numbers.times(speedup.value) in row and stats.claim(speedup) in row


@pytest.mark.slow
def test_the_variant_table_shows_one_run_and_an_earlier_one_on_request(
        quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    first = version.jobs.get()
    second = factories.team_benchmark(version.variants.get(name="int8-dynamic"), maintainer, factories.team_profile())
    client = _client(maintainer)
    url = reverse("dashboard:version", args=[MODEL, version.number])

    latest = client.get(url)
    rows = {row["name"]: row for row in latest.context["results"].rows}
    assert latest.context["results"].job == second
    measured = BenchmarkResult.objects.get(job=second)
    assert rows["int8-dynamic"]["run"]["job"] == second.pk and rows["int8-dynamic"]["p50_ms"] == measured.p50_ms
    assert rows["original"]["run"] is None and rows["original"]["p50_ms"] is None  # the first job's figures stay out
    page = latest.content.decode()
    assert f"job {second.pk}</a>" in _row(page, "int8-dynamic") and f"job {first.pk}</a>" not in _table(page)
    assert "not in this run" in _row(page, "original")
    assert f'<option value="{first.pk}"' in page  # the earlier judgment can be chosen

    earlier = client.get(url, {"job": first.pk})
    rows = {row["name"]: row for row in earlier.context["results"].rows}
    assert earlier.context["results"].job == first
    for name, row in rows.items():
        result = BenchmarkResult.objects.get(job=first, variant__name=name)
        assert (row["run"]["job"], row["p50_ms"], row["passed"]) == (first.pk, result.p50_ms, result.passed)
    assert f"job {second.pk}</a>" not in _table(earlier.content.decode())
    assert client.get(url, {"job": 999999}).status_code == 404
    assert client.get(url, {"job": "latest"}).status_code == 404


@pytest.mark.slow
def test_the_version_page_states_the_rankings_ties_on_the_rows_and_beside_the_best(
        quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.team_version(maintainer, quality_mlp)
    loose = factories.profile("loose", max_p95_ms=50.0, accuracy_metric="mae", max_accuracy_drop=0.02)
    # A graph-optimized MLP runs as fast as the original: their p50 intervals overlap, a tie the
    # ranking breaks by size, accuracy and fewest passes.
    job = factories.team_job(version, maintainer, loose,
                  plan=[{"name": "graph", "pass_name": "graph", "options": {"level": "extended"}}])
    ranking = job.result["ranking"]
    response = _client(maintainer).get(reverse("dashboard:version", args=[MODEL, version.number]))
    page = response.content.decode()
    assert response.context["results"].ties == ranking["ties"]
    for name in ("original", "graph"):
        tied = ranking["ties"].get(name)
        note = f"tied with {', '.join(tied)} on p50" if tied else None
        assert (note in _row(page, name)) if note else ("tied with" not in _row(page, name))
    best_ties = ranking["ties"].get(ranking["best"])
    assert ('id="best-ties"' in page) == bool(best_ties)
    if best_ties:
        assert f"tied with {', '.join(best_ties)} on p50 at batch 1" in page.split('id="best-ties"')[1]
        assert any("is tied on p50 latency at batch 1" in line for line in job.result["advice"])
        assert "is tied on p50 latency at batch 1" in page.split('id="advice"')[1]


@pytest.mark.slow
def test_the_compare_page_shows_each_versions_chosen_variant_whatever_the_later_jobs_liked(
        quality_mlp: SampleModel, media_root: Path) -> None:
    """G2: a version speaks through the variant an approver promoted from it, unchanged by later jobs."""
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    factories.promote(version.variants.get(name="int8-dynamic"), approver, reason="fastest passing")
    later = factories.team_job(version, maintainer, None)
    response = _client(maintainer).get(reverse("dashboard:compare", args=[MODEL]))
    column = response.context["columns"][0]
    assert column["variant"].name == "int8-dynamic" and column["why"] == "promoted by an approver"
    assert column["result"] == BenchmarkResult.objects.get(job=later, variant__name="int8-dynamic")
    page = response.content.decode()
    assert "promoted by an approver" in page and f"job {later.pk}</a>" in page and "p50 latency by version" in page


@pytest.mark.slow
def test_a_run_without_a_profile_is_shown_grey_not_judged_and_opens_no_gate(
        quality_mlp: SampleModel, media_root: Path) -> None:
    """G1: a variant refused under the governing profile stays refused after a run with no profile."""
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    job = factories.team_job(version, maintainer, None)
    assert set(BenchmarkResult.objects.filter(job=job).values_list("passed", flat=True)) == {None}
    page = _client(approver).get(reverse("dashboard:version", args=[MODEL, version.number])).content.decode()
    table = _table(page)
    assert table.count('class="badge idle verdict-unjudged"') == 3 and ">not judged<" in _row(page, "original")
    assert 'class="badge ok">passes' not in table and 'class="badge bad">fails' not in table
    assert "without a readiness profile" in page and 'id="best-variant"' not in page
    promote = _client(approver).get(reverse("dashboard:promote", args=[MODEL, version.number, "prune-structured"]))
    assert promote.context["passed"] is False
    assert "refused" in promote.content.decode() and "accuracy drop" in promote.content.decode()


@pytest.mark.slow
def test_a_bundle_downloads_with_the_session_login(quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    response = _client(maintainer).get(reverse("dashboard:bundle", args=[MODEL, version.number, "int8-dynamic"]))
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert {"model.onnx", "config.json", "predict.py", "README.md"} <= set(archive.namelist())


@pytest.mark.slow
def test_the_models_list_and_model_page_show_the_production_variants_own_latest_numbers(
        quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    first = version.jobs.get()
    int8 = version.variants.get(name="int8-dynamic")
    factories.promote(int8, approver, reason="fastest passing")
    later = factories.team_benchmark(version.variants.get(name="prune-structured"), maintainer,
                                     factories.team_profile())
    newest = BenchmarkResult.objects.order_by("-created_at", "-id").first()
    assert newest.job == later and newest.variant.name == "prune-structured"  # the newest result is not production's
    own = BenchmarkResult.objects.get(job=first, variant=int8)

    client = _client(approver)
    listing = client.get("/dashboard/")
    last = listing.context["rows"][0]["last"]
    assert last["result"] == own and last["statistic"] == "p50" and last["batch_size"] == 1
    cell = listing.content.decode().split('class="last"')[1].split("</td>")[0]
    assert "v1/int8-dynamic" in cell and f"job {first.pk}</a>" in cell and "at batch 1" in cell
    assert numbers.milliseconds(own.intervals["p50"]["value"]) in cell and f"job {later.pk}</a>" not in cell
    model_page = client.get(reverse("dashboard:model", args=[MODEL])).content.decode()
    production = model_page.split('id="production-last"')[1].split("See its version page")[0]
    assert f"job {first.pk}</a>" in production and "p50" in production and "v1/int8-dynamic" in production


@pytest.mark.slow
def test_the_promote_page_compares_the_candidate_with_production_with_intervals(
        quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    job = version.jobs.get()
    factories.promote(version.variants.get(name="int8-dynamic"), approver, reason="fastest passing")
    client = _client(approver)
    url = reverse("dashboard:promote", args=[MODEL, version.number, "original"])
    response = client.get(url)
    page = response.content.decode()
    table = page.split('id="comparison"')[1].split("</table>")[0]
    assert "v1/original" in table and "v1/int8-dynamic" in table
    for name in ("original", "int8-dynamic"):
        p50 = BenchmarkResult.objects.get(job=job, variant__name=name).intervals["p50"]
        assert numbers.milliseconds(p50["value"]) in table and f"{p50['calls']} calls" in table
    assert table.count(f"job {job.pk}</a>") == 2 and "too few calls" in table  # p99 of a 0.2 s run
    assert "Fidelity vs the original" in table and "Task quality vs labels" in table and "pearson" in table
    speedup = response.context["speedup"]
    assert speedup["paired"] and speedup["statistic"] == "p50" and speedup["claim"] == stats.SLOWER
    assert "paired: both measured together in job" in page and "slower" in page.split('id="speedup"')[1]
    assert "Refused because it fails production&#x27;s governing profile" in page and "size 10.5 MB" in page

    # Measured again on its own, the original no longer shares a run with production: unpaired.
    again = factories.team_benchmark(version.variants.get(name="original"), maintainer, factories.team_profile())
    response = client.get(url)
    assert response.context["candidate"]["result"].job == again
    assert response.context["speedup"]["paired"] is False
    assert "separate runs" in response.content.decode().split('id="speedup"')[1]


@pytest.mark.slow
def test_a_failing_variant_needs_a_reason_and_the_audit_marks_it_forced(quality_mlp: SampleModel,
                                                                        media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    client = _client(approver)
    url = reverse("dashboard:promote", args=[MODEL, version.number, "prune-structured"])
    page = client.get(url).content.decode()
    assert "accuracy drop" in page and "First promotion" in page
    refused = client.post(url, {"reason": ""})
    assert refused.status_code == 400 and set(refused.context["form"].errors) == {"reason", "force"}
    assert client.post(url, {"reason": "accepted for the trial", "force": "on"}).status_code == 302
    event = PromotionEvent.objects.get()
    assert event.forced and event.reason == "accepted for the trial" and event.by == approver
    assert "accuracy drop" in " ".join(event.verdict["failures"])


@pytest.mark.slow
def test_a_rollback_with_a_reason_puts_the_previous_variant_back(quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    factories.promote(version.variants.get(name="int8-dynamic"), approver, reason="first")
    factories.promote(version.variants.get(name="prune-structured"), approver, reason="trial", force=True)
    client = _client(approver)
    page = client.get(reverse("dashboard:model", args=[MODEL])).content.decode()
    assert "Roll back to v1/int8-dynamic" in page
    response = client.post(reverse("dashboard:rollback", args=[MODEL]), {"reason": "trial lost accuracy"}, follow=True)
    assert "serves quality-mlp again" in response.content.decode()
    latest = PromotionEvent.objects.first()
    assert (latest.kind, latest.to_variant.name, latest.reason) == ("rollback", "int8-dynamic", "trial lost accuracy")
    assert not latest.forced and latest.judgment.job == version.jobs.get()


@pytest.mark.slow
def test_a_rollback_with_no_passing_earlier_variant_needs_force_and_a_reason(
        quality_mlp: SampleModel, media_root: Path) -> None:
    """G3: the rollback goes only to a variant that passes the governing profile; a failing target
    needs the forced flow, with a reason, and the history says it was forced and under which profile."""
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    factories.promote(version.variants.get(name="prune-structured"), approver, reason="edge trial", force=True)
    factories.promote(version.variants.get(name="int8-dynamic"), approver, reason="back on track")
    client = _client(approver)
    page = client.get(reverse("dashboard:model", args=[MODEL])).content.decode()
    forced = page.split('id="forced-rollback"')[1].split("</div>")[0]
    assert "No earlier variant passes the governing profile quality-mlp-profile" in forced
    assert "Force the rollback to v1/prune-structured" in forced and "accuracy drop" in forced

    url = reverse("dashboard:rollback", args=[MODEL])
    refused = client.post(url, {"reason": " ", "force": "on"}, follow=True).content.decode()
    assert "A forced rollback needs a written reason." in refused
    unforced = client.post(url, {"reason": "undo"}, follow=True).content.decode()
    assert "No earlier variant of quality-mlp@production passes its governing profile" in unforced
    assert PromotionEvent.objects.count() == 2

    client.post(url, {"reason": "int8 crashes on the edge boxes", "force": "on"})
    event = PromotionEvent.objects.first()
    assert (event.kind, event.to_variant.name, event.forced, event.judgment) == ("rollback", "prune-structured",
                                                                                  True, None)
    history = client.get(reverse("dashboard:model", args=[MODEL])).content.decode().split('id="history-table"')[1]
    first_row = history.split("<tr>")[2]
    assert "forced" in first_row and "under quality-mlp-profile" in first_row and "no passing judgment" in first_row
    assert f"gate opened by <a href=\"/dashboard/jobs/{version.jobs.get().pk}/\">" in history


@pytest.mark.slow
def test_the_optimize_forms_default_to_the_models_governing_profile(quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.team_version(maintainer, quality_mlp)
    other = factories.profile("strict-p95", statistic="p95", max_p95_ms=10.0)
    governing = factories.team_governed(version.model, maintainer, by=factories.team_profile())
    client = _client(maintainer)
    optimize = client.get(reverse("dashboard:optimize", args=[MODEL, version.number]))
    assert optimize.context["form"]["profile"].value() == governing.pk and other.pk != governing.pk
    assert "governed by <strong>quality-mlp-profile</strong>" in optimize.content.decode()
    page = client.get(reverse("dashboard:version", args=[MODEL, version.number])).content.decode()
    form = page.split('id="optimize-form"')[1].split("</form>")[0]
    assert f'<option value="{governing.pk}" selected>' in form
    chosen = client.get(reverse("dashboard:optimize", args=[MODEL, version.number]), {"profile": ""})
    assert chosen.context["form"]["profile"].value() in (None, "")  # "no profile" stays a choice


def test_the_admin_sets_a_governing_profile_through_the_audited_service() -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    viewer = factories.staff_user("vic", "viewer")
    model = factories.team_model(maintainer)
    first = factories.team_profile()
    strict = factories.profile("strict-p95", statistic="p95", **{**factories.TEAM_LIMITS, "max_p95_ms": 10.0})
    add = reverse("admin:modelhub_governingprofile_add")
    assert _client(viewer).post(add, {"model": model.pk, "alias": "production", "profile": first.pk}).status_code == 403
    client = _client(maintainer)
    assert client.post(add, {"model": model.pk, "alias": "production", "profile": first.pk}).status_code == 302
    row = GoverningProfile.objects.get()
    assert gate.governing_profile(model=model) == first and row.set_by == maintainer

    change = reverse("admin:modelhub_governingprofile_change", args=[row.pk])
    refused = client.post(change, {"profile": strict.pk, "reason": ""})
    assert refused.status_code == 200 and "changing it needs a reason" in refused.content.decode()
    assert gate.governing_profile(model=model) == first
    assert client.post(change, {"profile": strict.pk, "reason": "serving SLO is on p95 now"}).status_code == 302
    assert gate.governing_profile(model=model) == strict
    audit = [(c.from_profile, c.to_profile, c.by, c.reason) for c in GoverningProfileChange.objects.order_by("at", "id")]
    assert audit == [("", first.name, maintainer, ""), (first.name, strict.name, maintainer, "serving SLO is on p95 now")]
    listing = client.get(reverse("admin:modelhub_governingprofilechange_changelist")).content.decode()
    assert "serving SLO is on p95 now" in listing
    model_page = client.get(reverse("dashboard:model", args=[MODEL])).content.decode()
    assert "governed by profile <strong>strict-p95</strong> (ranks by p95" in model_page
    governing = client.get(model_page.split('id="governing"')[1].split('href="')[1].split('"')[0].replace("&amp;", "&"))
    assert governing.status_code == 200 and "strict-p95" in governing.content.decode()
    profiles = client.get(reverse("admin:modelhub_readinessprofile_changelist")).content.decode()
    assert "column-statistic" in profiles and "quality-mlp@production" in profiles


@pytest.mark.slow
def test_the_admin_promote_action_leads_to_the_confirmation_page(quality_mlp: SampleModel, media_root: Path) -> None:
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    original = factories.team_version(maintainer, quality_mlp).variants.get()
    response = _client(approver).post(reverse("admin:modelhub_variant_changelist"),
                                      {"action": "promote", "_selected_action": [original.pk]})
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:promote", args=[MODEL, 1, "original"])
    assert not PromotionEvent.objects.exists()


@pytest.mark.slow
def test_the_version_page_draws_each_nightly_measured_variant_over_the_nights(
        quality_mlp: SampleModel, media_root: Path) -> None:
    import datetime

    from modelhub import nightly

    maintainer = factories.staff_user("maria", "maintainer", "approver")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    factories.promote(version.variants.get(name="original"), maintainer, force=True,
                      reason="baseline for the nightly chart")
    for day in (1, 2):
        nightly.nightly_run(night=datetime.date(2026, 1, day))
    response = _client(maintainer).get(reverse("dashboard:version", args=[MODEL, version.number]))
    page = response.content.decode()
    history = page.split('id="nightly-history"')[1].split("</div>\n</div>")[0]
    assert "original: p50 / p95 / p99 per night" in history
    assert "Jan 01" in history and "Jan 02" in history
    # The nights are a series of their own: the table still shows the job's figures of the original.
    job_result = BenchmarkResult.objects.get(job=version.jobs.get(), variant__name="original")
    assert BenchmarkResult.objects.filter(kind="nightly", variant__name="original", pending=False).count() == 2
    original = next(row for row in response.context["results"].rows if row["name"] == "original")
    assert (original["run"]["kind"], original["p50_ms"]) == ("job", job_result.p50_ms)
    assert "nightly" not in _table(page)
