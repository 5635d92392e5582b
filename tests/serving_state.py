"""A serving process's in-memory state, made fresh around a test: routes, breaker, loaded runtimes,
the Redis back-off and the remembered callers, under a key prefix of the test's own in Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any


def fresh_serving_state(settings: Any, *, clear_default_cache: bool = False) -> Iterator[None]:
    """Reset before and after the test (a fixture body: ``yield from fresh_serving_state(settings)``);
    ``clear_default_cache`` also empties Django's default cache (login failure counters live there)."""
    from django.core.cache import cache as default_cache

    from predictions import auth, breaker, cache, routing_table, runtime

    settings.MODELHUB_SERVING_KEY_PREFIX = f"test-{uuid.uuid4().hex[:12]}"
    settings.MODELHUB_SERVING_AUTH_CACHE_S = 0

    def reset() -> None:
        routing_table.TABLE.clear()
        breaker.BREAKER.clear()
        runtime.RUNTIMES.clear()
        cache.reset()
        auth.forget()
        if clear_default_cache:
            default_cache.clear()

    reset()
    yield
    reset()
