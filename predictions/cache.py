"""Redis for serving: the routing generation counter, the routing table, the response cache and
throttle counters, all through the Django cache alias ``MODELHUB_SERVING_CACHE``.

Redis is an accelerator here, never a dependency: every operation is guarded, and after one
failure Redis is left alone for ``MODELHUB_SERVING_REDIS_BACKOFF_S`` seconds (requests go on
without it and ``modelhub_serving_redis_unavailable_total`` counts what was skipped) instead of
paying a timeout on every request.

The response cache is opt-in per model (``ServingConfig.cache_responses``). Its key is the
variant's sha256 plus a canonical hash of the inputs (name, dtype, shape and bytes of each), and
a small in-process LRU sits in front of Redis. Answers are stored as their JSON bytes.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache

from predictions import metrics

log = logging.getLogger(__name__)

clock = time.monotonic
DOWN = object()  # what a guarded operation returns when Redis was not (or could not be) asked

_state = {"down_until": 0.0}
# Called by bump_generation in this process, so that this process's routing table sees a promotion at once.
_listeners: list[Callable[[str], None]] = []


def on_bump(listener: Callable[[str], None]) -> None:
    """Call ``listener(model_name)`` whenever this process bumps the generation."""
    _listeners.append(listener)


def _store() -> Any:
    return caches[settings.MODELHUB_SERVING_CACHE]


def key(*parts: object) -> str:
    """A serving cache key under this deployment's prefix."""
    return ":".join([settings.MODELHUB_SERVING_KEY_PREFIX, *(str(p) for p in parts)])


def guarded(op: str, call: Callable[[], Any]) -> Any:
    """Run one cache operation; DOWN when Redis is backing off or the operation failed."""
    if clock() < _state["down_until"]:
        metrics.CACHE_UNAVAILABLE.labels(op).inc()
        return DOWN
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - any Redis failure means "go on without it"
        _state["down_until"] = clock() + settings.MODELHUB_SERVING_REDIS_BACKOFF_S
        metrics.CACHE_UNAVAILABLE.labels(op).inc()
        log.warning("serving cache unavailable (%s: %s); going on without it for %s s", op, exc.__class__.__name__,
                    settings.MODELHUB_SERVING_REDIS_BACKOFF_S)
        return DOWN


def available() -> bool:
    """False while Redis is backing off after a failure."""
    return clock() >= _state["down_until"]


def reset() -> None:
    """Forget the back-off and the in-process response cache (tests, and after reconfiguration)."""
    _state["down_until"] = 0.0
    RESPONSES.clear()
    BODIES.clear()


# --- routing generation ------------------------------------------------------------------------


def generation() -> Any:
    """The routing generation in Redis (DOWN when Redis cannot be asked). It starts at a
    time-based number so that a Redis that lost its data never repeats an old generation."""
    store = _store()
    value = guarded("generation", lambda: store.get(key("generation")))
    if value is None:
        guarded("generation", lambda: store.add(key("generation"), time.time_ns(), None))
        value = guarded("generation", lambda: store.get(key("generation")))
    return value


def bump_generation(model_name: str) -> None:
    """Tell every web process that the routing of ``model_name`` changed (on ``routing_changed``,
    sent after a promotion commits, and when serving options change).

    Processes check the counter at most every ``MODELHUB_SERVING_ROUTING_CHECK_MS``; this process
    sees the change at once. With Redis down the others notice through the database instead.
    """
    store = _store()

    def bump() -> None:
        try:
            store.incr(key("generation"))
        except ValueError:  # no counter yet
            store.add(key("generation"), time.time_ns(), None)

    guarded("bump_generation", bump)
    for listener in _listeners:
        listener(model_name)
    log.info("routing of %s changed", model_name)


def route_get(model_name: str, selector: str) -> Any:
    """The shared routing-table entry of (model, selector), None if absent, DOWN without Redis."""
    return guarded("route_get", lambda: _store().get(key("route", model_name, selector)))


def route_set(model_name: str, selector: str, entry: dict[str, Any], ttl_s: int) -> None:
    """Share a routing-table entry with the other processes for ``ttl_s`` seconds."""
    guarded("route_set", lambda: _store().set(key("route", model_name, selector), entry, ttl_s))


# --- throttle counters -------------------------------------------------------------------------


def incr_window(name: str, ttl_s: int, amount: int = 1) -> int | None:
    """Add to a counter that expires ``ttl_s`` after its creation; None when Redis cannot be asked."""
    store = _store()
    full = store.make_and_validate_key(key(name))

    def incr() -> int:
        if isinstance(store, RedisCache):
            # One round trip: INCRBY and EXPIRE in a pipeline (the cache API needs three).
            client = store._cache.get_client(full, write=True)  # noqa: SLF001 - Django exposes no atomic incr+ttl
            pipe = client.pipeline(transaction=False)
            pipe.incrby(full, amount)
            pipe.expire(full, ttl_s, nx=True)
            return int(pipe.execute()[0])
        store.add(key(name), 0, ttl_s)
        return int(store.incr(key(name), amount))

    value = guarded("throttle", incr)
    return None if value is DOWN else value


# --- response cache ----------------------------------------------------------------------------


def input_digest(feeds: dict[str, np.ndarray]) -> str:
    """A canonical hash of the inputs: name, dtype, shape and C-order bytes of each, by name."""
    digest = hashlib.blake2b(digest_size=20)
    for name in sorted(feeds):
        array = np.ascontiguousarray(feeds[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.data)
    return digest.hexdigest()


def body_key(sha256: str, content_type: str, body: bytes) -> str:
    """A hash of a request body as received (for bodies already decoded once on a route)."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{sha256}\0{content_type}\0".encode())
    digest.update(body)
    return digest.hexdigest()


class LocalLRU:
    """A small in-process LRU whose entries expire with their TTL."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        with self._lock:
            item = self._items.get(name)
            if item is None:
                return None
            if item[0] < clock():
                del self._items[name]
                return None
            self._items.move_to_end(name)
            return item[1]

    def put(self, name: str, payload: Any, ttl_s: int) -> None:
        limit = settings.MODELHUB_SERVING_LOCAL_CACHE_ITEMS
        if limit <= 0:
            return
        with self._lock:
            self._items[name] = (clock() + ttl_s, payload)
            self._items.move_to_end(name)
            while len(self._items) > limit:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


RESPONSES = LocalLRU()  # cache key -> JSON bytes of the outputs
BODIES = LocalLRU()  # body_key -> input digest, for bodies that decoded and validated before


def response_get(model_name: str, sha256: str, digest: str) -> bytes | None:
    """A cached answer (JSON bytes of the outputs), counting a hit or a miss."""
    name = key("answer", sha256, digest)
    payload = RESPONSES.get(name)
    if payload is None:
        found = guarded("response_get", lambda: _store().get(name))
        if isinstance(found, bytes):
            payload = found
            RESPONSES.put(name, payload, 5)  # short: Redis keeps the authoritative TTL
    metrics.CACHE.labels(model_name, "hit" if payload is not None else "miss").inc()
    return payload


def response_set(sha256: str, digest: str, payload: bytes, ttl_s: int) -> None:
    """Keep an answer's JSON bytes for ``ttl_s`` seconds, here and in Redis."""
    name = key("answer", sha256, digest)
    RESPONSES.put(name, payload, ttl_s)
    guarded("response_set", lambda: _store().set(name, payload, ttl_s))
