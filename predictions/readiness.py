"""Readiness of the production routes: can each production model's chain load a variant here?"""

from __future__ import annotations

import logging

from modelhub.errors import ServiceError
from modelhub.models import Deployment
from predictions import runtime
from predictions.breaker import BREAKER
from predictions.routes import Route, selector_for
from predictions.routing_table import route

log = logging.getLogger(__name__)


def production_status() -> dict[str, str]:
    """Per model with a production alias: "ok", "fallback: ..." or "error: ..." (loads lazily)."""
    status = {}
    for name in Deployment.objects.filter(alias="production").values_list("model__name", flat=True):
        try:
            found = route(name, selector_for(alias="production"))
        except ServiceError as exc:
            status[name] = f"error: {exc.message}"
            continue
        status[name] = _chain_status(found)
    return status


def _chain_status(found: Route) -> str:
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
