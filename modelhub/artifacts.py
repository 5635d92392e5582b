"""Model and dataset files in Django storage under content-addressed keys.

Uploads are streamed to a local temporary file while hashed and size-capped, then saved under
``<kind>/<sha256>/<server-chosen name>``: a client's file name never reaches a path. Storage is
the local disk or an S3-compatible bucket (``MODELHUB_STORAGE_URL``); no two processes share
anything else. On a bucket, every node reads stored files through its own size-capped cache
(``modelhub.blob_cache``), each checked against the sha256 recorded for it; a bucket that cannot be
reached raises ``StorageUnavailable`` (answered 503), never a half-stored artifact.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

from modelhub.blob_cache import BlobCache, Corrupt, Fetch, sha256_of

CHUNK = 1024 * 1024
__all__ = ["Corrupt", "Received", "StorageUnavailable", "TooLarge"]


class TooLarge(ValueError):
    """An upload is over its size cap (answered 413)."""


class StorageUnavailable(OSError):
    """The artifact storage (the bucket) cannot be reached or refused the request; retry later."""


@dataclass(frozen=True)
class Received:
    """An upload streamed to a local temporary file."""

    path: Path
    sha256: str
    size: int


def work_dir() -> Path:
    """This node's scratch directory (temporary files only; nothing in it is shared)."""
    path = Path(settings.MODELHUB_WORK_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def receive(stream: IO[bytes], *, max_bytes: int, what: str = "file") -> Received:
    """Copy a stream to a local temporary file, hashing it and stopping at ``max_bytes``."""
    digest = hashlib.sha256()
    size = 0
    path = work_dir() / f"incoming-{uuid.uuid4().hex}"
    with path.open("wb") as out:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            size += len(chunk)
            if size > max_bytes:
                out.close()
                path.unlink(missing_ok=True)
                raise TooLarge(f"The {what} is larger than the limit of {max_bytes // (1024 * 1024)} MB.")
            digest.update(chunk)
            out.write(chunk)
    return Received(path=path, sha256=digest.hexdigest(), size=size)


def save_file(local: Path, key: str) -> str:
    """Save a local file under an exact storage key; an existing key (same content) is kept.

    Keys are content-addressed, so a file already there is this content, unless a process was
    killed while writing it (the local disk writes in place; a bucket stores an object whole or
    not at all): a file of another size is that remnant and is replaced, never recorded as the
    artifact. A bucket gets the file streamed from disk, in parts above 8 MB (boto3's multipart).
    """
    with _remote(key):
        if default_storage.exists(key):
            if default_storage.size(key) == local.stat().st_size:
                return key
            default_storage.delete(key)
        with local.open("rb") as handle:
            saved = default_storage.save(key, File(handle))
        if saved != key:  # another process stored the same content meanwhile: keep one copy
            default_storage.delete(saved)
    return key


def delete(keys: list[str]) -> None:
    """Delete stored files (and this node's cached copies), ignoring ones already gone."""
    for key in keys:
        if not key:
            continue
        with _remote(key):
            if default_storage.exists(key):
                default_storage.delete(key)
        if not is_local():
            node_cache().discard(key)


def is_local() -> bool:
    """Whether storage is this machine's disk (then stored files are read in place, not cached)."""
    try:
        default_storage.path("probe")
    except NotImplementedError:
        return False
    return True


def node_cache() -> BlobCache:
    """This node's cache of stored files (``MODELHUB_CACHE_DIR``, capped at ``MODELHUB_CACHE_MB``)."""
    return BlobCache(Path(settings.MODELHUB_CACHE_DIR), settings.MODELHUB_CACHE_BYTES)


def local_path(key: str, sha256: str | None = None) -> Path:
    """A local path of a stored file, checked against ``sha256`` (``Corrupt`` when it differs).

    On the local disk: the stored file itself (unchecked when no sha256 is given). On a bucket: this
    node's cached copy, fetched once and checked on every call, so ``sha256`` is required there.
    """
    if is_local():
        path = Path(default_storage.path(key))
        if sha256 is not None and sha256_of(path) != sha256:
            raise Corrupt(f"the stored bytes of {key} do not match their recorded sha256")
        return path
    if not sha256:
        raise ValueError(f"{key} is in remote storage: reading it needs its recorded sha256")
    return node_cache().path(key, sha256, _fetcher(key))


def local_model(item: Any) -> Path:
    """The local path of a model's primary file with every other file of it (external data) beside it,
    all checked. ``item``: a Variant or ModelVersion (``storage_key``, ``sha256``, ``files``)."""
    for entry in item.files or []:
        if entry.get("key") and entry["key"] != item.storage_key:
            local_path(entry["key"], entry.get("sha256"))
    return local_path(item.storage_key, item.sha256 or None)


def read_verified(key: str, sha256: str) -> tuple[bytes, Path]:
    """A stored file's bytes, hashed once as read, and its local path; ``Corrupt`` when they differ
    from ``sha256`` (a damaged cached copy is fetched again first; a damaged object stays refused)."""
    if is_local():
        path = Path(default_storage.path(key))
        blob = path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != sha256:
            raise Corrupt(f"the stored bytes of {key} do not match their recorded sha256")
        return blob, path
    return node_cache().read(key, sha256, _fetcher(key))


def _fetcher(key: str) -> Fetch:
    """Copy a stored file into an open local file, never holding it whole in memory."""
    def fetch(out: IO[bytes]) -> None:
        with _remote(key), default_storage.open(key, "rb") as handle:
            obj = getattr(handle, "obj", None)  # django-storages' S3File: its boto3 object
            if obj is not None:
                obj.download_fileobj(out)  # ranged GETs straight into the file
            else:
                shutil.copyfileobj(handle, out, CHUNK)
    return fetch


def _storage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions boto3 raises for an unreachable or refusing bucket (evaluated only when an
    exception is being matched, so the local default never imports boto3)."""
    try:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return ()
    return (BotoCoreError, ClientError, Boto3Error)


@contextmanager
def _remote(key: str) -> Iterator[None]:
    """Turn a bucket's failures into FileNotFoundError (no such key) or StorageUnavailable."""
    try:
        yield
    except FileNotFoundError:
        raise
    except _storage_errors() as exc:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchKey", "NotFound"}:
            raise FileNotFoundError(f"{key} is not in storage") from None
        raise StorageUnavailable(f"The artifact storage could not be reached or refused the request "
                                 f"({type(exc).__name__}).") from exc


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A private temporary directory under the work dir, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=work_dir()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
