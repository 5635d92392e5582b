"""This process's routing table: routes by (model, selector), rebuilt when the routing generation
moves, with a new primary warmed before any request is routed to it.

Routes live in Redis too, stamped with a generation counter that ``cache.bump_generation``
increments whenever an alias moves (the serving app hears ``modelhub.signals.routing_changed``);
each process checks the counter at most every ``MODELHUB_SERVING_ROUTING_CHECK_MS`` and rebuilds
its routes when it moved, so a promotion reaches every web process within a second, without a
restart. Without Redis the generation is read from the database (the newest promotion event)
instead. When the database is down, routes already known keep serving.

Warming. When a rebuilt route's primary differs from the one this table routed to before, the
request that rebuilt it loads the new primary and runs a synthetic batch through it
(``runtime.warm``) before the route is installed; meanwhile other requests keep the old route.
A primary that cannot be warmed has its breaker opened and is counted
(``modelhub_serving_warm_failures_total``) and logged: the new route is installed all the same,
so the rest of its chain answers until the breaker lets the primary be tried again. The clock is
``routing_table.clock`` (tests replace it).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Max

from modelhub.errors import ServiceError
from modelhub.models import Deployment, PromotionEvent
from predictions import cache, metrics, runtime
from predictions.breaker import BREAKER
from predictions.refusals import Unavailable
from predictions.routes import Route, build_route

log = logging.getLogger(__name__)

clock = time.monotonic
NEGATIVE_TTL_S = 2.0  # a route that does not exist is asked again after this long
MAX_ROUTES = 10_000  # per process; beyond it the table starts over (e.g. a client trying every ?version=)


@dataclass(frozen=True)
class _Entry:
    """A route (or the refusal to have one) as this table knows it, until when, under which generation."""

    expires: float
    found: Route | ServiceError
    generation: Any


class RoutingTable:
    """This process's copy of the routes, rebuilt when the generation moves or a route expires."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], _Entry] = {}
        self._building: dict[tuple[str, str], threading.Lock] = {}
        self._generation: Any = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every route and the generation, as a process that just started."""
        with self._lock:
            self._routes.clear()
            self._building.clear()
            self._generation, self._checked_at = None, float("-inf")

    def invalidate(self, model_name: str = "") -> None:
        """Rebuild the routes on their next request and read the generation then (a change made in
        this process); the routes known so far answer while the new ones are built and warmed."""
        with self._lock:
            self._routes = {key: dataclasses.replace(entry, expires=float("-inf"))
                            for key, entry in self._routes.items()}
            self._checked_at = float("-inf")

    def route(self, model_name: str, selector: str) -> Route:
        """The route of (model, selector); raises NotFound / Unavailable."""
        self._refresh()
        key = (model_name, selector)
        known = self._routes.get(key)
        if known is not None and self._fresh(known):
            return _give(known.found)
        serving = known.found if known is not None and isinstance(known.found, Route) else None
        building = self._build_lock(key)
        if serving is not None and not building.acquire(blocking=False):
            return serving  # another request builds and warms the new route; the old one answers meanwhile
        if serving is None:
            building.acquire()
        try:
            return self._rebuild(key, serving)
        finally:
            building.release()

    def _refresh(self) -> None:
        now = clock()
        if now - self._checked_at < settings.MODELHUB_SERVING_ROUTING_CHECK_MS / 1000:
            return
        self._checked_at = now
        generation = cache.generation()
        if generation is cache.DOWN:
            try:
                generation = db_generation()
            except DatabaseError:
                return  # neither Redis nor the database: keep serving the routes we know
        self._generation = generation  # routes stamped with another generation are rebuilt

    def _fresh(self, entry: _Entry) -> bool:
        return entry.generation == self._generation and entry.expires > clock()

    def _build_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._lock:
            return self._building.setdefault(key, threading.Lock())

    def _rebuild(self, key: tuple[str, str], serving: Route | None) -> Route:
        """Build the route of ``key`` (once, whoever waited for it), warm a new primary, install it."""
        known = self._routes.get(key)
        if known is not None and self._fresh(known):  # built by the request this one waited for
            return _give(known.found)
        generation, now = self._generation, clock()
        try:
            found: Route | ServiceError = _load(*key, generation)
            expires = now + settings.MODELHUB_SERVING_ROUTE_TTL_S
        except ServiceError as exc:
            found, expires = exc, now + NEGATIVE_TTL_S
        except DatabaseError:
            if known is not None:  # the registry is down: the route we had keeps serving
                return _give(known.found)
            raise Unavailable("The model registry is unavailable; try again shortly.") from None
        if isinstance(found, Route) and serving is not None:
            warm_new_primary(serving, found)
        if generation == self._generation:
            self._install(key, _Entry(expires, found, generation))
        return _give(found)

    def _install(self, key: tuple[str, str], entry: _Entry) -> None:
        with self._lock:
            if len(self._routes) >= MAX_ROUTES and key not in self._routes:
                self._routes.clear()
                self._building.clear()  # a request still building under an old lock only duplicates work
            self._routes[key] = entry


def _give(found: Route | ServiceError) -> Route:
    if isinstance(found, ServiceError):
        raise found
    return found


def _load(model_name: str, selector: str, generation: Any) -> Route:
    """The route from the Redis routing table when it was built under this generation, else from
    the database (and then stored in Redis for the other processes)."""
    shared = generation is not None and not isinstance(generation, tuple)  # a tuple: read from the database
    entry = cache.route_get(model_name, selector) if shared else None
    if isinstance(entry, dict) and entry.get("generation") == generation:
        return Route.from_dict(entry["route"])
    route = build_route(model_name, selector)
    if shared:
        cache.route_set(model_name, selector, {"generation": generation, "route": route.to_dict()},
                        settings.MODELHUB_SERVING_ROUTE_TTL_S)
    return route


def db_generation() -> Any:
    """The routing generation as the database tells it (while Redis is unavailable)."""
    newest = PromotionEvent.objects.aggregate(n=Max("id"))["n"]
    updated = Deployment.objects.aggregate(t=Max("updated_at"))["t"]
    return ("db", newest, updated.isoformat() if updated else None)


def warm_new_primary(old: Route, new: Route) -> None:
    """Load the new route's primary and run a synthetic batch through it, when it is not the
    primary ``old`` had and is not loaded yet. A failure opens its breaker (the rest of the chain
    answers) and is counted and logged; it never stops the route from being installed."""
    primary = new.chain[0]
    if primary.sha256 == old.chain[0].sha256 or runtime.RUNTIMES.loaded(primary.sha256) \
            or not BREAKER.allows(primary.sha256):
        return
    try:
        runtime.warm(primary)
    except runtime.LoadError as exc:
        BREAKER.failure(primary.sha256, at_once=True)
        metrics.WARM_FAILURES.labels(new.model, exc.reason).inc()
        log.warning("routing of %s (%s): the new primary %s cannot serve (%s); the rest of its chain answers",
                    new.model, new.selector, primary.label, exc)
        return
    log.info("routing of %s (%s): warmed the new primary %s", new.model, new.selector, primary.label)


TABLE = RoutingTable()
cache.on_bump(TABLE.invalidate)


def route(model_name: str, selector: str) -> Route:
    """The route of (model, selector) in this process's table."""
    return TABLE.route(model_name, selector)
