"""Zip archives of uploads: every member checked from the central directory before a byte is
decompressed, then streamed out under the same limits (pure: no Django)."""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from pathlib import Path

from workers.formats.common import CHUNK_BYTES, UNSAFE_NAME_CHARS, FormatError, mb, show

TORCHSCRIPT_MAX_MEMBERS = 100_000
RATIO_FLOOR_BYTES = 1 << 20  # members smaller than this cannot be bombs; tiny files of zeros compress >100x


def _check_member_name(name: str) -> list[str]:
    shown = show(name)
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise FormatError(f"The archive member {shown} has an absolute path; archives must hold relative paths.")
    if any(ord(c) < 32 or ord(c) == 127 or c in UNSAFE_NAME_CHARS for c in name):
        raise FormatError(f"The archive member {shown} has a backslash, colon, wildcard or control character in its name.")
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise FormatError(f"The archive member {shown} climbs out of the archive ('..') or is not a plain path.")
    return parts


def check_zip_members(infos: list[zipfile.ZipInfo], *, max_bytes: int, max_members: int, max_ratio: float) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """Check every member from the central directory, before a byte is decompressed; the files
    among them with their path parts."""
    if len(infos) > max_members:
        raise FormatError(f"The archive holds {len(infos):,} members; at most {max_members} are accepted.")
    files, seen, total = [], set(), 0
    for info in infos:
        parts = _check_member_name(info.filename)
        kind = stat.S_IFMT(info.external_attr >> 16)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise FormatError(f"The archive member {show(info.filename)} is a symbolic link; archives must hold plain files.")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise FormatError(f"The archive member {show(info.filename)} is not a plain file.")
        if info.flag_bits & 0x1:
            raise FormatError(f"The archive member {show(info.filename)} is encrypted; upload an unencrypted .zip.")
        key = "/".join(parts).lower()
        if key in seen:
            raise FormatError(f"The archive holds {show(info.filename)} twice; member names must be unique.")
        seen.add(key)
        if info.is_dir():
            continue
        total += info.file_size
        if total > max_bytes:
            raise FormatError(f"The archive unpacks to more than {mb(max_bytes)} (the upload limit); refused before unpacking.")
        if info.file_size > RATIO_FLOOR_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
            raise FormatError(
                f"The archive member {show(info.filename)} expands {info.file_size / max(info.compress_size, 1):,.0f}x "
                f"(limit {max_ratio:g}x); this looks like a zip bomb and was refused before unpacking."
            )
        files.append((info, parts))
    return files


def extract_archive(zip_path: Path, dest: Path, *, max_bytes: int, max_members: int = 64, max_ratio: float = 100.0) -> Path:
    """Unpack a .zip holding one .onnx model (and its external data) into ``dest``; return the .onnx path.

    Every member is checked from the archive's metadata first (relative names, no symlinks,
    declared sizes, compression ratio); sizes are enforced again while streaming. ``dest`` must
    be missing or empty; on refusal it is removed.
    """
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"extract_archive needs an empty destination, {dest} is not")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FormatError("The archive is not a readable .zip (truncated or corrupt); upload it again.") from exc
    with archive:
        members = check_zip_members(archive.infolist(), max_bytes=max_bytes, max_members=max_members, max_ratio=max_ratio)
        models = ["/".join(parts) for info, parts in members if info.filename.lower().endswith(".onnx")]
        if len(models) != 1:
            raise FormatError(
                f"The archive must hold exactly one .onnx model; it holds {len(models)}"
                + (f" ({', '.join(show(m) for m in models[:5])})." if models else ".")
            )
        dest.mkdir(parents=True, exist_ok=True)
        try:
            budget = max_bytes
            for info, parts in members:
                budget -= _extract_member(archive, info, dest.joinpath(*parts), budget)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    return dest.joinpath(*models[0].split("/"))


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int) -> int:
    """Stream one member to a new file (O_EXCL | O_NOFOLLOW); refuse it when it outgrows its declaration."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with archive.open(info) as source, os.fdopen(fd, "wb") as sink:
            while chunk := source.read(CHUNK_BYTES):
                written += len(chunk)
                if written > info.file_size or written > budget:
                    raise FormatError(f"The archive member {show(info.filename)} is larger than its header says; refused.")
                sink.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise FormatError(f"The archive member {show(info.filename)} is corrupt (bad CRC or data); upload it again.") from exc
    except FileExistsError as exc:
        raise FormatError(f"The archive holds {show(info.filename)} twice; member names must be unique.") from exc
    return written
