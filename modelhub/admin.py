"""Django admin: register models, upload versions and datasets, watch jobs, promote and roll back.

Every change goes through ``modelhub.services``; a refused request becomes a form error or an
error message, never a half-saved row.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from modelhub import roles, selectors, services
from modelhub.errors import ServiceError
from modelhub.models import (
    BenchmarkResult,
    Dataset,
    Deployment,
    ModelVersion,
    OptimizationJob,
    PromotionEvent,
    ReadinessProfile,
    RegisteredModel,
    Variant,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by services: visible, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


class ServiceForm(forms.ModelForm):
    """A form whose ``clean`` calls a service; the created object becomes the form's instance."""

    request: HttpRequest

    def run_service(self) -> Any:
        raise ValueError("subclasses call their service here")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not self.errors:
            try:
                self.instance = self.run_service()
            except ServiceError as exc:
                raise forms.ValidationError(exc.message) from None
        return cleaned

    def _post_clean(self) -> None:
        """The service already validated and saved the row."""


class ServiceFormAdmin(admin.ModelAdmin):
    """Admin whose add form is a ServiceForm: saving does nothing more."""

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        form.request = request
        return form

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if obj.pk is None:
            obj.save()


class VersionUploadForm(ServiceForm):
    file = forms.FileField(help_text="ONNX (.onnx), a zip of an ONNX model with its external data, or TorchScript.")

    class Meta:
        model = ModelVersion
        fields = ["model"]

    def run_service(self) -> ModelVersion:
        upload = self.cleaned_data["file"]
        version, _ = services.version_upload(model=self.cleaned_data["model"], stream=upload, filename=upload.name,
                                             user=self.request.user)
        version.refresh_from_db()
        if version.status == ModelVersion.Status.FAILED:
            raise ServiceError(f"The model was refused: {version.status_reason}")
        return version


class DatasetUploadForm(ServiceForm):
    file = forms.FileField(help_text="An .npz file with arrays named after the model inputs, optionally 'labels'.")

    class Meta:
        model = Dataset
        fields = ["version", "purpose"]

    def run_service(self) -> Dataset:
        upload = self.cleaned_data["file"]
        return services.dataset_upload(version=self.cleaned_data["version"], purpose=self.cleaned_data["purpose"],
                                       stream=upload, filename=upload.name, user=self.request.user)


def _report(request: HttpRequest, action: Any, objects: QuerySet, done: str) -> None:
    for obj in objects:
        try:
            action(obj)
        except ServiceError as exc:
            messages.error(request, f"{obj}: {exc.message}")
        else:
            messages.success(request, f"{obj}: {done}")


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ["name", "task", "owner", "production", "created_at"]
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

    @admin.display(description="Production")
    def production(self, obj: RegisteredModel) -> str:
        variant = selectors.deployment_variant(model=obj)
        return variant.label if variant else "—"

    @admin.action(description="Roll back production to the previous variant")
    def roll_back_production(self, request: HttpRequest, queryset: QuerySet) -> None:
        _report(request, lambda m: services.deployment_rollback(model=m, by=request.user,
                                                                reason="rolled back from the admin"),
                queryset, "rolled back")


@admin.register(ModelVersion)
class ModelVersionAdmin(ServiceFormAdmin):
    list_display = ["__str__", "format", "status", "status_reason", "size_bytes", "created_by", "created_at"]
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
        return [f.name for f in ModelVersion._meta.fields]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    @admin.action(description="Optimize with the default plan")
    def optimize_default_plan(self, request: HttpRequest, queryset: QuerySet) -> None:
        _report(request, lambda v: services.optimization_request(version=v, user=request.user), queryset,
                "optimization queued")


@admin.register(Dataset)
class DatasetAdmin(ServiceFormAdmin):
    list_display = ["__str__", "purpose", "sample_count", "has_labels", "size_bytes", "created_at"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = DatasetUploadForm
        return super().get_form(request, obj, change, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ReadinessProfile)
class ReadinessProfileAdmin(admin.ModelAdmin):
    list_display = ["name", "target", "max_size_mb", "max_p95_ms", "max_p99_ms", "batch_size", "max_accuracy_drop",
                    "min_speedup"]


@admin.register(Variant)
class VariantAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "pass_name", "parent", "status", "size_bytes", "created_at"]
    list_filter = ["status", "pass_name"]
    actions = ["promote", "benchmark"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(version__model__in=selectors.model_visible_to(request.user))

    @admin.action(description="Promote to production (must pass readiness)")
    def promote(self, request: HttpRequest, queryset: QuerySet) -> None:
        if not roles.has_role(request.user, roles.APPROVER):
            messages.error(request, "You need the approver role to promote.")
            return
        _report(request, lambda v: services.deployment_promote(model=v.version.model, variant=v, by=request.user,
                                                               reason="promoted from the admin"),
                queryset, "promoted to production")

    @admin.action(description="Benchmark again")
    def benchmark(self, request: HttpRequest, queryset: QuerySet) -> None:
        _report(request, lambda v: services.benchmark_request(variant=v, user=request.user), queryset,
                "benchmark queued")


@admin.register(OptimizationJob)
class OptimizationJobAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "status", "progress", "current_step", "attempts", "created_at", "finished_at"]
    list_filter = ["status", "kind"]
    actions = ["cancel"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(version__model__in=selectors.model_visible_to(request.user))

    @admin.action(description="Cancel")
    def cancel(self, request: HttpRequest, queryset: QuerySet) -> None:
        _report(request, lambda j: services.job_cancel(job=j, user=request.user), queryset, "cancel requested")


@admin.register(BenchmarkResult)
class BenchmarkResultAdmin(ReadOnlyAdmin):
    list_display = ["variant", "kind", "batch_size", "p50_ms", "p95_ms", "p99_ms", "throughput", "peak_memory_mb",
                    "passed", "created_at"]
    list_filter = ["kind", "passed"]


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = ["model", "alias", "variant", "updated_at"]


@admin.register(PromotionEvent)
class PromotionEventAdmin(ReadOnlyAdmin):
    list_display = ["model", "alias", "kind", "from_variant", "to_variant", "by", "forced", "reason", "at"]
    list_filter = ["kind", "forced"]
