"""Typed readers of environment variables that fail loudly on bad values.

Settings read the environment only through these helpers so that a typo in a deployment
(``DEBUG=ture``, ``MAX_UPLOAD_MB=ten``) stops the process at start instead of being guessed.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str | None = None) -> str | None:
    """A string variable; empty counts as unset."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_bool(name: str, default: bool) -> bool:
    """A boolean variable: 1/0, true/false, yes/no, on/off; anything else is an error."""
    raw = env_str(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use 1 or 0.")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """An integer variable, optionally bounded below."""
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}.")
    return value


def env_choice(name: str, default: str, choices: set[str]) -> str:
    """A variable that must be one of ``choices``."""
    value = env_str(name, default) or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of {', '.join(sorted(choices))}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list variable."""
    raw = env_str(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_url(url: str) -> dict[str, object]:
    """Django DATABASES entry from ``postgres://user:pass@host:port/name`` or ``sqlite:///path``."""
    parsed = urlparse(url)
    if parsed.scheme in {"postgres", "postgresql"}:
        if not parsed.path.strip("/"):
            raise ImproperlyConfigured("DATABASE_URL names no database (postgres://user:pass@host:5432/NAME).")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            # Fail fast when the database is down instead of hanging a request for 30 s.
            "OPTIONS": {"connect_timeout": 2},
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    if parsed.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parsed.path) or ":memory:"}
    raise ImproperlyConfigured(f"DATABASE_URL scheme {parsed.scheme!r} is not supported; use postgres:// or sqlite://.")


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def storage_from_url(url: str, *, endpoint_url: str | None, region: str | None) -> dict[str, Any]:
    """Django STORAGES entry from ``s3://bucket/prefix``: django-storages' S3 backend (boto3).

    Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile,
    an instance role); ``endpoint_url`` names an S3-compatible server (MinIO, Ceph, moto).
    """
    parsed = urlparse(url)
    if parsed.scheme != "s3":
        raise ImproperlyConfigured(f"MODELHUB_STORAGE_URL scheme {parsed.scheme!r} is not supported; use "
                                   "s3://bucket/prefix (or leave it unset for the local disk).")
    if not _BUCKET.match(parsed.netloc) or ".." in parsed.netloc:
        raise ImproperlyConfigured(f"MODELHUB_STORAGE_URL names no valid bucket ({parsed.netloc!r}): "
                                   "3-63 lower-case letters, digits, dots or hyphens.")
    prefix = parsed.path.strip("/")
    if parsed.query or parsed.fragment or any(part in ("", ".", "..") for part in prefix.split("/") if prefix):
        raise ImproperlyConfigured(f"MODELHUB_STORAGE_URL prefix {parsed.path!r} is not a plain path.")
    if endpoint_url and not endpoint_url.startswith(("http://", "https://")):
        raise ImproperlyConfigured("MODELHUB_S3_ENDPOINT_URL must be an http:// or https:// URL.")
    if bool(os.environ.get("AWS_ACCESS_KEY_ID")) != bool(os.environ.get("AWS_SECRET_ACCESS_KEY")):
        raise ImproperlyConfigured("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together.")
    from botocore.config import Config

    # An unreachable bucket must fail a request in seconds (answered 503), not after boto3's
    # default 60 s connect timeout and retries; S3-compatible servers need path-style addressing.
    client = Config(connect_timeout=2, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"},
                    s3={"addressing_style": "path" if endpoint_url else "auto"})
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": parsed.netloc, "location": prefix, "endpoint_url": endpoint_url, "region_name": region,
        "client_config": client, "file_overwrite": True, "default_acl": None, "querystring_auth": True,
        # Reads through Storage.open spill to disk above this size instead of growing in memory.
        "max_memory_size": 8 * 1024 * 1024}}
