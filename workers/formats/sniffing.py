"""Naming the format of an upload from its first bytes (pure: no Django).

``sniff`` is cheap and safe for the web process: it reads a few KB (plus a zip's member list),
never parses a model and never unpickles. It refuses pickles and torch.save checkpoints, other
formats (safetensors, HDF5, GGUF, ... named in the message) and empty or truncated files.
"""

from __future__ import annotations

import io
import pickletools
import struct
import zipfile
from pathlib import Path
from typing import Any

from workers.formats.archives import TORCHSCRIPT_MAX_MEMBERS
from workers.formats.common import FormatError, regular_size, show

ACCEPTED_FORMATS = (
    "ONNX (.onnx), a .zip holding one .onnx model with its external-data files, "
    "or TorchScript (.pt written by torch.jit.script/trace(...).save())"
)
CHECKPOINT_MESSAGE = (
    "This is a pickled PyTorch checkpoint (.pt/.pth/.bin made by torch.save); modelhub never unpickles "
    "uploads. Export it with torch.jit.script/trace(...).save() or torch.onnx.export and upload that."
)
PICKLE_MESSAGE = (
    "This is a Python pickle (for example a .pt/.pth/.bin checkpoint made by torch.save, or joblib output); "
    "modelhub never unpickles uploads. Export the model with torch.jit.script/trace(...).save() or "
    "torch.onnx.export and upload that."
)

SNIFF_BYTES = 4096
SNIFF_MAX_FIELDS = 1024  # top-level ModelProto fields walked by sniff before it stops counting
SNIFF_MAX_CENTRAL_DIR = 16 << 20  # a zip whose member list alone is bigger is refused
# Top-level fields of onnx.ModelProto and their protobuf wire types (0 varint, 2 length-delimited).
_MODEL_FIELDS: dict[int, int] = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


def sniff(path: Path, filename: str) -> str:
    """Name the format of an upload from its first bytes: "onnx", "torchscript" or "archive".

    Cheap and safe for the web process: reads a few KB (plus a zip's member list), never parses
    a model and never unpickles. ``filename`` only sharpens messages; the content decides.
    Refuses pickles and torch.save checkpoints, other formats, and empty or truncated files.
    """
    size = regular_size(Path(path))
    if size == 0:
        raise FormatError("The file is empty. Upload " + ACCEPTED_FORMATS + ".")
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
        if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            return _sniff_zip(Path(path), size, handle)
        if head[:1] == b"\x80" and head[1:2] in (b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"):
            raise FormatError(PICKLE_MESSAGE)
        problem = _onnx_layout_problem(handle, size)
    if problem is None:
        return "onnx"
    if _looks_like_text_pickle(head):
        raise FormatError(PICKLE_MESSAGE)
    raise FormatError(_unknown_format_message(head, filename, problem))


def _read_varint(buf: bytes, pos: int) -> tuple[int, int] | None:
    """Decode a protobuf varint at ``pos``; None when the bytes run out or it is over-long."""
    value = shift = 0
    for i in range(pos, min(len(buf), pos + 10)):
        value |= (buf[i] & 0x7F) << shift
        if not buf[i] & 0x80:
            return value, i + 1
        shift += 7
    return None


def _onnx_layout_problem(handle: Any, size: int) -> str | None:
    """Walk the top-level fields of a ModelProto by seeking (reads ~20 bytes per field).

    Returns None when the file is laid out like an ONNX model, else why not ("truncated" when a
    field runs past the end of the file).
    """
    pos, seen, ir_version = 0, set(), None
    for _ in range(SNIFF_MAX_FIELDS):
        if pos == size:
            break
        handle.seek(pos)
        buf = handle.read(20)
        tag = _read_varint(buf, 0)
        if tag is None:
            return "truncated" if seen else "not onnx"
        field_number, wire_type = tag[0] >> 3, tag[0] & 7
        if _MODEL_FIELDS.get(field_number) != wire_type:
            return "not onnx"
        value = _read_varint(buf, tag[1])
        if value is None:
            return "truncated"
        pos += value[1] if wire_type == 0 else value[1] + value[0]
        if pos > size:
            return "truncated"
        if field_number == 1:
            ir_version = value[0]
        seen.add(field_number)
    else:
        return None  # many metadata fields; the full parse in inspect_model decides
    if ir_version is not None and not 1 <= ir_version <= 1000:
        return "not onnx"
    return None if 7 in seen else ("not onnx" if 1 not in seen else "no graph")


def _looks_like_text_pickle(head: bytes) -> bool:
    """Protocol 0/1 pickles have no magic; recognise them by parsing opcodes (nothing runs)."""
    if head[:1] not in (b"(", b"c", b"}", b"]", b")", b"I", b"N", b"S", b"V", b"l", b"d", b"i"):
        return False
    count = 0
    try:
        for opcode, _arg, _pos in pickletools.genops(io.BytesIO(head)):
            count += 1
            if opcode.name == "STOP" or count >= 8:
                return count >= 2
    except Exception:  # noqa: BLE001 - any parse failure just means "not a pickle we recognise"
        return count >= 6
    return False


def _unknown_format_message(head: bytes, filename: str, problem: str) -> str:
    suffix = Path(filename).suffix.lower()
    what = _foreign_format(head, suffix)
    if what is None and problem in ("truncated", "no graph"):
        return (
            "The file starts like an ONNX model but is "
            + ("cut short (truncated upload?)" if problem == "truncated" else "missing its graph")
            + "; upload the complete .onnx file."
        )
    if what is None:
        what = "not a format modelhub knows" + (f" (it is named {suffix} but its content is not)" if suffix else "")
    return f"This file is {what}. modelhub accepts {ACCEPTED_FORMATS}."


def _foreign_format(head: bytes, suffix: str) -> str | None:
    if len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "a safetensors file (weights only, no graph); export the model with torch.onnx.export instead"
    if suffix == ".safetensors":
        return "named .safetensors (weights only, no graph); export the model with torch.onnx.export instead"
    for magic, name in (
        (b"\x89HDF\r\n\x1a\n", "an HDF5/Keras file"),
        (b"GGUF", "a GGUF file"),
        (b"\x93NUMPY", "a numpy .npy array (datasets are uploaded separately as .npz)"),
        (b"\x1f\x8b", "gzip-compressed (only .zip archives are accepted)"),
    ):
        if head.startswith(magic):
            return name
    if head[4:8] == b"TFL3":
        return "a TensorFlow Lite model"
    if head[257:262] == b"ustar":
        return "a tar archive (only .zip archives are accepted)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<")):
        return "an HTML/XML document (an error page saved instead of the model?)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "a text file"


def _zip_central_directory(handle: Any, size: int) -> tuple[int, int]:
    """(member count, central directory size) from the end-of-central-directory record."""
    tail_len = min(size, 65_557)
    handle.seek(size - tail_len)
    tail = handle.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 22:
        raise FormatError("The .zip is truncated or corrupt (no end-of-archive record); upload it again.")
    count, cd_size = struct.unpack_from("<HI", tail, at + 10)
    if count == 0xFFFF or cd_size == 0xFFFFFFFF:  # zip64: the real numbers sit in the zip64 record
        locator = tail[at - 20 : at] if at >= 20 else b""
        if not locator.startswith(b"PK\x06\x07"):
            raise FormatError("The .zip is truncated or corrupt (bad zip64 record); upload it again.")
        handle.seek(struct.unpack_from("<Q", locator, 8)[0])
        record = handle.read(56)
        if not record.startswith(b"PK\x06\x06") or len(record) < 56:
            raise FormatError("The .zip is truncated or corrupt (bad zip64 record); upload it again.")
        count, cd_size = struct.unpack_from("<QQ", record, 32)
    return count, cd_size


def _sniff_zip(path: Path, size: int, handle: Any) -> str:
    count, cd_size = _zip_central_directory(handle, size)
    if count > TORCHSCRIPT_MAX_MEMBERS or cd_size > SNIFF_MAX_CENTRAL_DIR:
        raise FormatError(f"The .zip lists {count:,} members; that is far more than a model needs.")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FormatError("The .zip is truncated or corrupt; upload it again.") from exc
    layout = _torch_layout(names)
    if layout == "checkpoint":
        raise FormatError(CHECKPOINT_MESSAGE)
    if layout is not None:
        return layout
    return _onnx_archive_kind(names)


def _torch_layout(names: list[str]) -> str | None:
    """"torchscript" for a torch.jit.save archive, "checkpoint" for torch.save, None otherwise."""
    pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if not pickles:
        return None
    prefix = pickles[0][: -len("data.pkl")]
    has_code = any(n.startswith(prefix + "code/") for n in names)
    if has_code and prefix + "constants.pkl" in names:
        return "torchscript"
    return "checkpoint"


def _onnx_archive_kind(names: list[str]) -> str:
    models = [n for n in names if n.lower().endswith(".onnx")]
    if len(models) == 1:
        return "archive"
    if len(models) > 1:
        raise FormatError(
            f"The .zip holds {len(models)} .onnx models ({', '.join(show(n) for n in models[:5])}); "
            "upload one model per archive."
        )
    if any(n.endswith("serialized_exported_program.json") or n.endswith("/archive_format") for n in names):
        raise FormatError("torch.export .pt2 programs are not accepted; export the model with torch.onnx.export.")
    if names and all(n.endswith(".npy") for n in names):
        raise FormatError("This is a numpy .npz dataset, not a model; upload it as a dataset of a model version.")
    raise FormatError(f"The .zip holds no .onnx model. modelhub accepts {ACCEPTED_FORMATS}.")
