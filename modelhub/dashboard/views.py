"""Dashboard pages: each view validates a form or its URL and calls one service or selector.

Every page needs a staff login (the admin's); what a page offers follows the user's role, and the
services refuse the rest (a refusal is a 403 page, a refused request a form error).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from modelhub import bundles, gate, jobs, selectors, services
from modelhub.dashboard import forms, pages
from modelhub.dashboard.pages import choose
from modelhub.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from modelhub.models import ModelVersion, OptimizationJob

# A request the services refuse for the state it finds: shown on the page (role and visibility
# refusals become 403 and 404 pages instead).
REFUSED = (Invalid, Conflict, Unavailable)
ALIAS_MAX_LENGTH = 50  # Deployment.alias and GoverningProfile.alias are slugs of at most 50 characters


def dashboard_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Staff login required (else the login page); NotFound becomes 404 and Forbidden 403."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from None
        except Forbidden as exc:
            raise PermissionDenied(exc.message) from None

    return staff_member_required(wrapped)


def _page(request: HttpRequest, template: str, title: str, status: int = 200, **context: Any) -> HttpResponse:
    context = {**admin.site.each_context(request), "title": title, **pages.role_flags(request.user), **context}
    return render(request, f"dashboard/{template}", context, status=status)


def _version(request: HttpRequest, name: str, number: int) -> ModelVersion:
    return selectors.version_get(model=selectors.model_get(user=request.user, name=name), number=number)


def _safe(charts: dict[str, str]) -> dict[str, str]:
    # dashboard.svg escapes every text it draws; its markup goes into the page as it is.
    return {key: mark_safe(value) for key, value in charts.items()}


# --- models ----------------------------------------------------------------------------------


@dashboard_view
@require_GET
def models_list(request: HttpRequest) -> HttpResponse:
    """Every visible model: production variant, status, last benchmark, nightly trend, serving."""
    rows, headers = pages.sort_rows(pages.model_rows(user=request.user), pages.tables.MODEL_COLUMNS,
                                    request.GET.get("sort", ""))
    for row in rows:
        row["sparkline"] = mark_safe(row["sparkline"])  # drawn and escaped by dashboard.svg
    return _page(request, "models.html", "Models", rows=rows, headers=headers,
                 add_model_url=reverse("admin:modelhub_registeredmodel_add"))


@dashboard_view
@require_GET
def model_detail(request: HttpRequest, name: str) -> HttpResponse:
    """A model's versions, production variant with its own last numbers, governing profiles, the
    rollback to the last known good, and the promotion history."""
    model = selectors.model_get(user=request.user, name=name)
    production = selectors.deployment_variant(model=model)
    versions, headers = pages.sort_rows(pages.version_rows(model=model), pages.tables.VERSION_COLUMNS,
                                        request.GET.get("sort", ""))
    return _page(request, "model.html", model.name, model=model, versions=versions, version_headers=headers,
                 aliases=pages.alias_rows(model=model),
                 production=production, last=pages.production_numbers(production), events=pages.history(model=model),
                 rollback=pages.rollback_plan(model=model), rollback_form=forms.RollbackForm(),
                 governing=pages.governing_rows(model=model),
                 governing_url=reverse("admin:modelhub_governingprofile_changelist") + f"?model__id__exact={model.pk}",
                 upload_url=reverse("admin:modelhub_modelversion_add") + f"?model={model.pk}")


@dashboard_view
@require_GET
def compare(request: HttpRequest, name: str) -> HttpResponse:
    """The versions of a model side by side, and their numbers over time."""
    model = selectors.model_get(user=request.user, name=name)
    data = pages.compare(model=model)
    charts = _safe({key: data.pop(key) for key in ("latency_chart", "size_chart", "nightly_chart")})
    return _page(request, "compare.html", f"Compare versions of {model.name}", model=model, **data, **charts)


@dashboard_view
@require_POST
def rollback(request: HttpRequest, name: str) -> HttpResponse:
    """Go back to the last known good, with a reason (approvers); when no earlier variant passes the
    governing profile, only a forced rollback with a written reason."""
    model = selectors.model_get(user=request.user, name=name)
    form = forms.AliasRollbackForm(request.POST)
    if not form.is_valid():
        messages.error(request, form.error_text())
        return redirect("dashboard:model", name=model.name)
    alias = form.chosen_alias()
    try:
        event = services.deployment_rollback(model=model, by=request.user, reason=form.cleaned_data["reason"],
                                             force=form.cleaned_data["force"], alias=alias)
    except REFUSED as exc:
        messages.error(request, exc.message)
    else:
        forced = " (forced: it does not pass the governing profile)" if event.forced else ""
        where = model.name if alias == "production" else f"{model.name}@{alias}"
        messages.success(request, f"Rolled back: {event.to_variant.label} serves {where} again{forced}.")
    return redirect("dashboard:model", name=model.name)


# --- versions --------------------------------------------------------------------------------


@dashboard_view
@require_GET
def version_detail(request: HttpRequest, name: str, number: int) -> HttpResponse:
    """The variants of one judgment (``?job=N``, default: the latest succeeded job) with their
    numbers, intervals and verdicts; lineage, charts, advice, nightly series, jobs and downloads."""
    version = _version(request, name, number)
    results = pages.version_results(version=version, job_id=_job_id(request))
    measured = results.measured
    governing = gate.governing_profile(model=version.model)
    return _page(
        request, "version.html", f"{version.model.name} v{version.number}", version=version, results=results,
        measured=measured, charts=_safe(pages.charts(results)) if measured else {},
        nightly_charts=[(name, mark_safe(chart)) for name, chart in pages.nightly_charts(version=version)],
        datasets=version.datasets.order_by("purpose"), jobs=version.jobs.all()[:10],
        active_job=version.jobs.filter(status__in=pages.ACTIVE).first(), statistics=pages.STATISTICS,
        quick_form=forms.OptimizeForm(plan=[], initial={"profile": governing}), governing=governing,
        production=selectors.deployment_variant(model=version.model),
        dataset_url=reverse("admin:modelhub_dataset_add") + f"?version={version.pk}",
        advice_rows=pages.advice_rows(version=version, job=results.job, lines=results.advice),
        notes_form=forms.VersionNotesForm(initial={"notes": version.notes, "tags": ", ".join(version.tags or []),
                                                   "source": version.source}),
        source_is_url=pages.is_web_address(version.source),
    )


@dashboard_view
@require_http_methods(["GET", "POST"])
def optimize(request: HttpRequest, name: str, number: int) -> HttpResponse:
    """Choose a profile and the passes of the default plan, then start the job (maintainers)."""
    version = _version(request, name, number)
    governing = gate.governing_profile(model=version.model)
    advised = pages.advised_plan(version=version, data=request.GET)
    default = advised[2] if advised else governing
    profile = forms.chosen_profile(request.POST if request.method == "POST" else request.GET, default=default)
    plan = advised[0] if advised else pages.default_plan(version=version, profile=profile)
    if request.method == "GET":
        form = forms.OptimizeForm(initial={"profile": profile, "custom": True,
                                           **({"steps": advised[1]} if advised else {})}, plan=plan)
        return _page(request, "optimize.html", f"Optimize {version}", version=version, form=form, plan=plan,
                     governing=governing, advised=advised is not None)
    form = forms.OptimizeForm(request.POST, plan=plan)
    if form.is_valid():
        try:
            job = services.optimization_request(version=version, user=request.user,
                                                profile=form.cleaned_data["profile"], plan=form.chosen_plan(),
                                                bench=form.bench_options())
        except REFUSED as exc:
            form.add_error(None, exc.message)
        else:
            return redirect("dashboard:job", job_id=job.pk)
    return _page(request, "optimize.html", f"Optimize {version}", status=400, version=version, form=form, plan=plan,
                 governing=governing, advised=advised is not None)


@dashboard_view
@require_GET
def bundle(request: HttpRequest, name: str, number: int, variant: str) -> HttpResponse | FileResponse:
    """Download a variant's deployment bundle with the session's login."""
    target = pages.variant_visible(user=request.user, name=name, number=number, variant=variant)
    try:
        return bundles.bundle_response(target)
    except REFUSED as exc:
        messages.error(request, exc.message)
        return redirect("dashboard:version", name=name, number=number)


@dashboard_view
@require_http_methods(["GET", "POST"])
def promote(request: HttpRequest, name: str, number: int, variant: str) -> HttpResponse:
    """Confirm a promotion: the gate's decision, the candidate beside what serves now (intervals,
    speed-up, size, metrics, each stamped with its run) and the signature diff; then promote."""
    target = pages.variant_visible(user=request.user, name=name, number=number, variant=variant)
    alias = _alias(request)
    preview = pages.promotion_preview(variant=target, alias=alias)
    failing = not preview["passed"]
    form = forms.PromoteForm(request.POST or None, failing=failing)
    if request.method == "POST" and form.is_valid():
        try:
            services.deployment_promote(model=target.version.model, variant=target, by=request.user,
                                        reason=form.cleaned_data["reason"], force=failing, alias=alias)
        except REFUSED as exc:
            form.add_error(None, exc.message)
        else:
            where = name if alias == "production" else f"{name}@{alias}"
            messages.success(request, f"Promoted: {target.label} now serves {where}.")
            return redirect("dashboard:model", name=name)
    status = 400 if request.method == "POST" else 200
    return _page(request, "promote.html", f"Promote {target.label}", status=status, form=form, failing=failing,
                 aliases=pages.alias_names(model=target.version.model), **preview)


def _alias(request: HttpRequest) -> str:
    """The alias named by ``?alias=`` (production when none); a name that is no slug is a 404."""
    alias = request.GET.get("alias", "") or "production"
    if not services.name_is_valid(alias) or len(alias) > ALIAS_MAX_LENGTH or "." in alias:
        raise Http404("An alias is 1-50 letters, digits, '-' or '_'.")
    return alias


@dashboard_view
@require_POST
def batching(request: HttpRequest, name: str, number: int, variant: str) -> HttpResponse:
    """Turn server-side batching of a variant on (only when its benchmark says it pays) or off."""
    target = pages.variant_visible(user=request.user, name=name, number=number, variant=variant)
    enabled = request.POST.get("enabled") == "1"
    try:
        services.variant_batching_set(variant=target, enabled=enabled, by=request.user)
    except REFUSED as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Server-side batching {'on' if enabled else 'off'} for {target.label}.")
    return redirect("dashboard:promote", name=name, number=number, variant=variant)


def _job_id(request: HttpRequest) -> int | None:
    """The judgment asked for by ``?job=N`` (None: the latest); anything but a job id is a 404."""
    value = request.GET.get("job", "")
    if not value:
        return None
    if not value.isdigit():
        raise Http404("job must be a job id.")
    return int(value)


# --- jobs ------------------------------------------------------------------------------------


@dashboard_view
@require_GET
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    """A job's progress bar and event log, updated in place while it runs."""
    job = selectors.job_get(user=request.user, job_id=job_id)
    return _page(request, "job.html", f"Job {job.pk}", job=job, version=job.version)


@dashboard_view
@require_GET
def job_progress(request: HttpRequest, job_id: int) -> JsonResponse:
    """The job's state as JSON for the job page's poller."""
    job = selectors.job_get(user=request.user, job_id=job_id)
    version = job.version
    return JsonResponse({
        "id": job.pk, "status": job.status, "progress": job.progress, "current_step": job.current_step,
        "events": job.events, "error": job.error, "finished": job.is_finished,
        "cancel_requested": job.cancel_requested,
        "results_url": reverse("dashboard:version", kwargs={"name": version.model.name, "number": version.number})
        + f"?job={job.pk}",
        "best": (job.result or {}).get("best"),
    })


@dashboard_view
@require_POST
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    """Cancel a job: a queued one at once, a running one at its next step (maintainers)."""
    job = selectors.job_get(user=request.user, job_id=job_id)
    try:
        job = jobs.job_cancel(job=job, user=request.user)
    except REFUSED as exc:
        messages.error(request, exc.message)
    else:
        done = job.status == OptimizationJob.Status.CANCELLED
        messages.success(request, "Job cancelled." if done else "Cancel requested: the job stops at its next step.")
    return redirect("dashboard:job", job_id=job.pk)


# --- notes, variants, comparisons ------------------------------------------------------------


@dashboard_view
@require_POST
def version_notes(request: HttpRequest, name: str, number: int) -> HttpResponse:
    """Save a version's notes, tags and source (maintainers); a refused value is shown on the page."""
    version = _version(request, name, number)
    form = forms.VersionNotesForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(m for errors in form.errors.values() for m in errors))
        return redirect("dashboard:version", name=name, number=number)
    try:
        services.version_annotate(version=version, by=request.user, **form.annotations())
    except REFUSED as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Saved the notes, tags and source of v{version.number}.")
    return redirect(reverse("dashboard:version", args=[name, number]) + "#notes")


@dashboard_view
@require_GET
def variant_detail(request: HttpRequest, name: str, number: int, variant: str) -> HttpResponse:
    """One variant: lineage, every judgment, nightly series, bundle and this node's serving counters."""
    target = pages.variant_visible(user=request.user, name=name, number=number, variant=variant)
    data = pages.variant_page(target)
    data["nightly"]["chart"] = mark_safe(data["nightly"]["chart"])  # drawn and escaped by dashboard.svg
    return _page(request, "variant.html", target.label, **data)


@dashboard_view
@require_GET
def compare_variants(request: HttpRequest, name: str) -> HttpResponse:
    """Any two or more variants of a model side by side on the chosen axes (``?pick=N:variant``, ``?axis=``)."""
    model = selectors.model_get(user=request.user, name=name)
    keys, axes = request.GET.getlist("pick"), request.GET.getlist("axis") or choose.DEFAULT_AXES
    variants = choose.picked(model=model, keys=keys)
    table = choose.comparison(variants=variants, axes=axes) if len(variants) >= 2 else None
    return _page(request, "compare_variants.html", f"Compare variants of {model.name}", model=model,
                 choices=choose.choices(model=model), picked=[choose.pick_key(v) for v in variants],
                 axes=[(key, label, key in axes) for key, label in choose.AXES.items()], table=table,
                 too_few=bool(keys) and len(variants) < 2)
