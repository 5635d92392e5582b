"""Model and dataset files in Django storage under content-addressed keys.

Uploads are streamed to a local temporary file while hashed and size-capped, then saved under
``<kind>/<sha256>/<server-chosen name>``: a client's file name never reaches a path. Going
through Django's storage API lets S3-compatible storage replace the local disk when workers run
on other machines; ``local_path`` then fetches a copy.
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
from typing import IO

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

CHUNK = 1024 * 1024


class TooLarge(ValueError):
    """An upload is over its size cap (answered 413)."""


@dataclass(frozen=True)
class Received:
    """An upload streamed to a local temporary file."""

    path: Path
    sha256: str
    size: int


def work_dir() -> Path:
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
    killed while writing it (storage writes in place): a file of another size is that remnant and
    is replaced, never recorded as the artifact.
    """
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
    """Delete stored files, ignoring ones already gone."""
    for key in keys:
        if key and default_storage.exists(key):
            default_storage.delete(key)


def local_path(key: str) -> Path:
    """A local path of a stored file (the file itself on local storage, else a cached copy)."""
    try:
        return Path(default_storage.path(key))
    except NotImplementedError:
        target = work_dir() / "cache" / key
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with default_storage.open(key, "rb") as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
        return target


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A private temporary directory under the work dir, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=work_dir()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
