"""The dashboard's features through the Django test client: jobs off the request in the local
default, the upload flow, pass options and advice, aliases, notes, the variant page, the chosen
comparison and sortable tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from modelhub import queue, services
from modelhub.dashboard.pages import choose
from modelhub.models import Deployment, ModelVersion, OptimizationJob, PromotionEvent
from tests import factories
from workers.evaluation import stats
from workers.samples import SampleModel

pytestmark = pytest.mark.django_db
MODEL = factories.TEAM_MODEL


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- jobs off the request --------------------------------------------------------------------


def test_only_jobs_leave_the_request_in_the_local_default_and_eager_stays_eager() -> None:
    """D6: without a broker, optimize and benchmark jobs go to the local runner (the request never
    waits for a job), the intake still runs in the request, and ``queue.eager()`` (tests, bench
    scripts) runs everything in the caller."""
    with queue.off_request():
        assert queue.runs_off_request(queue.OPTIMIZE) and queue.runs_off_request(queue.BENCHMARK)
        assert not queue.runs_off_request(queue.INTAKE)
        with queue.eager():
            assert not queue.runs_off_request(queue.OPTIMIZE)
        with queue.eager(False):
            assert not queue.runs_off_request(queue.OPTIMIZE)
    assert not queue.runs_off_request(queue.OPTIMIZE)  # the suite's own default: eager


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the local runner's thread sees committed rows only
def test_an_optimize_request_in_the_local_default_returns_before_the_job_ends(
        quality_mlp: SampleModel, media_root: Path) -> None:
    """D6: in the local default (no broker) the optimize form answers with the job page at once; the
    local runner then runs the job to its end and the progress endpoint reports it."""
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.team_version(maintainer, quality_mlp)
    client = _client(maintainer)
    url = reverse("dashboard:optimize", args=[MODEL, version.number])
    with queue.off_request():
        response = client.post(url, {"profile": "", "custom": "on", "steps": ["search"],
                                     "options__search": json.dumps({"budget_s": 5}), "bench_budget_s": "0.2",
                                     "batch_sizes": "1"})
        answered = timezone.now()
        queue.local_runner_wait()
    job = OptimizationJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:job", args=[job.pk])
    assert job.status == OptimizationJob.Status.SUCCEEDED, job.error
    assert job.started_at is not None and job.finished_at > answered  # it ran after the page had answered
    progress = client.get(reverse("dashboard:job-progress", args=[job.pk])).json()
    assert progress["finished"] and progress["progress"] == 100.0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the local runner's thread sees committed rows only
def test_jobs_a_stopped_server_left_queued_or_running_are_taken_back_by_the_local_runner(
        quality_mlp: SampleModel, media_root: Path) -> None:
    """D6: in the local default there is no beat; the runner does the reconciler's round when
    runserver starts, so a job the last server queued but never ran, and one it was running when
    it stopped (its lease lapsed), both run to their end."""
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.team_version(maintainer, quality_mlp)
    with queue.eager(False), factories.committed():  # sent to a broker nobody reads: the stopped server
        left = [services.optimization_request(version=version, user=maintainer, plan=plan, bench=factories.QUICK_BENCH)
                for plan in (factories.INT8, factories.TEAM_PLAN)]
    long_ago = timezone.now() - timezone.timedelta(hours=1)
    OptimizationJob.objects.filter(pk=left[0].pk).update(dispatched_at=long_ago)
    OptimizationJob.objects.filter(pk=left[1].pk).update(status=OptimizationJob.Status.RUNNING, started_at=long_ago,
                                                          lease_owner="gone", lease_expires_at=long_ago)
    with queue.off_request():
        queue.local_runner_reconcile()
        queue.local_runner_wait()
    for job in left:
        job.refresh_from_db()
        assert job.status == OptimizationJob.Status.SUCCEEDED, job.error


def test_the_root_address_leads_to_the_dashboard_and_a_visitor_to_its_login() -> None:
    """B1 (the address runserver prints): "/" redirects to the models list, which sends a visitor
    to the staff login and back; never a 404."""
    response = Client().get("/", follow=True)
    assert [hop for hop, _ in response.redirect_chain][0] == reverse("dashboard:models")
    assert response.status_code == 200 and "/admin/login/" in response.request["PATH_INFO"]


# --- upload flow -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the admin's form shows the intake's outcome: it runs at commit
def test_a_partly_refused_upload_links_what_was_saved_and_sending_it_again_completes_it(
        quality_mlp: SampleModel, media_root: Path, tmp_path: Path) -> None:
    """G9: a model saved with its calibration data but a refused validation file says so and links
    the saved version; the same form sent again with a corrected file keeps what was saved (no
    "already has a calibration dataset" refusal) and leads to the version page."""
    maintainer = factories.staff_user("maria", "maintainer")
    model = factories.team_model(maintainer)
    client = _client(maintainer)
    url = reverse("admin:modelhub_modelversion_add")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixels=np.zeros((4, 3), dtype=np.float32))
    with quality_mlp.onnx.open("rb") as f, wrong.open("rb") as v, quality_mlp.calibration.open("rb") as c:
        response = client.post(url, {"model": model.pk, "file": f, "validation_data": v, "calibration_data": c})
    assert response.status_code == 200
    note = " ".join(response.context["adminform"].form.non_field_errors())
    assert "Version 1 was saved with its calibration data" in note and "validation data was refused" in note
    assert f'<a href="{reverse("dashboard:version", args=[MODEL, 1])}">open v1</a>' in response.content.decode()

    with quality_mlp.onnx.open("rb") as f, quality_mlp.validation.open("rb") as v, \
            quality_mlp.calibration.open("rb") as c:
        again = client.post(url, {"model": model.pk, "file": f, "validation_data": v, "calibration_data": c})
    assert again.status_code == 302 and again["Location"] == reverse("dashboard:version", args=[MODEL, 1])
    version = ModelVersion.objects.get()
    assert sorted(version.datasets.values_list("purpose", flat=True)) == ["calibration", "validation"]


# --- optimize form: pass options and advice --------------------------------------------------


@pytest.mark.slow
def test_pass_options_are_edited_in_the_form_and_checked_like_the_apis_plans(
        quality_mlp: SampleModel, media_root: Path) -> None:
    """G15: each pass's options are a field of the optimize form; a value the API would refuse (a
    negative search budget) is refused on the form with the service's reason, and no job starts."""
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.team_version(maintainer, quality_mlp)
    client = _client(maintainer)
    url = reverse("dashboard:optimize", args=[MODEL, version.number])
    page = client.get(url).content.decode()
    assert 'name="options__search"' in page and "budget_s" in page
    data = {"profile": "", "custom": "on", "steps": ["search"], "batch_sizes": "1"}
    refused = client.post(url, {**data, "options__search": json.dumps({"budget_s": -1})})
    assert refused.status_code == 400 and "budget_s must be a number of seconds above 0" in refused.content.decode()
    not_json = client.post(url, {**data, "options__search": "budget_s=5"})
    assert not_json.status_code == 400 and "JSON object" in not_json.content.decode()
    assert not OptimizationJob.objects.exists()
    with queue.eager(False):  # queued for a broker nobody reads: the plan is what is checked here
        started = client.post(url, {**data, "options__search": json.dumps({"budget_s": 7})})
    assert started.status_code == 302
    assert OptimizationJob.objects.get().plan[0]["options"] == {"budget_s": 7}


@pytest.mark.slow
def test_advice_to_lower_the_ratio_opens_the_form_prefilled_with_it(quality_mlp: SampleModel, media_root: Path) -> None:
    """G15: "prune-structured fails accuracy: try a lower ratio (0.25)" links to the optimize form
    with the job's plan, prune-structured ticked and its ratio set to 0.25; starting it queues
    exactly that."""
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    client = _client(maintainer)
    page = client.get(reverse("dashboard:version", args=[MODEL, version.number]))
    rows = page.context["advice_rows"]
    advised = next(row for row in rows if "try a lower ratio (0.25)" in row["text"])
    assert advised["url"] and 'class="advice-start"' in page.content.decode()
    form_page = client.get(advised["url"])
    form = form_page.context["form"]
    assert form["steps"].value() == ["prune-structured"]
    assert json.loads(form["options__prune-structured"].value()) == {"ratio": 0.25}
    with queue.eager(False):
        started = client.post(advised["url"], {"profile": form["profile"].value(), "custom": "on",
                                               "steps": ["prune-structured"], "batch_sizes": "1",
                                               "options__prune-structured": form["options__prune-structured"].value()})
    assert started.status_code == 302
    job = OptimizationJob.objects.latest("pk")
    assert [(s["name"], s["options"]) for s in job.plan] == [("prune-structured", {"ratio": 0.25})]


# --- aliases -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_alias_beyond_production_has_its_own_gate_promotion_and_rollback(
        quality_mlp: SampleModel, media_root: Path) -> None:
    """G1, G3: staging is promoted to through its own governing profile (a failing variant needs
    force and a reason), production is untouched, the model page lists each alias with its profile,
    and staging rolls back to its last known good; an alias that is no slug is a 404."""
    maintainer = factories.staff_user("maria", "maintainer")
    approver = factories.staff_user("abe", "approver")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    factories.govern(version, factories.team_profile(), maintainer, alias="staging")
    client = _client(approver)

    def promote_url(variant: str) -> str:
        return reverse("dashboard:promote", args=[MODEL, version.number, variant]) + "?alias=staging"

    page = client.get(promote_url("int8-dynamic")).content.decode()
    assert "The gate to quality-mlp@staging" in page and "what serves staging" in page
    assert client.post(promote_url("int8-dynamic"), {"reason": "staging trial"}).status_code == 302
    refused = client.post(promote_url("prune-structured"), {"reason": ""})
    assert refused.status_code == 400 and set(refused.context["form"].errors) == {"reason", "force"}
    assert client.post(promote_url("prune-structured"), {"reason": "edge trial", "force": "on"}).status_code == 302
    assert Deployment.objects.get(alias="staging").variant.name == "prune-structured"
    assert not Deployment.objects.filter(alias="production").exists()

    model_page = client.get(reverse("dashboard:model", args=[MODEL])).content.decode()
    staging = model_page.split('data-alias="staging"')[1].split("</tr>")[0]
    assert "v1/prune-structured" in staging and "quality-mlp-profile" in staging
    assert "Roll staging back to v1/int8-dynamic" in staging
    back = client.post(reverse("dashboard:rollback", args=[MODEL]), {"alias": "staging", "reason": "lost accuracy"},
                       follow=True)
    assert "serves quality-mlp@staging again" in back.content.decode()
    event = PromotionEvent.objects.first()
    assert (event.alias, event.kind, event.to_variant.name, event.forced) == ("staging", "rollback", "int8-dynamic",
                                                                               False)
    bad = reverse("dashboard:promote", args=[MODEL, version.number, "int8-dynamic"]) + "?alias=..%2Fprod"
    assert client.get(bad).status_code == 404


# --- notes, tags and source --------------------------------------------------------------------


@pytest.mark.slow
def test_notes_tags_and_a_source_link_are_saved_from_the_version_page_and_never_fetched(
        quality_mlp: SampleModel, media_root: Path) -> None:
    """B5: a version's source is shown as given (a URL as a link with rel="noopener noreferrer
    nofollow"), never fetched; tags are short slugs (a bad one is refused with the reason and
    nothing changes); notes are shown escaped."""
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.team_version(maintainer, quality_mlp)
    client = _client(maintainer)
    url = reverse("dashboard:version-notes", args=[MODEL, version.number])
    source = "http://169.254.169.254/latest/meta-data/"
    saved = client.post(url, {"notes": "<b>baseline</b> from the Q3 export", "tags": "Baseline, q3, q3",
                              "source": source}, follow=True).content.decode()
    version.refresh_from_db()
    assert (version.tags, version.source) == (["baseline", "q3"], source)
    assert f'<a href="{source}" rel="noopener noreferrer nofollow"' in saved
    assert "&lt;b&gt;baseline&lt;/b&gt;" in saved
    refused = client.post(url, {"notes": "", "tags": "not a slug!", "source": ""}, follow=True).content.decode()
    assert "is not a short slug" in refused
    version.refresh_from_db()
    assert version.tags == ["baseline", "q3"] and version.source == source
    viewer = _client(factories.staff_user("vic"))
    assert viewer.post(url, {"notes": "x", "tags": "", "source": ""}).status_code == 403
    assert ModelVersion.objects.get().notes == "<b>baseline</b> from the Q3 export"


@pytest.mark.slow
def test_the_api_sets_notes_tags_and_source_and_refuses_bad_ones_with_a_json_reason(
        api: Any, maintainer: Any, quality_mlp: SampleModel, media_root: Path) -> None:
    """B3: the annotations action sets only notes, tags and source, through the same service as the
    page; a forged status or hash, a bad tag, an over-long source or a wrong type is a 400 naming
    it, and nothing changes."""
    version = factories.version(maintainer, quality_mlp)
    url = f"/api/v1/models/mlp/versions/{version.number}/annotations"
    answer = api.post(url, {"tags": ["prod-candidate"], "source": "exported from notebook 12"}, format="json")
    assert answer.status_code == 200, answer.content
    assert (answer.json()["tags"], answer.json()["source"]) == (["prod-candidate"], "exported from notebook 12")
    for body, word in (({"tags": ["UPPER CASE!"]}, "tags"), ({"source": "x" * 501}, "source"),
                       ({"tags": "baseline"}, "tags"), ({"notes": "ok", "status": "FAILED", "sha256": "0" * 64},
                                                        "sha256, status")):
        refused = api.post(url, body, format="json")
        assert refused.status_code == 400 and word in json.dumps(refused.json())
    version.refresh_from_db()
    assert (version.status, version.tags, version.notes) == (ModelVersion.Status.READY, ["prod-candidate"], "")
    assert api.get(f"/api/v1/models/mlp/versions/{version.number}").json()["tags"] == ["prod-candidate"]


# --- per-variant page and the chosen comparison ----------------------------------------------


@pytest.mark.slow
def test_the_variant_page_shows_lineage_every_judgment_bundle_and_serving_counters(
        quality_mlp: SampleModel, media_root: Path) -> None:
    """B2: a variant's page lists its lineage, every run that judged it (profile, statistic, batch,
    fingerprint), its bundle and what serving counted on this node (or that it cannot say); another
    team's user gets a 404."""
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    variant = version.variants.get(name="int8-dynamic")
    again = factories.team_benchmark(variant, maintainer, factories.team_profile())
    url = reverse("dashboard:variant", args=[MODEL, version.number, "int8-dynamic"])
    response = _client(maintainer).get(url)
    page = response.content.decode()
    lineage = page.split('id="variant-lineage"')[1].split("</ol>")[0]
    assert lineage.index("original") < lineage.index("int8-dynamic")
    judgments = page.split('id="judgments"')[1].split("</table>")[0]
    assert judgments.count("<tr>") == 3  # the header and two runs
    assert f"job {version.jobs.order_by('pk').first().pk}" in judgments and f"job {again.pk}" in judgments
    assert "quality-mlp-profile" in judgments and variant.results.first().fingerprint_hash in judgments
    assert reverse("dashboard:bundle", args=[MODEL, version.number, "int8-dynamic"]) in page
    counters = page.split('id="serving-counters"')[1]
    if response.context["serving"] is None:
        assert "not available on this node" in counters
    else:
        assert "answered <strong>0</strong> predictions" in counters
    outsider = Client()
    outsider.force_login(factories.user("olga", "maintainer", staff=True))
    assert outsider.get(url).status_code == 404


@pytest.mark.slow
def test_chosen_variants_are_compared_on_chosen_axes_tied_where_the_intervals_say_so(
        quality_mlp: SampleModel, media_root: Path) -> None:
    """B2: two variants picked by ``?pick=`` (a variant, or a version's chosen variant) are set side by
    side on the axes picked, the best of each latency axis named and the other "tied" exactly when
    ``stats.claim`` cannot tell them apart; a pick naming no variant of this model is left out, and
    one variant alone asks for another."""
    maintainer = factories.staff_user("maria", "maintainer")
    version = factories.optimized_team_version(maintainer, quality_mlp)
    client = _client(maintainer)
    url = reverse("dashboard:compare-variants", args=[MODEL])
    response = client.get(url, {"pick": ["1:original", "1:int8-dynamic", "9:nothing"], "axis": ["p50", "size"]})
    table = response.context["table"]
    assert [c["variant"].name for c in table["columns"]] == ["original", "int8-dynamic"]
    assert [row["axis"] for row in table["rows"]] == ["p50", "size"]
    cells = table["rows"][0]["cells"]
    figures = [cell["figure"] for cell in cells]
    best, other = sorted(range(2), key=lambda i: figures[i]["value"])
    ratio = stats.Estimate("p50", figures[other]["value"] / figures[best]["value"],
                           figures[other]["low"] / figures[best]["high"], figures[other]["high"] / figures[best]["low"],
                           min(figures[0]["calls"], figures[1]["calls"]))
    assert cells[best]["standing"] == "best"
    assert cells[other]["standing"] == ("tied" if stats.claim(ratio) == stats.SAME else "slower")
    assert 'id="compare-variants"' in response.content.decode()
    alone = client.get(url, {"pick": ["1:original"]})
    assert alone.context["table"] is None and "Choose at least two variants" in alone.content.decode()
    assert [key for key, _ in choose.choices(model=version.model)] == [
        "1", *(f"1:{name}" for name in version.variants.order_by("created_at", "id").values_list("name", flat=True))]
    by_version = client.get(url, {"pick": ["1", "1:int8-dynamic"]}).context["table"]  # v1 serves its upload
    assert [c["variant"].name for c in by_version["columns"]] == ["original", "int8-dynamic"]


def test_overlapping_intervals_are_tied_and_separate_ones_are_not() -> None:
    """B2: the comparison's tie rule on made-up figures: a variant whose interval overlaps the best's
    within the noise band is "tied", one clearly beyond it "slower"."""
    def figure(value: float, low: float, high: float) -> dict[str, Any]:
        return {"statistic": "p50", "value": value, "low": low, "high": high, "calls": 500, "enough": True,
                "needs": 20}
    columns = [{"latency": {"p50": figure(1.0, 0.95, 1.05)}}, {"latency": {"p50": figure(1.02, 0.97, 1.08)}},
               {"latency": {"p50": figure(2.0, 1.9, 2.1)}}]
    row = choose._latency_row("p50", columns)
    assert [cell["standing"] for cell in row["cells"]] == ["best", "tied", "slower"]


# --- sortable tables ---------------------------------------------------------------------------


def test_the_models_table_sorts_on_the_server_and_says_how_in_aria_sort() -> None:
    """B6: ``?sort=-name`` sorts the models list on the server (links that work without JavaScript)
    and marks the header ``aria-sort="descending"``; a sort key that is no column (a path, say) is
    ignored, never an error."""
    maintainer = factories.staff_user("maria", "maintainer")
    for name in ("alpha-model", "zeta-model", "mid-model"):
        factories.model(maintainer, name, team=factories.team())
    client = _client(maintainer)
    page = client.get("/dashboard/", {"sort": "-name"}).content.decode()
    assert page.index("zeta-model") < page.index("mid-model") < page.index("alpha-model")
    header = page.split('id="models"')[1].split("</thead>")[0]
    assert 'aria-sort="descending"><a href="?sort=name"' in header
    ascending = client.get("/dashboard/", {"sort": "name"}).content.decode()
    assert ascending.index("alpha-model") < ascending.index("mid-model") < ascending.index("zeta-model")
    hostile = client.get("/dashboard/", {"sort": "../../etc/passwd"})
    assert hostile.status_code == 200 and "aria-sort" not in hostile.content.decode().split("</thead>")[0]
