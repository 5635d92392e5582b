"""Readiness of the production routes: can each production model's chain load a variant here?

Also the warm-up of a serving process: ``warm_production`` loads and runs each production chain's
first loadable link when the serving application is made, so that no client's first request
pays for loading a session. It is bounded in time and never fails the process.
"""

from __future__ import annotations

import logging
import time

from modelhub.errors import ServiceError
from modelhub.models import Deployment
from predictions import runtime
from predictions.breaker import BREAKER
from predictions.routes import Route, selector_for
from predictions.routing_table import route

log = logging.getLogger(__name__)


# Warming stops starting new loads after this long: gunicorn kills a worker that has not booted
# within its timeout (30 s by default), and a slow start must not become a crash loop.
WARM_BUDGET_S = 10.0


def production_status() -> dict[str, str]:
    """Per model with a production alias: "ok", "fallback: ..." or "error: ..." (loads lazily)."""
    return {name: _production_status(name) for name in _production_models()}


def _production_models() -> list[str]:
    return list(Deployment.objects.filter(alias="production").values_list("model__name", flat=True))


def _production_status(name: str) -> str:
    try:
        found = route(name, selector_for(alias="production"))
    except ServiceError as exc:
        return f"error: {exc.message}"
    return chain_status(found)


def warm_production(budget_s: float = WARM_BUDGET_S) -> dict[str, str]:
    """Warm the production chains (``production_status``) until ``budget_s`` is spent; never raises.

    A database that cannot be asked, or a model that cannot load, is logged and left for the
    first request (which falls back or refuses as it would have).
    """
    deadline = time.monotonic() + budget_s
    status: dict[str, str] = {}
    try:
        names = _production_models()
    except Exception as exc:  # noqa: BLE001 - a serving process starts even when nothing can be warmed
        log.warning("warm-up skipped: %s", exc.__class__.__name__)
        return status
    for name in names:
        if time.monotonic() > deadline:
            log.warning("warm-up stopped after %.0f s; %s and later models load on first use", budget_s, name)
            break
        try:
            status[name] = _production_status(name)
        except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others' warm-up
            status[name] = f"error: {exc.__class__.__name__}"
    return status


def chain_status(found: Route) -> str:
    """The first link of the chain that is loaded or loads now, said as "ok" or "fallback: ..."."""
    for index, link in enumerate(found.chain):
        if not BREAKER.allows(link.sha256):
            continue
        try:
            if not runtime.RUNTIMES.loaded(link.sha256):
                runtime.warm(link)
        except runtime.LoadError as exc:
            BREAKER.failure(link.sha256, at_once=True)
            log.warning("readiness: %s", exc)
            continue
        return "ok" if index == 0 else f"fallback: {link.label} serves ({found.chain[0].label} cannot load)"
    return "error: no variant of the chain can load"
