"""Admin of serving: predict tokens (made through ``services.token_create``, shown once) and per-model options."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from modelhub import selectors
from modelhub.admin import ServiceFormAdmin
from modelhub.admin_forms import ServiceForm
from predictions import cache, services
from predictions.models import PredictToken, ServingConfig


class TokenCreateForm(ServiceForm):
    """Make a predict token through the service (the token is shown once, by the admin below)."""

    class Meta:
        model = PredictToken
        fields = ["name", "allowed_models", "rate_limit_per_minute", "expires_at"]

    never_expires = forms.BooleanField(required=False, help_text="Tick to make a token that never expires.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["expires_at"].help_text = (
            f"Empty: {settings.MODELHUB_TOKEN_TTL_DAYS} days from now (MODELHUB_TOKEN_TTL_DAYS).")

    def run_service(self) -> PredictToken:
        token, self.raw_token = services.token_create(
            name=self.cleaned_data["name"], models=list(self.cleaned_data["allowed_models"]), by=self.request.user,
            rate_limit_per_minute=self.cleaned_data["rate_limit_per_minute"],
            expires_at=self.cleaned_data.get("expires_at"), never_expires=self.cleaned_data.get("never_expires", False))
        return token


@admin.register(PredictToken)
class PredictTokenAdmin(ServiceFormAdmin):
    """Predict tokens: made once through the service, then read-only apart from revoking."""

    list_display = ["name", "prefix", "rate_limit_per_minute", "revoked", "expires_at", "created_by", "created_at"]
    list_filter = ["revoked", "expires_at"]
    search_fields = ["name", "prefix"]
    actions = ["revoke"]
    add_form = TokenCreateForm

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = self.add_form
        form = super().get_form(request, obj, change=change, **kwargs)
        if "allowed_models" in form.base_fields:
            form.base_fields["allowed_models"].queryset = selectors.model_visible_to(request.user)
        return form

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["name", "allowed_models", "prefix", "revoked", "expires_at", "created_by", "created_at"] if obj else []

    def save_model(self, request: HttpRequest, obj: PredictToken, form: Any, change: bool) -> None:
        if change:
            obj.save()
            return
        self.message_user(request, f"Predict token {obj.name}: {form.raw_token} (copy it now: it is not shown "
                          "again).", messages.WARNING)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        if change:  # a new token's models were set by token_create
            super().save_related(request, form, formsets, change)

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[PredictToken]) -> None:
        for token in queryset:
            services.token_revoke(token=token)
        self.message_user(request, f"Revoked {queryset.count()} token(s).")


@admin.register(ServingConfig)
class ServingConfigAdmin(admin.ModelAdmin):
    """Per-model serving options; a change moves the routing generation so every process sees it."""

    list_display = ["model", "cache_responses", "cache_ttl_s"]

    def save_model(self, request: HttpRequest, obj: ServingConfig, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        cache.bump_generation(obj.model.name)
