"""A node's local, size-capped cache of stored artifacts (no Django: a directory and file locks).

Entries are named by their storage key, and storage keys are content-addressed (``variants/<sha256>/
model.onnx``, ``models/<upload sha256>/<file>``): a key never names other bytes, so an entry never
goes stale, and a model's external-data files sit beside it under the same directory as onnxruntime
expects. Every entry is checked against the sha256 its caller recorded, when it is filled and each
time it is used.

Layout under ``root``: ``entries/<key>`` (whole, checked files only), ``tmp/`` (fills in progress,
renamed into ``entries/`` when whole and checked, so a killed process leaves no partial entry),
``locks/`` (fcntl lock files: 256 stripes for fills of one key, one for eviction). Several
processes of a node may fill it at once: one fetches a key while the others wait for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024
STALE_TMP_S = 3600  # a fill older than this was left by a killed process


class CacheError(ValueError):
    """A key that cannot name a cache entry."""


class Corrupt(ValueError):
    """The fetched bytes do not match the recorded sha256 (the stored object is damaged)."""


Fetch = Callable[[IO[bytes]], None]


def sha256_of(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class BlobCache:
    """The cache of one node. ``max_bytes`` is the cap; entries used in the last ``grace_s`` seconds
    are never evicted (a path handed out must still be there when a benchmark child opens it)."""

    def __init__(self, root: Path, max_bytes: int, *, grace_s: float = 300.0) -> None:
        self.root, self.max_bytes, self.grace_s = Path(root), max_bytes, grace_s
        self.entries, self.tmp, self.locks = self.root / "entries", self.root / "tmp", self.root / "locks"

    def path(self, key: str, sha256: str, fetch: Fetch) -> Path:
        """A local path of ``key`` whose content matches ``sha256``, fetched with ``fetch`` on a miss."""
        return self._get(key, sha256, fetch, read=False)[1]

    def read(self, key: str, sha256: str, fetch: Fetch) -> tuple[bytes, Path]:
        """The bytes of ``key`` (hashed once, as read) and the entry's path."""
        blob, path = self._get(key, sha256, fetch, read=True)
        assert blob is not None
        return blob, path

    def discard(self, key: str) -> None:
        """Forget an entry (its stored object was deleted)."""
        with self._lock(self._stripe(key)):
            self._entry(key).unlink(missing_ok=True)

    def total_bytes(self) -> int:
        """The bytes the entries take now."""
        return sum(size for _, size, _ in self._listing())

    def _get(self, key: str, sha256: str, fetch: Fetch, *, read: bool) -> tuple[bytes | None, Path]:
        entry = self._entry(key)
        hit = self._hit(entry, sha256, read)
        if hit is not None:
            return hit, entry
        # One process of the node fetches a key; the others wait here and then find it.
        with self._lock(self._stripe(key)):
            hit = self._hit(entry, sha256, read)
            filled = hit is None
            if filled:
                self._fill(entry, sha256, fetch)
                hit = self._hit(entry, sha256, read)
        if hit is None:
            raise Corrupt(f"the cached copy of {key} changed while it was being read")
        if filled:  # only a fill makes the cache grow
            self._make_room(keep=entry)
        return hit, entry

    def _hit(self, entry: Path, sha256: str, read: bool) -> bytes | None:
        """The entry's bytes (b"" when not asked to read) if it is there and matches; a damaged
        entry is removed so that the caller fetches it again."""
        try:
            blob = entry.read_bytes() if read else b""
            digest = hashlib.sha256(blob).hexdigest() if read else sha256_of(entry)
        except FileNotFoundError:
            return None
        if digest != sha256:
            log.warning("cache entry %s does not match its sha256; removed and fetched again", entry.name)
            entry.unlink(missing_ok=True)
            return None
        with contextlib.suppress(FileNotFoundError):
            os.utime(entry)  # mtime is the LRU clock (atime is often off: noatime mounts)
        return blob

    def _fill(self, entry: Path, sha256: str, fetch: Fetch) -> None:
        """Fetch into a temporary file, check it, then rename it into place (atomic on one file system)."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        part = self.tmp / f"{uuid.uuid4().hex}.part"
        try:
            with part.open("wb") as handle:
                fetch(handle)
                handle.flush()
                os.fsync(handle.fileno())
            if sha256_of(part) != sha256:
                raise Corrupt(f"the stored bytes of {entry.relative_to(self.entries)} do not match their "
                              "recorded sha256")
            entry.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, entry)
        finally:
            part.unlink(missing_ok=True)

    def _make_room(self, *, keep: Path) -> None:
        """Evict least-recently-used entries until the cache is under its cap (never ``keep``, never
        one used within the grace period); remove fills left by killed processes."""
        with self._lock("evict"):
            listing = sorted(self._listing(), key=lambda item: item[2])
            total = sum(size for _, size, _ in listing)
            recent = time.time() - self.grace_s
            for path, size, used in listing:
                if total <= self.max_bytes:
                    break
                if path != keep and used < recent:
                    path.unlink(missing_ok=True)
                    total -= size
            if total > self.max_bytes:
                log.warning("node cache holds %d MB over its cap of %d MB (entries in use)",
                            total // 2**20, self.max_bytes // 2**20)
            self._remove_stale_fills()

    def _listing(self) -> Iterator[tuple[Path, int, float]]:
        """(path, size, last use) of every entry."""
        for path in self.entries.rglob("*") if self.entries.exists() else ():
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                if path.is_file():
                    yield path, stat.st_size, stat.st_mtime

    def _remove_stale_fills(self) -> None:
        cutoff = time.time() - STALE_TMP_S
        for part in self.tmp.glob("*.part") if self.tmp.exists() else ():
            with contextlib.suppress(FileNotFoundError):
                if part.stat().st_mtime < cutoff:
                    part.unlink()

    def _entry(self, key: str) -> Path:
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts) or "\\" in key or "\0" in key:
            raise CacheError(f"{key!r} is not a relative storage key")
        return self.entries.joinpath(*parts)

    @staticmethod
    def _stripe(key: str) -> str:
        return "fill-" + hashlib.sha256(key.encode()).hexdigest()[:2]

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """An exclusive fcntl lock on ``locks/<name>``, shared by every process of the node."""
        self.locks.mkdir(parents=True, exist_ok=True)
        with (self.locks / name).open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
