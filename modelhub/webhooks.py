"""Signed JSON webhooks: POST a payload, signed with HMAC-SHA256, with a bounded number of tries.

The signature covers the raw body exactly as sent: ``X-Modelhub-Signature: sha256=<hex>``. A
receiver recomputes ``hmac(secret, body, sha256)`` over the bytes it received and compares in
constant time. Delivery never raises: a webhook that is down must not fail the work that found
the news (the news is also in the database, the log and the metrics).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Modelhub-Signature"
TIMEOUT_S = 3.0
RETRIES = 2
BACKOFF_S = 0.5


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Signed payloads go to the configured address only, never where a redirect points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def sign(body: bytes, secret: str) -> str:
    """The signature header value of a body: ``sha256=<hex of HMAC-SHA256(secret, body)>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed) for a payload."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


def _attempt(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> tuple[bool, bool, str]:
    """One POST: (delivered, worth retrying, what happened)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return True, False, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        # The receiver answered: only its own trouble (5xx) or a rate limit may pass with time.
        return False, exc.code >= 500 or exc.code == 429, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, True, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def post_signed(url: str, payload: dict[str, Any], *, secret: str, event: str, timeout_s: float = TIMEOUT_S,
                retries: int = RETRIES, backoff_s: float = BACKOFF_S,
                sleep: Callable[[float], None] = time.sleep) -> bool:
    """POST ``payload`` as signed JSON; True when a 2xx answer came. Never raises."""
    try:
        body = encode(payload)
        headers = {"Content-Type": "application/json", "User-Agent": "modelhub-webhook",
                   "X-Modelhub-Event": event, SIGNATURE_HEADER: sign(body, secret)}
        for attempt in range(retries + 1):
            delivered, retry, outcome = _attempt(url, body, headers, timeout_s)
            if delivered:
                return True
            if not retry or attempt == retries:
                break
            sleep(backoff_s * 2**attempt)
        log.warning("webhook %s to %s not delivered after %d attempt(s): %s", event, url, attempt + 1, outcome)
    except Exception:  # noqa: BLE001 - a webhook must never fail the caller
        log.exception("webhook %s to %s failed", event, url)
    return False
