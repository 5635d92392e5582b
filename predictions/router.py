"""Which link answers: a request's inputs run through its route's chain, best link first.

A load error, a runtime exception, an answer over the caps or unlike the link's declared outputs
(names, element types, shapes), or a non-finite output moves a request to the next link; the
breaker (``predictions.breaker``) skips a variant that keeps failing. With the response cache on
(``ServingConfig.cache_responses``), an input answered before comes back from the cache. Routes
come from ``predictions.routing_table``, refusals are ``predictions.refusals``, and the outputs
are rendered by ``predictions.outputs``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from django.conf import settings

from predictions import batching, cache, inputs, metrics, runtime
from predictions.breaker import BREAKER
from predictions.outputs import mismatch, non_finite, over_cap, render_outputs
from predictions.refusals import BadModelInput, BadModelOutput, NonFiniteOutput, Unavailable
from predictions.routes import Route
from predictions.runtime import VariantSpec

log = logging.getLogger(__name__)
# Failures of an answer the run gave (over the caps, unlike the declared outputs): refused, never sent.
_OUTPUT_REASONS = ("output_too_large", "output_mismatch")


@dataclass
class Answer:
    """What answered: outputs (arrays, or cached JSON bytes), the variant, cache and fallback flags."""

    outputs: Any
    variant: VariantSpec
    cached: bool = False
    fallback_reason: str | None = None
    failures: list[str] = field(default_factory=list)
    payload: bytes | None = None  # the outputs' JSON bytes when ``outputs`` is their orjson.Fragment


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
        # With batching on for this variant, the run may be shared with concurrent requests.
        outputs = batching.run(loaded, feeds) if link.batching else loaded.run(feeds)
    except batching.BatchTimeout:
        raise  # too busy right now, not the variant's fault: no fallback, nothing for the breaker
    except Exception as exc:  # noqa: BLE001 - any runtime failure moves on to the next link
        if _is_invalid_argument(exc):
            raise BadModelInput(f"The model refused the input: {str(exc).split(':', 1)[-1].strip()[:300]}") from None
        log.warning("%s %s failed: %s", route.model, link.label, exc)
        return None, "runtime_error", exc.__class__.__name__
    refused = _refused_output(route, link, outputs, feeds)
    if refused is not None:
        return None, *refused
    bad = non_finite(outputs)
    if bad is not None:
        metrics.NON_FINITE.labels(route.model, link.label).inc()
        return None, "non_finite", bad
    return outputs, "", ""


def _refused_output(route: Route, link: VariantSpec, outputs: dict[str, np.ndarray],
                    feeds: dict[str, np.ndarray]) -> tuple[str, str] | None:
    """(reason, detail) when an answer is over the caps or unlike the link's declared outputs: the
    shapes are read before any value, so an oversized answer is never rendered."""
    problem = over_cap(outputs, settings.MODELHUB_SERVING_MAX_OUTPUT_ELEMENTS,
                       settings.MODELHUB_SERVING_MAX_OUTPUT_MB * 2**20)
    reason = "output_too_large"
    if problem is None:
        problem, reason = mismatch(outputs, link.signature, feeds), "output_mismatch"
    if problem is None:
        return None
    metrics.OUTPUT_REFUSED.labels(route.model, link.label, reason).inc()
    log.warning("%s %s: %s", route.model, link.label, problem)
    return reason, problem


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
                _flag_fallback(route, answer, failures)
            return answer
        failures.append((link, reason, detail))
    tried = "; ".join(f"{failed.label}: {why}" + (f" ({detail})" if detail and why not in _OUTPUT_REASONS else "")
                      for failed, why, detail in failures)
    refused = [(why, detail) for _, why, detail in failures if why in _OUTPUT_REASONS]
    if refused and all(why in (*_OUTPUT_REASONS, "circuit_open") for _, why, _ in failures):
        raise BadModelOutput(f"The model's answer was refused: {refused[0][1]} ({tried}).")
    non_finite_outputs = [detail for _, why, detail in failures if why == "non_finite"]
    if non_finite_outputs and all(why in ("non_finite", "circuit_open") for _, why, _ in failures):
        raise NonFiniteOutput(f"The model produced NaN or Infinity in output '{non_finite_outputs[0]}' for this "
                              f"input; no answer is returned ({tried}).")
    raise Unavailable(f"No variant of {route.model} could answer ({tried}).")


def _flag_fallback(route: Route, answer: Answer, failures: list[tuple[VariantSpec, str, str]]) -> None:
    """A later link answered: the earlier ones' runtime failures count against their breakers."""
    for failed, why, _ in failures:
        if why in ("runtime_error", "non_finite", *_OUTPUT_REASONS):
            BREAKER.failure(failed.sha256)
    answer.fallback_reason = failures[0][1]
    answer.failures = [f"{failed.label}: {why}" for failed, why, _ in failures]
    metrics.FALLBACKS.labels(route.model, answer.fallback_reason).inc()


def answer(route: Route, body: bytes, content_type: str) -> Answer:
    """Decode and validate a request body against the route's signature, then answer it: from the
    response cache when the model opted in, else by running the chain.

    With the cache on, a body seen before on this route (the same bytes and content type, which
    decoded and validated then) goes straight to the cache lookup without being decoded again.
    """
    seen = cache.body_key(route.chain[0].sha256, content_type, body) if route.cache_ttl_s else None
    return answer_with(route, lambda: inputs.decode(body, content_type, route.inputs), seen)


def answer_with(route: Route, decode: Callable[[], dict[str, np.ndarray]], seen: str | None = None) -> Answer:
    """Answer the inputs ``decode()`` gives (validated feeds), through the response cache when the
    model opted in; ``seen`` is a key of the request as received (``cache.body_key``), so that a body
    that decoded before is not decoded again. A cached or cacheable answer keeps its JSON bytes in
    ``payload``. The predict route and the Open Inference Protocol route both answer through here.
    """
    if not route.cache_ttl_s:
        return run_chain(route, decode())
    primary = route.chain[0]
    digest = cache.BODIES.get(seen) if seen else None
    feeds = None
    if digest is None:
        feeds = decode()
        digest = cache.input_digest(feeds)
    payload = cache.response_get(route.model, primary.sha256, digest)
    if payload is not None:
        if seen:
            cache.BODIES.put(seen, digest, route.cache_ttl_s)
        return Answer(outputs=orjson.Fragment(payload), variant=primary, cached=True, payload=payload)
    if feeds is None:
        feeds = decode()
    result = run_chain(route, feeds)
    if result.fallback_reason is None:
        payload = render_outputs(result.outputs)
        cache.response_set(primary.sha256, digest, payload, route.cache_ttl_s)
        if seen:
            cache.BODIES.put(seen, digest, route.cache_ttl_s)
        result.outputs, result.payload = orjson.Fragment(payload), payload
    return result
