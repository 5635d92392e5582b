"""What every step of the intake shares: its refusal error, and reading and quoting uploads safely
(pure: no Django)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from workers.errors import EngineError

CHUNK_BYTES = 1 << 20
UNSAFE_NAME_CHARS = frozenset('\\:*?"<>|')  # in a path a model or an archive names


class FormatError(EngineError, ValueError):
    """An uploaded model or dataset is refused; the message says what to do instead."""


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (never the whole file in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def show(text: str, limit: int = 120) -> str:
    """A user-controlled string made safe to quote in a message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def regular_size(path: Path, what: str = "The file") -> int:
    """The size of a regular file; FormatError (naming it ``what``) when it is missing or not one."""
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise FormatError(f"{what} is missing.") from exc
    if not stat.S_ISREG(info.st_mode):
        raise FormatError(f"{what} is not a regular file.")
    return info.st_size


def mb(n: int) -> str:
    """A size for a message: bytes up to 10 MB, then MB with one decimal."""
    return f"{n / 1e6:,.1f} MB" if n >= 10_000_000 else f"{n:,} bytes"
