"""Which variant answers: alias (or version) -> variant -> fallback chain, with a circuit breaker.

A route is the chain of variants that may answer for ``model`` under a selector
(``alias:production``, ``alias:staging`` or ``version:3``): the chosen variant, its READY ONNX
ancestors up to the original (the fp32 parents of a quantized or pruned variant), then — for
alias routes — the variant that served before the last promotion, and a TorchScript original last
(only where the server loads TorchScript). Links whose version takes other inputs are left out.

Routes live in Redis (the routing table) stamped with a generation counter that
``cache.bump_generation`` increments on every promotion; each process checks the counter at most
every ``MODELHUB_SERVING_ROUTING_CHECK_MS`` and rebuilds its routes when it moved, so a promotion
reaches every web process within a second, without a restart. Without Redis the generation is
read from the database (the newest promotion event) instead. When the database is down, routes
already known keep serving.

A load error, a runtime exception or a non-finite output moves a request to the next link; the
breaker skips a variant that keeps failing for ``MODELHUB_SERVING_BREAKER_OPEN_S`` seconds. The
breaker's clock is ``router.clock`` (tests replace it; nothing else is faked).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Max

from modelhub import selectors
from modelhub.errors import NotFound, ServiceError
from modelhub.models import Deployment, PromotionEvent, RegisteredModel, Variant
from predictions import cache, inputs, metrics, runtime
from predictions.runtime import VariantSpec

log = logging.getLogger(__name__)

clock = time.monotonic
NEGATIVE_TTL_S = 2.0  # a route that does not exist is asked again after this long
MAX_ROUTES = 10_000  # per process; beyond it the table starts over (e.g. a client trying every ?version=)


class Unavailable(ServiceError):
    """No link of the chain could answer (503, try again later)."""

    status = 503

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class NonFiniteOutput(ServiceError):
    """Every variant produced NaN or Infinity for this input: refused, never returned."""

    status = 422


class BadModelInput(ServiceError):
    """The runtime refused the input as invalid (a constraint the signature does not state)."""

    status = 400


@dataclass(frozen=True)
class Route:
    """The variants that may answer for (model, selector), best first, and how to serve them."""

    model_id: int
    model: str
    selector: str
    chain: tuple[VariantSpec, ...]
    cache_ttl_s: int = 0  # 0: no response cache

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return self.chain[0].signature.get("inputs", [])

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "model": self.model, "selector": self.selector,
                "chain": [link.to_dict() for link in self.chain], "cache_ttl_s": self.cache_ttl_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Route:
        return cls(model_id=data["model_id"], model=data["model"], selector=data["selector"],
                   chain=tuple(VariantSpec.from_dict(d) for d in data["chain"]), cache_ttl_s=data["cache_ttl_s"])


@dataclass
class Answer:
    """What answered: outputs (arrays, or cached JSON bytes), the variant, cache and fallback flags."""

    outputs: Any
    variant: VariantSpec
    cached: bool = False
    fallback_reason: str | None = None
    failures: list[str] = field(default_factory=list)


def selector_for(*, alias: str | None = None, version: int | None = None) -> str:
    return f"version:{version}" if version is not None else f"alias:{alias or 'production'}"


# --- building routes from the database -----------------------------------------------------------


def _variants() -> Any:
    return Variant.objects.select_related("version__model", "job__profile", "parent")


def _version_variant(model: RegisteredModel, number: int) -> Variant:
    """The variant an approver chose for the version, else its own original (see
    ``selectors.version_chosen_variant``): a maintainer's new job never changes what it serves."""
    version = model.versions.filter(number=number, status="READY").first()
    if version is None:
        raise NotFound(f"Model {model.name} has no READY version {number}.")
    chosen = selectors.version_chosen_variant(version)
    if chosen is None:
        raise NotFound(f"Version {number} of {model.name} has no servable variant.")
    return _variants().get(pk=chosen.pk)


def _previous_production(model: RegisteredModel, alias: str, current: Variant) -> Variant | None:
    """The variant that served ``alias`` before ``current`` was last promoted to it."""
    previous_id = PromotionEvent.objects.filter(model=model, alias=alias, to_variant=current).values_list(
        "from_variant_id", flat=True).first()
    return _variants().filter(pk=previous_id).first() if previous_id else None


def _chain(primary: Variant, previous: Variant | None) -> list[Variant]:
    links = [primary]
    parent = primary.parent
    seen = {primary.pk}
    while parent is not None and parent.pk not in seen:  # lineage is a tree; the guard is cheap
        seen.add(parent.pk)
        links.append(parent)
        parent = _variants().filter(pk=parent.parent_id).first() if parent.parent_id else None
    if previous is not None:
        links.append(previous)
    inputs = primary.version.signature.get("inputs")
    usable, torch_links, shas = [], [], set()
    for link in links:
        if link.status != Variant.Status.READY or link.sha256 in shas or link.version.signature.get("inputs") != inputs:
            continue
        shas.add(link.sha256)
        if link.runtime == Variant.Runtime.TORCH:
            if settings.MODELHUB_SERVING_TORCHSCRIPT:
                torch_links.append(link)
            continue
        usable.append(link)
    return usable + torch_links


def build_route(model_name: str, selector: str) -> Route:
    """Read a route from the database (NotFound when the model or its alias/version has none)."""
    model = RegisteredModel.objects.filter(name=model_name).first()
    if model is None:
        raise NotFound(f"No model named {model_name!r}.")
    kind, _, value = selector.partition(":")
    previous = None
    if kind == "version":
        primary = _version_variant(model, int(value))
    else:
        deployment = Deployment.objects.filter(model=model, alias=value).first()
        if deployment is None:
            raise NotFound(f"Model {model_name} has no variant deployed under alias {value!r}.")
        primary = _variants().get(pk=deployment.variant_id)
        previous = _previous_production(model, value, primary)
    chain = _chain(primary, previous)
    if not chain:
        raise Unavailable(f"No variant of {model_name} ({selector}) can be served by this server.")
    config = _serving_config(model)
    ttl = config.cache_ttl_s if config is not None and config.cache_responses else 0
    return Route(model_id=model.pk, model=model.name, selector=selector, chain=tuple(VariantSpec.from_variant(v) for v in chain),
                 cache_ttl_s=ttl)


def _serving_config(model: RegisteredModel) -> Any:
    from predictions.models import ServingConfig

    return ServingConfig.objects.filter(model=model).first()


def _db_generation() -> Any:
    newest = PromotionEvent.objects.aggregate(n=Max("id"))["n"]
    updated = Deployment.objects.aggregate(t=Max("updated_at"))["t"]
    return ("db", newest, updated.isoformat() if updated else None)


# --- the routing table ---------------------------------------------------------------------------


class RoutingTable:
    """This process's copy of the routes, refreshed when the generation moves or a route expires."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], tuple[float, Route | ServiceError]] = {}
        self._generation: Any = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._routes.clear()
            self._generation, self._checked_at = None, float("-inf")

    def invalidate(self, model_name: str = "") -> None:
        """Drop the routes now and read the generation on the next request (a promotion here)."""
        with self._lock:
            self._routes.clear()
            self._checked_at = float("-inf")

    def _refresh(self) -> None:
        now = clock()
        if now - self._checked_at < settings.MODELHUB_SERVING_ROUTING_CHECK_MS / 1000:
            return
        self._checked_at = now
        generation = cache.generation()
        if generation is cache.DOWN:
            try:
                generation = _db_generation()
            except DatabaseError:
                return  # neither Redis nor the database: keep serving the routes we know
        if generation != self._generation:
            with self._lock:
                self._routes.clear()
                self._generation = generation

    def route(self, model_name: str, selector: str) -> Route:
        """The route of (model, selector); raises NotFound / Unavailable."""
        self._refresh()
        known = self._routes.get((model_name, selector))
        now = clock()
        if known is not None and known[0] > now:
            return self._give(known[1])
        generation = self._generation
        try:
            found: Route | ServiceError = self._load(model_name, selector, generation)
            expires = now + settings.MODELHUB_SERVING_ROUTE_TTL_S
        except ServiceError as exc:
            found, expires = exc, now + NEGATIVE_TTL_S
        except DatabaseError:
            if known is not None:  # the registry is down: the route we had keeps serving
                return self._give(known[1])
            raise Unavailable("The model registry is unavailable; try again shortly.") from None
        if generation == self._generation:
            if len(self._routes) >= MAX_ROUTES:
                self._routes.clear()
            self._routes[(model_name, selector)] = (expires, found)
        return self._give(found)

    @staticmethod
    def _give(found: Route | ServiceError) -> Route:
        if isinstance(found, ServiceError):
            raise found
        return found

    def _load(self, model_name: str, selector: str, generation: Any) -> Route:
        entry = cache.route_get(model_name, selector) if not isinstance(generation, tuple) else None
        if isinstance(entry, dict) and entry.get("generation") == generation and generation is not None:
            return Route.from_dict(entry["route"])
        route = build_route(model_name, selector)
        if generation is not None and not isinstance(generation, tuple):
            cache.route_set(model_name, selector, {"generation": generation, "route": route.to_dict()},
                            settings.MODELHUB_SERVING_ROUTE_TTL_S)
        return route


TABLE = RoutingTable()
cache.on_bump(TABLE.invalidate)


def route(model_name: str, selector: str) -> Route:
    return TABLE.route(model_name, selector)


# --- the circuit breaker -------------------------------------------------------------------------


class Breaker:
    """Per process: a variant failing N times in a row (a load error at once) is skipped for a while."""

    def __init__(self) -> None:
        self._state: dict[str, list[float]] = {}  # sha256 -> [consecutive failures, open until]
        self._lock = threading.Lock()

    def allows(self, sha256: str) -> bool:
        state = self._state.get(sha256)
        return state is None or state[1] <= clock()

    def success(self, sha256: str) -> None:
        if sha256 in self._state:
            with self._lock:
                self._state.pop(sha256, None)

    def failure(self, sha256: str, *, at_once: bool = False) -> None:
        with self._lock:
            state = self._state.setdefault(sha256, [0, 0.0])
            state[0] += 1
            if at_once or state[0] >= settings.MODELHUB_SERVING_BREAKER_FAILURES:
                state[1] = clock() + settings.MODELHUB_SERVING_BREAKER_OPEN_S

    def is_open(self, sha256: str) -> bool:
        return not self.allows(sha256)

    def clear(self) -> None:
        with self._lock:
            self._state.clear()


BREAKER = Breaker()


# --- answering -----------------------------------------------------------------------------------


def _non_finite(outputs: dict[str, np.ndarray]) -> str | None:
    for name, array in outputs.items():
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            return name
    return None


def _is_invalid_argument(exc: Exception) -> bool:
    return type(exc).__name__ == "InvalidArgument"  # onnxruntime's INVALID_ARGUMENT status


def _run_link(route: Route, link: VariantSpec, feeds: dict[str, np.ndarray]) -> tuple[dict | None, str, str]:
    """Try one link: (outputs, "", "") or (None, reason, detail)."""
    if not BREAKER.allows(link.sha256):
        return None, "circuit_open", "skipped while it keeps failing"
    try:
        loaded = runtime.get(link)
    except runtime.LoadError as exc:
        BREAKER.failure(link.sha256, at_once=True)  # a file that does not load will not load next time
        return None, "load_error", exc.reason
    try:
        outputs = loaded.run(feeds)
    except Exception as exc:  # noqa: BLE001 - any runtime failure moves on to the next link
        if _is_invalid_argument(exc):
            raise BadModelInput(f"The model refused the input: {str(exc).split(':', 1)[-1].strip()[:300]}") from None
        log.warning("%s %s failed: %s", route.model, link.label, exc)
        return None, "runtime_error", exc.__class__.__name__
    bad = _non_finite(outputs)
    if bad is not None:
        metrics.NON_FINITE.labels(route.model, link.label).inc()
        return None, "non_finite", bad
    return outputs, "", ""


def run_chain(route: Route, feeds: dict[str, np.ndarray]) -> Answer:
    """Run the first link that answers with finite outputs; count and flag a fallback.

    A runtime error or a non-finite output counts against a variant's breaker only when a later
    link answers the same input: when every link fails, the input is the likelier cause, and one
    client's odd inputs must not switch a model off for everybody.
    """
    failures: list[tuple[VariantSpec, str, str]] = []
    for link in route.chain:
        outputs, reason, detail = _run_link(route, link, feeds)
        if outputs is not None:
            BREAKER.success(link.sha256)
            answer = Answer(outputs=outputs, variant=link)
            if failures:
                for failed, why, _ in failures:
                    if why in ("runtime_error", "non_finite"):
                        BREAKER.failure(failed.sha256)
                answer.fallback_reason = failures[0][1]
                answer.failures = [f"{failed.label}: {why}" for failed, why, _ in failures]
                metrics.FALLBACKS.labels(route.model, answer.fallback_reason).inc()
            return answer
        failures.append((link, reason, detail))
    tried = "; ".join(f"{failed.label}: {why}" + (f" ({detail})" if detail else "") for failed, why, detail in failures)
    non_finite = [detail for _, why, detail in failures if why == "non_finite"]
    if non_finite and all(why in ("non_finite", "circuit_open") for _, why, _ in failures):
        raise NonFiniteOutput(f"The model produced NaN or Infinity in output '{non_finite[0]}' for this input; "
                              f"no answer is returned ({tried}).")
    raise Unavailable(f"No variant of {route.model} could answer ({tried}).")


def answer(route: Route, body: bytes, content_type: str) -> Answer:
    """Decode and validate a request body against the route's signature, then answer it: from the
    response cache when the model opted in, else by running the chain.

    With the cache on, a body seen before on this route (the same bytes and content type, which
    decoded and validated then) goes straight to the cache lookup without being decoded again.
    """
    if not route.cache_ttl_s:
        return run_chain(route, inputs.decode(body, content_type, route.inputs))
    primary = route.chain[0]
    seen = cache.body_key(primary.sha256, content_type, body)
    digest = cache.BODIES.get(seen)
    feeds = None
    if digest is None:
        feeds = inputs.decode(body, content_type, route.inputs)
        digest = cache.input_digest(feeds)
    payload = cache.response_get(route.model, primary.sha256, digest)
    if payload is not None:
        cache.BODIES.put(seen, digest, route.cache_ttl_s)
        return Answer(outputs=orjson.Fragment(payload), variant=primary, cached=True)
    if feeds is None:
        feeds = inputs.decode(body, content_type, route.inputs)
    result = run_chain(route, feeds)
    if result.fallback_reason is None:
        payload = render_outputs(result.outputs)
        cache.response_set(primary.sha256, digest, payload, route.cache_ttl_s)
        cache.BODIES.put(seen, digest, route.cache_ttl_s)
        result.outputs = orjson.Fragment(payload)
    return result


def render_outputs(outputs: dict[str, np.ndarray]) -> bytes:
    """JSON bytes of named output arrays (orjson serializes numpy arrays natively)."""
    return orjson.dumps(jsonable_outputs(outputs), option=orjson.OPT_SERIALIZE_NUMPY)


# Element types orjson serializes natively (compared as dtypes: dtype.name is slow on the hot path).
_NATIVE = {np.dtype(name) for name in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint64",
                                       "uint32", "uint16", "uint8", "bool")}


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype in _NATIVE:
        return array if array.flags.c_contiguous else np.ascontiguousarray(array)
    return array.tolist()


def jsonable_outputs(outputs: Any) -> Any:
    """Outputs ready for orjson: cached JSON bytes as they are, arrays in a form orjson serializes."""
    if isinstance(outputs, orjson.Fragment):
        return outputs
    return {name: _jsonable(array) for name, array in outputs.items()}


# --- readiness -----------------------------------------------------------------------------------


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
    for index, link in enumerate(found.chain):
        if not BREAKER.allows(link.sha256):
            continue
        try:
            runtime.warm(link) if not runtime.RUNTIMES.loaded(link.sha256) else None
        except runtime.LoadError as exc:
            BREAKER.failure(link.sha256, at_once=True)
            log.warning("readiness: %s", exc)
            continue
        return "ok" if index == 0 else f"fallback: {link.label} serves ({found.chain[0].label} cannot load)"
    return "error: no variant of the chain can load"
