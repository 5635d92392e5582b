"""The serving plane's writes: predict tokens (made, revoked) and per-model serving options.

Each write also tells the serving processes what changed: a revoked token is forgotten by this
process at once (the others within ``MODELHUB_SERVING_AUTH_CACHE_S``), and new serving options
move the routing generation so every process rebuilds its route.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from modelhub import roles, selectors
from modelhub.errors import Forbidden, Invalid
from predictions import auth, cache
from predictions.models import PredictToken, ServingConfig


def token_create(*, name: str, models: list[Any], by: Any, rate_limit_per_minute: int = 600,
                 expires_at: datetime | None = None, never_expires: bool = False) -> tuple[PredictToken, str]:
    """Make a predict token for models the maker (a maintainer) can see; returns (row, the token).

    The token is returned once; only its SHA-256 is stored. It expires at ``expires_at``, by default
    ``MODELHUB_TOKEN_TTL_DAYS`` from now; only ``never_expires=True`` makes one that never does.
    """
    if never_expires:
        expires_at = None
    elif expires_at is None:
        expires_at = timezone.now() + timedelta(days=settings.MODELHUB_TOKEN_TTL_DAYS)
    elif expires_at <= timezone.now():
        raise Invalid("A predict token's expiry must be in the future.", field="expires_at")
    if not roles.has_role(by, roles.MAINTAINER):
        raise Forbidden("You need the maintainer role to make predict tokens.")
    visible = set(selectors.model_visible_to(by).values_list("pk", flat=True))
    hidden = [m.name for m in models if m.pk not in visible]
    if hidden or not models:
        raise Invalid("A predict token needs at least one model, all visible to you"
                      + (f"; not: {', '.join(hidden)}." if hidden else "."))
    raw = auth.TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = PredictToken.objects.create(name=name, token_hash=auth.hash_token(raw), prefix=raw[:10],
                                        rate_limit_per_minute=rate_limit_per_minute, created_by=by,
                                        expires_at=expires_at)
    token.allowed_models.set(models)
    return token, raw


def token_revoke(*, token: PredictToken) -> None:
    """Revoke a token; every process stops accepting it within ``MODELHUB_SERVING_AUTH_CACHE_S``."""
    PredictToken.objects.filter(pk=token.pk).update(revoked=True)
    auth.forget_callers()


def config_set(*, model: Any, cache_responses: bool, cache_ttl_s: int = 300) -> ServingConfig:
    """Turn the response cache of a model on or off; every process picks it up with the routing."""
    config, _ = ServingConfig.objects.update_or_create(
        model=model, defaults={"cache_responses": cache_responses, "cache_ttl_s": cache_ttl_s})
    cache.bump_generation(model.name)
    return config
