"""Django admin: register models, upload versions and datasets, watch jobs, promote and roll back.

Every change goes through ``modelhub.services``; a refused request becomes a form error or an
error message, never a half-saved row. Promotion and rollback ask for a reason on the dashboard's
pages (``modelhub.dashboard``), where the gate's decision and the signature diff are shown first.
Governing profiles are set through ``services.governing_profile_set`` (audited; a change needs a
reason); jobs and benchmarks started here run under the model's governing profile.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html

from modelhub import gate, jobs, regressions, roles, selectors, services
from modelhub.admin_display import ReadableFieldsMixin
from modelhub.admin_forms import DatasetUploadForm, GoverningProfileForm, VersionUploadForm
from modelhub.dashboard import numbers
from modelhub.errors import ServiceError
from modelhub.models import (
    BenchmarkResult,
    Dataset,
    Deployment,
    GoverningProfile,
    GoverningProfileChange,
    ModelVersion,
    OptimizationJob,
    PromotionEvent,
    ReadinessProfile,
    RegisteredModel,
    Regression,
    Variant,
)

admin.site.site_header = "modelhub"
admin.site.site_title = "modelhub"
admin.site.index_title = "Registry administration"
admin.site.site_url = "/dashboard/"  # "View site": the dashboard (the root answers the serving plane's 404)


class ReadOnlyAdmin(ReadableFieldsMixin, admin.ModelAdmin):
    """Rows written only by services: visible (numbers with units, JSON as tables), never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


class ServiceFormAdmin(ReadableFieldsMixin, admin.ModelAdmin):
    """Admin whose add form is a ServiceForm: saving does nothing more; stored rows read formatted."""

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        form.request = request
        return form

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if obj.pk is None:
            obj.save()


def _report(request: HttpRequest, action: Any, objects: QuerySet, done: str) -> None:
    for obj in objects:
        try:
            action(obj)
        except ServiceError as exc:
            messages.error(request, f"{obj}: {exc.message}")
        else:
            messages.success(request, f"{obj}: {done}")


def _dashboard_link(url: str, text: str) -> str:
    return format_html('<a href="{}">{}</a>', url, text)


class VisibleChoicesMixin:
    """Foreign keys to models, versions and variants offer only rows the user may see."""

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        visible = selectors.model_visible_to(request.user)
        if db_field.related_model is RegisteredModel:
            kwargs["queryset"] = visible
        elif db_field.related_model is ModelVersion:
            kwargs["queryset"] = ModelVersion.objects.filter(model__in=visible, status=ModelVersion.Status.READY)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ["name", "task", "owner", "production", "governed_by", "created_at", "dashboard"]
    search_fields = ["name", "description"]
    actions = ["roll_back_production"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return selectors.model_visible_to(request.user)

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["owner"]

    def save_model(self, request: HttpRequest, obj: RegisteredModel, form: Any, change: bool) -> None:
        if change:
            obj.save()
            return
        created = services.model_create(name=obj.name, owner=request.user, description=obj.description,
                                        task=obj.task, team=obj.team)
        obj.pk = created.pk

    def response_add(self, request: HttpRequest, obj: RegisteredModel, post_url_continue: Any = None) -> HttpResponse:
        messages.success(request, f"Model {obj.name} registered. Upload its first version.")
        return redirect("dashboard:model", name=obj.name)

    @admin.display(description="Dashboard")
    def dashboard(self, obj: RegisteredModel) -> str:
        return _dashboard_link(reverse("dashboard:model", args=[obj.name]), "versions, history")

    @admin.display(description="Production")
    def production(self, obj: RegisteredModel) -> str:
        variant = selectors.deployment_variant(model=obj)
        return variant.label if variant else "—"

    @admin.display(description="Production governed by")
    def governed_by(self, obj: RegisteredModel) -> str:
        profile = gate.governing_profile(model=obj)
        return profile.name if profile else "—"

    @admin.action(description="Roll back production (asks for a reason)")
    def roll_back_production(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect | None:
        if queryset.count() != 1:
            messages.error(request, "Choose one model to roll back.")
            return None
        return redirect(reverse("dashboard:model", args=[queryset.get().name]) + "#production")


@admin.register(ModelVersion)
class ModelVersionAdmin(VisibleChoicesMixin, ServiceFormAdmin):
    list_display = ["__str__", "format", "status", "status_reason", "size_bytes", "created_by", "created_at",
                    "dashboard"]
    list_filter = ["status", "format"]
    actions = ["optimize_default_plan"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(model__in=selectors.model_visible_to(request.user))

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = VersionUploadForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return self.with_formatted(request, obj, [f.name for f in ModelVersion._meta.fields])

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # The admin wraps a POST in one transaction; the upload service commits the version itself
        # and queues its inspection on commit, which inside that transaction would wait for the end
        # of the request: too late to name a refused file or to add the datasets to a ready version.
        if object_id is None and request.method == "POST":
            return self._changeform_view(request, object_id, form_url, extra_context)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def response_add(self, request: HttpRequest, obj: ModelVersion, post_url_continue: Any = None) -> HttpResponse:
        if obj.status == ModelVersion.Status.READY:
            messages.success(request, f"{obj} is ready. Choose a readiness profile and optimize it.")
        else:
            messages.warning(request, f"{obj} is still being inspected; this page shows the outcome when you reload it.")
        return redirect("dashboard:version", name=obj.model.name, number=obj.number)

    @admin.display(description="Dashboard")
    def dashboard(self, obj: ModelVersion) -> str:
        return _dashboard_link(reverse("dashboard:version", args=[obj.model.name, obj.number]), "variants, charts")

    @admin.action(description="Optimize with the default plan (under the governing profile)")
    def optimize_default_plan(self, request: HttpRequest, queryset: QuerySet) -> None:
        _report(request, lambda v: services.optimization_request(
            version=v, user=request.user, profile=gate.governing_profile(model=v.model)), queryset,
                "optimization queued")


@admin.register(Dataset)
class DatasetAdmin(VisibleChoicesMixin, ServiceFormAdmin):
    list_display = ["__str__", "purpose", "sample_count", "has_labels", "size_bytes", "created_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(version__model__in=selectors.model_visible_to(request.user))

    def response_add(self, request: HttpRequest, obj: Dataset, post_url_continue: Any = None) -> HttpResponse:
        messages.success(request, f"{obj} added.")
        return redirect("dashboard:version", name=obj.version.model.name, number=obj.version.number)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = DatasetUploadForm
        return super().get_form(request, obj, change, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ReadinessProfile)
class ReadinessProfileAdmin(ReadableFieldsMixin, admin.ModelAdmin):
    list_display = ["name", "statistic", "target", "max_size_mb", "max_p95_ms", "max_p99_ms", "batch_size",
                    "max_accuracy_drop", "min_speedup", "governs_models"]
    list_filter = ["statistic", "target"]

    @admin.display(description="Governs")
    def governs_models(self, obj: ReadinessProfile) -> str:
        return ", ".join(f"{row.model.name}@{row.alias}" for row in obj.governs.select_related("model")) or "—"


def _is_role_holder(request: HttpRequest) -> bool:
    return any(roles.has_role(request.user, role) for role in roles.ROLES)


@admin.register(GoverningProfile)
class GoverningProfileAdmin(VisibleChoicesMixin, ServiceFormAdmin):
    """The profile that governs each alias: nothing is promoted to it without a passing judgment
    under it (unless forced). Maintainers set it; every change is audited with its reason."""

    form = GoverningProfileForm
    list_display = ["model", "alias", "profile", "statistic", "set_by", "set_at"]
    list_filter = ["alias", "profile", "model"]
    list_select_related = ["model", "profile", "set_by"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(model__in=selectors.model_visible_to(request.user))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["model", "alias"] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """The form's service call already saved (and audited) the row."""

    @admin.display(description="Ranks by")
    def statistic(self, obj: GoverningProfile) -> str:
        return obj.profile.statistic

    # The services decide who may set a governing profile (maintainers); the admin follows the roles.
    def has_module_permission(self, request: HttpRequest) -> bool:
        return _is_role_holder(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_role_holder(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return roles.has_role(request.user, roles.MAINTAINER)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return roles.has_role(request.user, roles.MAINTAINER)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an alias without a governing profile would go unaudited; change it instead


@admin.register(GoverningProfileChange)
class GoverningProfileChangeAdmin(ReadOnlyAdmin):
    """The audit of governing profiles: who changed which alias from which profile to which, and why."""

    list_display = ["model", "alias", "from_profile", "to_profile", "by", "at", "reason"]
    list_filter = ["alias"]
    list_select_related = ["model", "by"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(model__in=selectors.model_visible_to(request.user))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _is_role_holder(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_role_holder(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the audit is kept


@admin.register(Variant)
class VariantAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "pass_name", "parent", "status", "size_bytes", "created_at"]
    list_filter = ["status", "pass_name"]
    actions = ["promote", "benchmark"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(version__model__in=selectors.model_visible_to(request.user))

    @admin.action(description="Promote to production (confirmation page)")
    def promote(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect | None:
        if not roles.has_role(request.user, roles.APPROVER):
            messages.error(request, "You need the approver role to promote.")
            return None
        if queryset.count() != 1:
            messages.error(request, "Choose one variant to promote.")
            return None
        variant = queryset.select_related("version__model").get()
        return redirect("dashboard:promote", name=variant.version.model.name, number=variant.version.number,
                        variant=variant.name)

    @admin.action(description="Benchmark again (under the governing profile)")
    def benchmark(self, request: HttpRequest, queryset: QuerySet) -> None:
        _report(request, lambda v: services.benchmark_request(
            variant=v, user=request.user, profile=gate.governing_profile(model=v.version.model)), queryset,
                "benchmark queued")


@admin.register(OptimizationJob)
class OptimizationJobAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "status", "progress", "current_step", "attempts", "created_at", "finished_at",
                    "live"]
    list_filter = ["status", "kind"]
    actions = ["cancel"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(version__model__in=selectors.model_visible_to(request.user))

    @admin.display(description="Progress page")
    def live(self, obj: OptimizationJob) -> str:
        return _dashboard_link(reverse("dashboard:job", args=[obj.pk]), "watch")

    @admin.action(description="Cancel")
    def cancel(self, request: HttpRequest, queryset: QuerySet) -> None:
        _report(request, lambda j: jobs.job_cancel(job=j, user=request.user), queryset, "cancel requested")


@admin.register(BenchmarkResult)
class BenchmarkResultAdmin(ReadOnlyAdmin):
    # Statistic and batch, throughput and its batch share a column: one row fits 1440 px.
    list_display = ["variant", "kind", "job_number", "profile", "ranked_by", "p50_ms", "p95_ms", "p99_ms",
                    "throughput_at", "peak_memory_mb", "verdict_word", "created_at"]
    list_filter = ["kind", "passed", "statistic", "pending"]
    list_select_related = ["variant__version__model", "job", "profile"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(variant__version__model__in=selectors.model_visible_to(request.user))

    @admin.display(description="Job", ordering="job")
    def job_number(self, obj: BenchmarkResult) -> str:
        """The job by its number: the full name (kind, version, status) would widen every row."""
        return f"job {obj.job_id}" if obj.job_id else "—"

    @admin.display(description="Ranked by", ordering="statistic")
    def ranked_by(self, obj: BenchmarkResult) -> str:
        """The statistic the run ranks by and the batch size it was read at."""
        return f"{obj.statistic} at batch {obj.batch_size}"

    @admin.display(description="Throughput", ordering="throughput")
    def throughput_at(self, obj: BenchmarkResult) -> str:
        """Samples per second, with the batch they were measured at when it is not the ranked one."""
        if obj.throughput is None:
            return "—"
        other = obj.throughput_batch and obj.throughput_batch != obj.batch_size
        return numbers.throughput(obj.throughput) + (f" at batch {obj.throughput_batch}" if other else "")

    @admin.display(description="Verdict", ordering="passed")
    def verdict_word(self, obj: BenchmarkResult) -> str:
        return "not judged" if obj.passed is None else "passes" if obj.passed else "fails"


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = ["model", "alias", "variant", "updated_at"]


@admin.register(PromotionEvent)
class PromotionEventAdmin(ReadOnlyAdmin):
    list_display = ["model", "alias", "kind", "from_variant", "to_variant", "by", "forced", "profile_name",
                    "judgment_job", "reason", "at"]
    list_filter = ["kind", "forced"]

    @admin.display(description="Gate opened by")
    def judgment_job(self, obj: PromotionEvent) -> str:
        if obj.judgment_id is None:
            return "forced" if obj.forced else "—"
        return f"job {obj.judgment.job_id}" if obj.judgment and obj.judgment.job_id else f"result {obj.judgment_id}"


@admin.register(Regression)
class RegressionAdmin(ReadOnlyAdmin):
    """Nightly regressions, open ones first; "acknowledge" marks them seen (they leave the open gauge)."""

    list_display = ["model_name", "variant", "metric", "night", "last_night", "nights", "baseline_ms", "tonight_ms",
                    "change", "summary", "acknowledged", "acknowledged_by", "acknowledged_at"]
    list_filter = ["acknowledged", "metric", "night"]
    list_select_related = ["variant__version__model", "acknowledged_by"]
    actions = ["acknowledge"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(variant__version__model__in=selectors.model_visible_to(request.user))

    @admin.display(description="Model", ordering="variant__version__model__name")
    def model_name(self, obj: Regression) -> str:
        return obj.variant.version.model.name

    @admin.display(description="Baseline p95", ordering="baseline")
    def baseline_ms(self, obj: Regression) -> str:
        return numbers.milliseconds(obj.baseline)

    @admin.display(description="Tonight p95", ordering="value")
    def tonight_ms(self, obj: Regression) -> str:
        return numbers.milliseconds(obj.value)

    @admin.display(description="Change", ordering="ratio")
    def change(self, obj: Regression) -> str:
        return f"{(obj.ratio - 1) * 100:+.0f} %" if obj.ratio is not None else "—"

    @admin.display(description="Why")
    def summary(self, obj: Regression) -> str:
        return "; ".join(obj.reasons)

    @admin.action(description="Acknowledge (seen; stop counting it as open)")
    def acknowledge(self, request: HttpRequest, queryset: QuerySet) -> None:
        _report(request, lambda r: regressions.regression_acknowledge(regression=r, user=request.user), queryset,
                "acknowledged")
