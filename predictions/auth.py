"""Who may predict: predict tokens scoped to models, and management users with a role.

``Authorization: Bearer <token>`` is a predict token: it may call the predict endpoint of the
models it names and nothing else (management routes do not accept it), until its ``expires_at``
(401 from then on, remembered or not). Management users with the viewer role or above may also predict on the models they can see, with their DRF token
(``Authorization: Token <key>``) or their session (CSRF checked). Callers are remembered per
process for ``MODELHUB_SERVING_AUTH_CACHE_S`` seconds so that the hot path needs no database;
when the database is down a caller already known keeps its answer.

Throttling: a fixed one-minute window per caller, shared through Redis (each process adds its
count in batches, see ``throttle``), or counted in this process while Redis is unavailable.
Over the limit: 429 with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication

from modelhub import roles, selectors
from modelhub.errors import Forbidden, ServiceError
from predictions import cache
from predictions.models import PredictToken
from predictions.refusals import Unavailable

TOKEN_PREFIX = "mhp_"
MAX_REMEMBERED = 10_000


class Unauthorized(ServiceError):
    """No valid credentials came with the request (401, with the scheme to use)."""

    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": 'Bearer realm="predict"'}


class Throttled(ServiceError):
    """The caller is over its rate for this minute (429, with when to retry)."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        self.retry_after_s = retry_after
        super().__init__(message)


@dataclass(frozen=True)
class Caller:
    """An authenticated predict caller: which models it may call and its rate per minute."""

    ident: str
    model_names: frozenset[str]
    rate_per_minute: int
    label: str = ""
    refusal: str = ""  # set for a known user who may not predict at all (403)
    is_authenticated: bool = True  # lets DRF permission classes treat it as a logged-in principal
    all_models: bool = False  # superusers: every model, including ones registered after this was remembered
    expires_at: float | None = None  # epoch seconds: a remembered token caller stops at its expiry, not later

    def may_predict(self, model_name: str) -> bool:
        return self.all_models or model_name in self.model_names


def hash_token(raw: str) -> str:
    """The SHA-256 under which a predict token is stored and looked up."""
    return hashlib.sha256(raw.encode()).hexdigest()


# --- callers -------------------------------------------------------------------------------------


def _token_caller(raw: str) -> Caller | None:
    token = PredictToken.objects.filter(token_hash=hash_token(raw), revoked=False).first()
    if token is None:
        return None
    if token.expired(timezone.now()):  # raised, not remembered: the next request asks again
        raise Unauthorized(f"The predict token expired at {token.expires_at.isoformat()}; ask for a new one.")
    names = frozenset(token.allowed_models.values_list("name", flat=True))
    return Caller(ident=f"token:{token.pk}", model_names=names, rate_per_minute=token.rate_limit_per_minute,
                  label=token.name, expires_at=token.expires_at.timestamp() if token.expires_at else None)


def _user_caller(user: Any) -> Caller:
    if not any(roles.has_role(user, role) for role in roles.ROLES):
        return Caller(ident=f"user:{user.pk}", model_names=frozenset(), rate_per_minute=0,
                      refusal="You need the viewer role or above to predict.")
    names = frozenset(selectors.model_visible_to(user).values_list("name", flat=True))
    return Caller(ident=f"user:{user.pk}", model_names=names, all_models=user.is_superuser,
                  rate_per_minute=settings.MODELHUB_SERVING_USER_RATE_PER_MIN, label=user.get_username())


def _drf_token_caller(key: str) -> Caller | None:
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    return _user_caller(token.user)


# --- remembering callers -------------------------------------------------------------------------

_REMEMBERED: dict[str, tuple[float, Caller]] = {}
_lock = threading.Lock()


def _remembered(cache_key: str, find: Any) -> Caller | None:
    now = time.monotonic()
    known = _REMEMBERED.get(cache_key)
    if known is not None and known[0] > now:
        return known[1]
    try:
        caller = find()
    except DatabaseError:
        if known is not None:  # the registry is down: a caller known a moment ago keeps its rights
            return known[1]
        raise Unavailable("The model registry is unavailable; try again shortly.") from None
    if caller is not None and settings.MODELHUB_SERVING_AUTH_CACHE_S > 0:
        with _lock:
            if len(_REMEMBERED) >= MAX_REMEMBERED:
                _REMEMBERED.clear()
            _REMEMBERED[cache_key] = (now + settings.MODELHUB_SERVING_AUTH_CACHE_S, caller)
    return caller


def forget_callers() -> None:
    """Forget remembered callers (after a token or role change): the next request asks the database."""
    _REMEMBERED.clear()


def forget() -> None:
    """Forget remembered callers and throttle windows (between tests)."""
    forget_callers()
    _windows.clear()


# --- authenticating a request --------------------------------------------------------------------


def _enforce_csrf(request: HttpRequest) -> None:
    check = CsrfViewMiddleware(lambda r: None)  # type: ignore[arg-type, return-value]
    check.process_request(request)
    if check.process_view(request, None, (), {}) is not None:  # type: ignore[arg-type]
        raise Forbidden("CSRF check failed: a session-authenticated POST needs the CSRF token "
                        "(or use Authorization: Bearer <predict token>).")


def authenticate(request: HttpRequest) -> Caller:
    """The caller of a predict request; Unauthorized (401) without valid credentials, Forbidden (403)
    for a user without a role."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        scheme = scheme.lower()
        if scheme == "bearer" and credential:
            caller = _remembered("bearer:" + hash_token(credential), lambda: _token_caller(credential))
        elif scheme == "token" and credential:
            caller = _remembered("drf:" + hash_token(credential), lambda: _drf_token_caller(credential))
        else:
            raise Unauthorized("Send Authorization: Bearer <predict token>.")
    else:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            raise Unauthorized("Authentication needed: send Authorization: Bearer <predict token>.")
        _enforce_csrf(request)
        caller = _remembered(f"session:{user.pk}", lambda: _user_caller(user))
    if caller is None:
        raise Unauthorized("The token is not valid (unknown or revoked).")
    if caller.expires_at is not None and time.time() >= caller.expires_at:
        raise Unauthorized("The predict token has expired; ask for a new one.")
    if caller.refusal:
        raise Forbidden(caller.refusal)
    return caller


class PredictTokenAuthentication(BaseAuthentication):
    """DRF authentication by predict token (``Authorization: Bearer <token>``).

    ``request.user`` becomes the ``Caller``; only views that check ``Caller.may_predict`` should
    list this class. Management views do not, so a predict token never reaches them.
    """

    def authenticate(self, request: Any) -> tuple[Caller, str] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return None
        from rest_framework.exceptions import AuthenticationFailed

        try:
            caller = _remembered("bearer:" + hash_token(credential.strip()), lambda: _token_caller(credential.strip()))
        except Unauthorized as exc:
            raise AuthenticationFailed(exc.message) from None
        if caller is None:
            raise AuthenticationFailed("The token is not valid (unknown or revoked).")
        if caller.expires_at is not None and time.time() >= caller.expires_at:
            raise AuthenticationFailed("The predict token has expired; ask for a new one.")
        return caller, credential.strip()

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="predict"'


# --- throttling ----------------------------------------------------------------------------------

SYNC_S = 0.1  # a process adds its local count to the shared Redis counter at least this often


@dataclass
class _Window:
    """One caller's minute in this process: requests not yet added to Redis, and Redis's last total."""

    pending: int = 0
    shared: int = 0
    synced_at: float = float("-inf")


_windows: dict[str, _Window] = {}


def throttle(caller: Caller) -> None:
    """Count the request in the caller's one-minute window; 429 with Retry-After over the limit.

    The window is shared through Redis, but a process does not pay a round trip per request: it
    adds its local count (INCRBY) every ``SYNC_S`` seconds or every 5% of the limit, whichever
    comes first, and decides on Redis's last total plus its own pending count. Several processes
    may overshoot a large limit by a few percent; small limits are synced on every request.
    While Redis is unavailable each process counts alone.
    """
    limit = caller.rate_per_minute
    if not limit:
        return
    now = time.time()
    name = f"throttle:{caller.ident}:{int(now // 60)}"
    with _lock:
        window = _windows.get(name)
        if window is None:
            if len(_windows) > MAX_REMEMBERED:
                _windows.clear()
            window = _windows[name] = _Window()
        window.pending += 1
        sync = window.pending >= max(1, limit // 20) or time.monotonic() - window.synced_at >= SYNC_S
        pending = window.pending if sync else 0
        window.pending -= pending
        if sync:
            window.synced_at = time.monotonic()
    if pending:
        total = cache.incr_window(name, 61, pending)
        with _lock:
            if total is None:  # Redis unavailable: this process's own count is what there is
                window.shared += pending
            else:
                window.shared = max(window.shared, total)
    if window.shared + window.pending > limit:
        retry_after = max(1, int(60 - now % 60) + 1)
        raise Throttled(f"Rate limit of {limit} predictions per minute reached; retry in {retry_after} s.",
                        retry_after)

