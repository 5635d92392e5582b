"""The admin login's lockout: too many failed logins for one username, or from one client address,
and further attempts are refused for a while, with a message that says so.

Django's own mechanism, not a new package: the admin's login form (``LockoutAuthenticationForm``,
set on the admin site in modelhub/urls.py; the dashboard logs in through the same page) asks
``refusal`` before it checks a password and calls ``record_failure`` after a wrong one. Counters
live in the default cache (Redis in production, shared by every process) in a fixed window: the
first failure starts a window of ``MODELHUB_LOGIN_LOCKOUT_S`` seconds; once
``MODELHUB_LOGIN_MAX_FAILURES`` failures for a username (or ``MODELHUB_LOGIN_MAX_FAILURES_PER_IP``
from an address) fall in it, every attempt is refused until it ends, the right password included.
Refused attempts are not counted, so a locked-out user is let in again when the window ends.

The address is ``REMOTE_ADDR``: behind a proxy that is the proxy's, hence the per-address limit's
own, higher setting. While the cache is unreachable the lockout is skipped (logged): an outage of
Redis must not lock every administrator out.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from django.http import HttpRequest

log = logging.getLogger(__name__)


def _keys(username: str, address: str) -> list[tuple[str, int]]:
    """(cache key, failures allowed) of the username's and the address's windows."""
    user = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]  # usernames never in keys verbatim
    return [(f"modelhub:login-failures:user:{user}", settings.MODELHUB_LOGIN_MAX_FAILURES),
            (f"modelhub:login-failures:ip:{address}", settings.MODELHUB_LOGIN_MAX_FAILURES_PER_IP)]


def client_address(request: HttpRequest | None) -> str:
    """The address the failures of a request count against."""
    return (request.META.get("REMOTE_ADDR") or "unknown") if request is not None else "unknown"


def refusal(username: str, address: str) -> str | None:
    """Why a login attempt is refused now (a sentence), or None when it may go ahead."""
    keys = _keys(username, address)
    try:
        counts = cache.get_many([key for key, _ in keys])
    except Exception as exc:  # noqa: BLE001 - a cache outage skips the lockout rather than locking everyone out
        log.warning("login lockout skipped: cache unavailable (%s)", exc.__class__.__name__)
        return None
    if any(counts.get(key, 0) >= allowed for key, allowed in keys):
        minutes = max(1, round(settings.MODELHUB_LOGIN_LOCKOUT_S / 60))
        return (f"Too many failed logins for this account or from this address: logins are refused for up to "
                f"{minutes} minute(s). Try again later.")
    return None


def record_failure(username: str, address: str) -> None:
    """Count one failed login against the username and the address (each window starts at its first failure)."""
    try:
        for key, _ in _keys(username, address):
            cache.add(key, 0, timeout=settings.MODELHUB_LOGIN_LOCKOUT_S)
            cache.incr(key)
    except Exception as exc:  # noqa: BLE001 - see refusal
        log.warning("login failure not counted: cache unavailable (%s)", exc.__class__.__name__)


class LockoutAuthenticationForm(AdminAuthenticationForm):
    """The admin login form, refused while the username or the address is locked out."""

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request)
        refused = refusal(username, address)
        if refused:
            raise forms.ValidationError(refused, code="locked_out")
        try:
            return super().clean()
        except forms.ValidationError as error:
            if self.user_cache is None:  # a wrong password, not an inactive account's refusal after one
                record_failure(username, address)
            raise error
