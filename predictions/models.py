"""Serving data: predict tokens (who may call which models, how often) and per-model serving options.

State changes go through ``predictions.services`` (tokens, serving options); these classes hold
data only.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models

from modelhub.models import RegisteredModel


class PredictToken(models.Model):
    """A bearer token that may call the predict endpoint of the models it names, and nothing else.

    Only the SHA-256 of the token is stored; the token itself is shown once, when it is made.
    """

    name = models.CharField(max_length=100, help_text="What the token is for (a service, a team).")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False, help_text="First characters, to recognise it.")
    allowed_models = models.ManyToManyField(RegisteredModel, related_name="predict_tokens", verbose_name="models",
                                            help_text="The models this token may call.")
    rate_limit_per_minute = models.PositiveIntegerField(default=600, help_text="0: unlimited.")
    revoked = models.BooleanField(default=False)
    expires_at = models.DateTimeField(null=True, blank=True,
                                      help_text="Refused from then on; empty: never expires (only when asked for).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…{' revoked' if self.revoked else ''})"

    def expired(self, now: datetime) -> bool:
        """Whether the token is past its expiry at ``now``."""
        return self.expires_at is not None and self.expires_at <= now


class ServingConfig(models.Model):
    """Serving options of one model; a model without a row gets the defaults (no response cache)."""

    model = models.OneToOneField(RegisteredModel, on_delete=models.CASCADE, related_name="serving_config")
    cache_responses = models.BooleanField(
        default=False, help_text="Answer repeated inputs from the Redis response cache (deterministic models only).")
    cache_ttl_s = models.PositiveIntegerField(default=300, help_text="Seconds a cached answer is kept.")

    def __str__(self) -> str:
        return f"serving of {self.model.name}"
