"""Safe inspection of model files and datasets (pure: no Django).

This module never unpickles anything. It knows the tensor signature of a model and
the rules a dataset must follow to be used with it.

The intake has three steps of rising cost and risk:

- ``sniff`` (web process): names the format from the first few KB; refuses pickles, torch.save
  checkpoints, other formats and truncated files.
- ``inspect_in_subprocess`` (worker): runs ``inspect_model`` in a fresh, resource-limited child
  with a scrubbed environment, sandboxed (``workers.sandbox``: no network, read-only file system
  but for its scratch directory; ``workers.intake_child``). Every external-data path and archive
  member is checked from metadata before any loader touches a file; only then do the ONNX
  checker and an onnxruntime session (or ``torch.jit.load``, only ever in that child) run.
- ``check_dataset``: an .npz checked against the model's signature, headers before data.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import io
import json
import os
import pickletools
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

# Element types we can feed and read. Keys are ONNX TensorProto enum names in lower case.
ONNX_ELEM_TYPES: dict[int, str] = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
}


class FormatError(ValueError):
    """An uploaded model or dataset is refused; the message says what to do instead."""


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output: element type and shape (str entries are symbolic dims)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(name=data["name"], dtype=data["dtype"], shape=tuple(data["shape"]))


@dataclass(frozen=True)
class Signature:
    """The inputs and outputs of a model, as stored on ModelVersion.signature."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        return cls(
            inputs=tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
            extra=dict(data.get("extra", {})),
        )

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]


def _value_info_spec(value_info: Any) -> TensorSpec:
    tensor_type = value_info.type.tensor_type
    dims: list[int | str] = []
    for i, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or f"dim{i}")
    dtype = ONNX_ELEM_TYPES.get(tensor_type.elem_type, f"onnx:{tensor_type.elem_type}")
    return TensorSpec(name=value_info.name, dtype=dtype, shape=tuple(dims))


def signature_from_onnx_model(model: Any) -> Signature:
    """Read the signature of a loaded onnx.ModelProto (initializers are not inputs)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(_value_info_spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_value_info_spec(v) for v in model.graph.output)
    return Signature(inputs=inputs, outputs=outputs)


def signature_from_onnx(path: Path) -> Signature:
    """Read the signature of an ONNX file without loading external weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return signature_from_onnx_model(model)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Load every array of an .npz dataset, refusing object arrays (they need pickle)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise FormatError(
                "The dataset holds Python objects, which need pickle to load; save plain numeric "
                "arrays with numpy.savez instead."
            ) from exc
        raise FormatError(f"The dataset is not a readable .npz file: {exc}") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise FormatError(f"The dataset is not a readable .npz file: {exc}") from exc


def model_inputs(arrays: dict[str, np.ndarray], signature: Signature) -> dict[str, np.ndarray]:
    """The arrays of a dataset that feed the model, cast to the signature's element types."""
    return {spec.name: arrays[spec.name].astype(spec.dtype, copy=False) for spec in signature.inputs}



# ---------------------------------------------------------------------------------------------
# Safe intake: sniff (web process), inspect (worker, in a sandboxed child), datasets.
# ---------------------------------------------------------------------------------------------

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

CHUNK_BYTES = 1 << 20
SNIFF_BYTES = 4096
PROTOBUF_LIMIT = 2**31 - 1  # one protobuf message cannot be larger; bigger models need external data
SNIFF_MAX_FIELDS = 1024  # top-level ModelProto fields walked by sniff before it stops counting
SNIFF_MAX_CENTRAL_DIR = 16 << 20  # a zip whose member list alone is bigger is refused
TORCHSCRIPT_MAX_MEMBERS = 100_000
RATIO_FLOOR_BYTES = 1 << 20  # members smaller than this cannot be bombs; tiny files of zeros compress >100x

# What onnxruntime 1.31.1 loads, found by probing it (runtime_limits()); used only when probing fails.
# Note: ORT's schema registry already knows ai.onnx opset 27, but a session refuses it ("under
# development"); the released limit is 26, and IR version 14 (onnx 1.23's default) is refused.
FALLBACK_MAX_IR_VERSION = 13
FALLBACK_MAX_OPSETS: dict[str, int] = {"": 26, "ai.onnx.ml": 5, "com.microsoft": 1}

ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
# PyOp runs Python; EPContext and Snpe point at or embed native binaries for an execution provider.
DENIED_OPS = frozenset({("com.microsoft", "PyOp"), ("com.microsoft", "EPContext"), ("com.microsoft", "Snpe")})

# Bits per element of ONNX tensor types (strings have no fixed size and are left out).
_ELEM_BITS: dict[int, int] = {
    1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 14: 64, 15: 128,
    16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2, 27: 6, 28: 6,
}
# Top-level fields of onnx.ModelProto and their protobuf wire types (0 varint, 2 length-delimited).
_MODEL_FIELDS: dict[int, int] = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_UNSAFE_NAME_CHARS = frozenset('\\:*?"<>|')

_SANDBOXED = False  # set by workers.intake_child: the only place TorchScript is ever loaded


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (never the whole file in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _show(text: str, limit: int = 120) -> str:
    """A user-controlled string made safe to quote in a message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _regular_size(path: Path, what: str = "The file") -> int:
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise FormatError(f"{what} is missing.") from exc
    if not stat.S_ISREG(info.st_mode):
        raise FormatError(f"{what} is not a regular file.")
    return info.st_size


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 10_000_000 else f"{n:,} bytes"


# --- sniff ------------------------------------------------------------------------------------


def sniff(path: Path, filename: str) -> str:
    """Name the format of an upload from its first bytes: "onnx", "torchscript" or "archive".

    Cheap and safe for the web process: reads a few KB (plus a zip's member list), never parses
    a model and never unpickles. ``filename`` only sharpens messages; the content decides.
    Refuses pickles and torch.save checkpoints, other formats, and empty or truncated files.
    """
    size = _regular_size(Path(path))
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
            f"The .zip holds {len(models)} .onnx models ({', '.join(_show(n) for n in models[:5])}); "
            "upload one model per archive."
        )
    if any(n.endswith("serialized_exported_program.json") or n.endswith("/archive_format") for n in names):
        raise FormatError("torch.export .pt2 programs are not accepted; export the model with torch.onnx.export.")
    if names and all(n.endswith(".npy") for n in names):
        raise FormatError("This is a numpy .npz dataset, not a model; upload it as a dataset of a model version.")
    raise FormatError(f"The .zip holds no .onnx model. modelhub accepts {ACCEPTED_FORMATS}.")


# --- runtime limits ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeLimits:
    """The newest IR version and opsets the installed onnxruntime creates a session for."""

    max_ir_version: int
    max_opsets: dict[str, int]
    probed: bool


def _probe_model(ir_version: int, opsets: dict[str, int]) -> bytes:
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = ir_version
    return model.SerializeToString()


def _loads(blob: bytes) -> bool:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    try:
        ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - "does not load" is the answer we are probing for
        return False
    return True


def _schema_max_versions() -> dict[str, int]:
    try:
        from onnxruntime.capi import _pybind_state

        found: dict[str, int] = {}
        for schema in _pybind_state.get_all_operator_schema():
            found[schema.domain] = max(found.get(schema.domain, 0), schema.since_version)
        return found
    except Exception:  # noqa: BLE001 - private API; fall back to our constants
        return {}


def _probe_highest(start: int, floor: int, loads: Any) -> int | None:
    for version in range(start, max(floor, start - 12), -1):
        if loads(version):
            return version
    return None


@functools.lru_cache(maxsize=1)
def runtime_limits() -> RuntimeLimits:
    """Probe onnxruntime with tiny models for the newest IR version and opsets it accepts.

    ORT's schema registry can list an opset that is still "under development" and that a session
    refuses, so the schema is only where the probe starts. Falls back to documented constants.
    """
    import onnx

    base = {"": 13}
    ir = _probe_highest(onnx.IR_VERSION + 1, 3, lambda v: _loads(_probe_model(v, base)))
    if ir is None:
        return RuntimeLimits(FALLBACK_MAX_IR_VERSION, dict(FALLBACK_MAX_OPSETS), probed=False)
    schema = _schema_max_versions()
    opsets: dict[str, int] = {}
    for domain, fallback in FALLBACK_MAX_OPSETS.items():
        start = max(schema.get(domain, 0), fallback) + 1
        extra = {} if domain == "" else base
        found = _probe_highest(start, 1, lambda v, d=domain, e=extra: _loads(_probe_model(ir, {**e, d: v})))
        opsets[domain] = found if found is not None else fallback
    return RuntimeLimits(ir, opsets, probed=True)


# --- inspection result ------------------------------------------------------------------------


class FileEntry(NamedTuple):
    """One file of a model: path relative to the model's root, its SHA-256 and size in bytes."""

    path: str
    sha256: str
    size: int


@dataclass
class Inspection:
    """What the intake learned about a model; stored on ModelVersion (to_dict / from_dict)."""

    format: str
    signature: Signature
    sha256: str
    total_size: int
    files: list[FileEntry]
    ir_version: int | None = None
    opset: int | None = None
    op_domains: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    primary: str = ""  # path of the model file among ``files``
    root: str | None = None  # directory ``files`` are relative to (None: a temporary one, now gone)
    producer: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "signature": self.signature.to_dict(),
            "sha256": self.sha256,
            "total_size": self.total_size,
            "files": [entry._asdict() for entry in self.files],
            "ir_version": self.ir_version,
            "opset": self.opset,
            "op_domains": list(self.op_domains),
            "notes": list(self.notes),
            "primary": self.primary,
            "root": self.root,
            "producer": self.producer,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Inspection:
        files = [FileEntry(**f) if isinstance(f, dict) else FileEntry(*f) for f in data["files"]]
        return cls(
            format=data["format"],
            signature=Signature.from_dict(data["signature"]),
            sha256=data["sha256"],
            total_size=int(data["total_size"]),
            files=files,
            ir_version=data.get("ir_version"),
            opset=data.get("opset"),
            op_domains=list(data.get("op_domains", [])),
            notes=list(data.get("notes", [])),
            primary=data.get("primary", ""),
            root=data.get("root"),
            producer=data.get("producer", ""),
        )


# --- inspect_model ----------------------------------------------------------------------------


def inspect_model(path: Path, *, max_bytes: int, workdir: Path | None = None) -> Inspection:
    """Fully check an uploaded model and return its Inspection; FormatError says why not.

    Meant for a worker, and for uploads only through inspect_in_subprocess (a hostile model may
    crash the loaders). ``workdir``: an empty directory the caller owns; an archive is extracted
    there (otherwise into a temporary directory that is removed afterwards).
    """
    path = Path(path)
    size = _regular_size(path, "The model file")
    if size > max_bytes:
        raise FormatError(f"The model file is {_mb(size)}, over the upload limit of {_mb(max_bytes)}.")
    kind = sniff(path, path.name)
    if kind == "onnx":
        return _inspect_onnx(path, root=path.parent, max_bytes=max_bytes, exclusive=False)
    if kind == "torchscript":
        return _inspect_torchscript(path, max_bytes=max_bytes)
    if workdir is not None:
        return _inspect_archive(path, Path(workdir), max_bytes=max_bytes, keep=True)
    with tempfile.TemporaryDirectory(prefix="modelhub-archive-") as tmp:
        return _inspect_archive(path, Path(tmp) / "model", max_bytes=max_bytes, keep=False)


def _inspect_archive(path: Path, dest: Path, *, max_bytes: int, keep: bool) -> Inspection:
    model_path = extract_archive(path, dest, max_bytes=max_bytes)
    inspection = _inspect_onnx(model_path, root=dest, max_bytes=max_bytes, exclusive=True)
    inspection.format = "archive"
    inspection.notes.append(f"Extracted from a .zip of {len(inspection.files)} file(s); sha256 is the .onnx's.")
    if not keep:
        inspection.root = None
    return inspection


def _inspect_onnx(model_path: Path, *, root: Path, max_bytes: int, exclusive: bool) -> Inspection:
    size = model_path.stat().st_size
    if size > PROTOBUF_LIMIT:
        raise FormatError(
            f"The .onnx file is {_mb(size)}; one protobuf cannot exceed 2 GB. Save the weights as external "
            "data (onnx.save_model(..., save_as_external_data=True)) and upload a .zip of the .onnx and its data files."
        )
    model = _parse_onnx(model_path)
    limits = runtime_limits()
    _check_ir_version(model, limits)
    _check_opsets(model, limits)
    domains = _check_operators(model)
    external = _check_external_data(model, model_path.parent.resolve(), max_bytes=max_bytes)
    data_files = {target.resolve() for target in external.values()} - {model_path.resolve()}
    paths = [model_path, *sorted(data_files)]
    total = sum(p.stat().st_size for p in paths)
    if total > max_bytes:
        raise FormatError(f"The model and its external data are {_mb(total)}, over the limit of {_mb(max_bytes)}.")
    if exclusive:
        _check_no_extra_files(root, paths)
    _run_checker(model_path)
    _prove_it_loads(model_path)
    files = _file_entries(root, paths)
    default_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return Inspection(
        format="onnx",
        signature=signature_from_onnx_model(model),
        sha256=files[0].sha256,
        total_size=total,
        files=files,
        ir_version=int(model.ir_version),
        opset=default_opset,
        op_domains=domains,
        primary=files[0].path,
        root=str(root),
        producer=" ".join(p for p in (model.producer_name, model.producer_version) if p),
        notes=[f"{len(external)} tensor(s) stored as external data."] if external else [],
    )


def _file_entries(root: Path, paths: list[Path]) -> list[FileEntry]:
    base = root.resolve()
    return [
        FileEntry(p.resolve().relative_to(base).as_posix(), sha256_file(p), p.stat().st_size) for p in paths
    ]


def _parse_onnx(path: Path) -> Any:
    """Parse the protobuf only: external data is not read and no file it names is touched."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, OSError) as exc:
        raise FormatError(
            "The file starts like ONNX but does not parse as an ONNX model (truncated or corrupt); "
            "upload the complete .onnx file."
        ) from exc


def _check_ir_version(model: Any, limits: RuntimeLimits) -> None:
    if model.ir_version > limits.max_ir_version:
        raise FormatError(
            f"The model has ONNX IR version {model.ir_version}; the installed onnxruntime loads IR version "
            f"{limits.max_ir_version} or older. Set model.ir_version = {min(10, limits.max_ir_version)} "
            "before onnx.save (or export with an older onnx) and upload again."
        )


def _opset_sets(model: Any) -> list[Any]:
    return [model.opset_import, *(function.opset_import for function in model.functions)]


def _check_opsets(model: Any, limits: RuntimeLimits) -> None:
    for opset_imports in _opset_sets(model):
        for opset in opset_imports:
            domain = "" if opset.domain == "ai.onnx" else opset.domain
            highest = limits.max_opsets.get(domain)
            if highest is not None and opset.version > highest:
                label = domain or "ai.onnx"
                raise FormatError(
                    f"The model uses opset {opset.version} of domain {label}; the installed onnxruntime supports "
                    f"up to opset {highest}. Export with opset_version={min(highest, 17 if not domain else highest)} "
                    "(or convert with onnx.version_converter) and upload again."
                )


def _node_containers(model: Any) -> Any:
    """The main graph, every nested subgraph, every local function and training graph (no recursion)."""
    stack = [model.graph, *model.functions]
    for info in model.training_info:
        stack.extend([info.initialization, info.algorithm])
    while stack:
        container = stack.pop()
        yield container
        for node in container.node:
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    stack.append(attribute.g)
                stack.extend(attribute.graphs)


def _check_operators(model: Any) -> list[str]:
    """Refuse ops outside the domain allow-list (local functions excepted) and denied ops."""
    local = {(f.domain, f.name) for f in model.functions}
    used: set[str] = set()
    for container in _node_containers(model):
        for node in container.node:
            domain = "" if node.domain == "ai.onnx" else node.domain
            if (domain, node.op_type) in DENIED_OPS or node.op_type == "PyOp":
                raise FormatError(
                    f"The model uses operator {domain or 'ai.onnx'}::{node.op_type}, which runs code or loads native "
                    "binaries outside the model; modelhub refuses it. Replace it with standard ONNX operators."
                )
            if (node.domain, node.op_type) in local:
                used.add(node.domain)
                continue
            if domain not in ALLOWED_DOMAINS:
                raise FormatError(
                    f"The model uses operator {node.op_type} from custom domain {_show(node.domain)}; modelhub only "
                    "runs operators of ai.onnx, ai.onnx.ml and com.microsoft (and functions defined in the model). "
                    "Custom-op libraries are never registered for uploads."
                )
            used.add(domain or "ai.onnx")
    return sorted(used)


def _all_tensors(model: Any) -> Any:
    """Every TensorProto of the model: initializers, sparse ones, and tensors held in attributes."""
    for container in _node_containers(model):
        yield from getattr(container, "initializer", ())
        for sparse in getattr(container, "sparse_initializer", ()):
            yield from (sparse.values, sparse.indices)
        attributes = [a for node in container.node for a in node.attribute]
        attributes.extend(getattr(container, "attribute_proto", ()))
        for attribute in attributes:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            sparse_tensors = list(attribute.sparse_tensors)
            if attribute.HasField("sparse_tensor"):
                sparse_tensors.append(attribute.sparse_tensor)
            for sparse in sparse_tensors:
                yield from (sparse.values, sparse.indices)


def _declared_bytes(tensor: Any, max_bytes: int) -> int | None:
    """Bytes a tensor's dims declare (None for strings); refuse negative or absurd declarations."""
    count = 1
    for dim in tensor.dims:
        if dim < 0:
            raise FormatError(f"Tensor {_show(tensor.name)} declares a negative dimension; the file is corrupt.")
        count *= dim
    bits = _ELEM_BITS.get(tensor.data_type)
    if bits is None:
        return None
    nbytes = (count * bits + 7) // 8
    if nbytes > max_bytes:
        raise FormatError(
            f"Tensor {_show(tensor.name)} declares {count:,} elements ({_mb(nbytes)}), more than the whole upload "
            f"limit of {_mb(max_bytes)}; the file is corrupt or hostile."
        )
    return nbytes


def _check_external_data(model: Any, model_dir: Path, *, max_bytes: int) -> dict[str, Path]:
    """Validate every external-data reference BEFORE anything opens it; location -> file path."""
    from onnx import TensorProto

    files: dict[str, Path] = {}
    for tensor in _all_tensors(model):
        expected = _declared_bytes(tensor, max_bytes)
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        target = _external_target(tensor.name, location, model_dir)
        _check_external_range(tensor.name, location, entries, target.stat().st_size, expected)
        files[location] = target
    return files


def _check_location(name: str, location: str) -> list[str]:
    """The parts of a plain relative path, or FormatError (the message never reads the target)."""
    where = f"Tensor {_show(name)} keeps its data in {_show(location)}, "
    if not location:
        raise FormatError(f"Tensor {_show(name)} is marked as external data but names no file; the file is corrupt.")
    if "_ORT_MEM_ADDR_" in location:
        raise FormatError(where + "onnxruntime's in-memory marker; uploads may only name files.")
    if location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise FormatError(where + "an absolute path; external data must sit beside the model (e.g. 'weights.bin').")
    if any(ord(c) < 32 or ord(c) == 127 or c in _UNSAFE_NAME_CHARS for c in location):
        raise FormatError(where + "which holds a backslash, colon, wildcard or control character; use a plain file name.")
    parts = location.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise FormatError(where + "which is not a plain relative path inside the model's directory ('..', '.' or '//').")
    return parts


def _external_target(name: str, location: str, model_dir: Path) -> Path:
    """Walk the location one component at a time with lstat: no symlink anywhere, no hardlink."""
    parts = _check_location(name, location)
    where = f"Tensor {_show(name)} keeps its data in {_show(location)}, "
    current = model_dir
    for index, part in enumerate(parts):
        current = current / part
        try:
            info = os.lstat(current)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise FormatError(
                where + "which is missing. Upload a .zip holding the .onnx and every external-data file it names."
            ) from exc
        if stat.S_ISLNK(info.st_mode):
            raise FormatError(where + "which is a symbolic link; external data must be plain files.")
        if index < len(parts) - 1 and not stat.S_ISDIR(info.st_mode):
            raise FormatError(where + "which is missing. Upload every external-data file the model names.")
    if not stat.S_ISREG(info.st_mode):
        raise FormatError(where + "which is not a regular file.")
    if info.st_nlink > 1:
        raise FormatError(where + "which is hard-linked to another file; external data must be plain files.")
    return current


def _check_external_range(name: str, location: str, entries: dict[str, str], file_size: int, expected: int | None) -> None:
    where = f"Tensor {_show(name)} in {_show(location)}"
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else file_size - offset
    except ValueError as exc:
        raise FormatError(f"{where} has a non-numeric offset or length; the file is corrupt.") from exc
    if offset < 0 or length < 0 or offset + length > file_size:
        raise FormatError(
            f"{where} reads bytes {offset:,}..{offset + length:,} but the file holds {file_size:,}; "
            "the external data is truncated or does not belong to this model."
        )
    if expected is not None and "length" in entries and length != expected:
        raise FormatError(f"{where} stores {length:,} bytes but its shape needs {expected:,}; the file is corrupt.")


def _check_no_extra_files(root: Path, used: list[Path]) -> None:
    wanted = {p.resolve() for p in used}
    extra = []
    for directory, _dirs, names in os.walk(root):
        extra.extend(str((Path(directory) / n).relative_to(root)) for n in names if (Path(directory) / n).resolve() not in wanted)
    if extra:
        raise FormatError(
            f"The archive holds file(s) the model does not use: {', '.join(_show(n) for n in sorted(extra)[:5])}. "
            "Zip only the .onnx and the external-data files it names."
        )


def _run_checker(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FormatError(f"The ONNX checker refused the model: {first[:400]}") from exc


def _ort_error_text(exc: Exception) -> str:
    text = str(exc)
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"/onnxruntime_src/\S+:\d+ [^\n]*?\) ", "", text)
    text = re.sub(r"Load model from \S+ failed:", "", text)
    return text.strip().splitlines()[0][:400] if text.strip() else type(exc).__name__


def _prove_it_loads(path: Path) -> None:
    """Create a CPU session with one thread, as serving will (full graph optimizations)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.allow_released_opsets_only", "1")
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types
        text = _ort_error_text(exc)
        if "bad_alloc" in text or "allocate" in text.lower():
            raise MemoryError(text) from exc
        raise FormatError(f"onnxruntime cannot load the model: {text}") from exc


# --- archives ---------------------------------------------------------------------------------


def _check_member_name(name: str) -> list[str]:
    shown = _show(name)
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise FormatError(f"The archive member {shown} has an absolute path; archives must hold relative paths.")
    if any(ord(c) < 32 or ord(c) == 127 or c in _UNSAFE_NAME_CHARS for c in name):
        raise FormatError(f"The archive member {shown} has a backslash, colon, wildcard or control character in its name.")
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise FormatError(f"The archive member {shown} climbs out of the archive ('..') or is not a plain path.")
    return parts


def _check_zip_members(infos: list[zipfile.ZipInfo], *, max_bytes: int, max_members: int, max_ratio: float) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """Check every member from the central directory, before a byte is decompressed."""
    if len(infos) > max_members:
        raise FormatError(f"The archive holds {len(infos):,} members; at most {max_members} are accepted.")
    files, seen, total = [], set(), 0
    for info in infos:
        parts = _check_member_name(info.filename)
        kind = stat.S_IFMT(info.external_attr >> 16)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise FormatError(f"The archive member {_show(info.filename)} is a symbolic link; archives must hold plain files.")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise FormatError(f"The archive member {_show(info.filename)} is not a plain file.")
        if info.flag_bits & 0x1:
            raise FormatError(f"The archive member {_show(info.filename)} is encrypted; upload an unencrypted .zip.")
        key = "/".join(parts).lower()
        if key in seen:
            raise FormatError(f"The archive holds {_show(info.filename)} twice; member names must be unique.")
        seen.add(key)
        if info.is_dir():
            continue
        total += info.file_size
        if total > max_bytes:
            raise FormatError(f"The archive unpacks to more than {_mb(max_bytes)} (the upload limit); refused before unpacking.")
        if info.file_size > RATIO_FLOOR_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
            raise FormatError(
                f"The archive member {_show(info.filename)} expands {info.file_size / max(info.compress_size, 1):,.0f}x "
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
        members = _check_zip_members(archive.infolist(), max_bytes=max_bytes, max_members=max_members, max_ratio=max_ratio)
        models = ["/".join(parts) for info, parts in members if info.filename.lower().endswith(".onnx")]
        if len(models) != 1:
            raise FormatError(
                f"The archive must hold exactly one .onnx model; it holds {len(models)}"
                + (f" ({', '.join(_show(m) for m in models[:5])})." if models else ".")
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
                    raise FormatError(f"The archive member {_show(info.filename)} is larger than its header says; refused.")
                sink.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise FormatError(f"The archive member {_show(info.filename)} is corrupt (bad CRC or data); upload it again.") from exc
    except FileExistsError as exc:
        raise FormatError(f"The archive holds {_show(info.filename)} twice; member names must be unique.") from exc
    return written


# --- TorchScript --------------------------------------------------------------------------------


def _inspect_torchscript(path: Path, *, max_bytes: int) -> Inspection:
    """Read the forward schema of a TorchScript archive; only ever inside the intake child."""
    if not _SANDBOXED:
        raise RuntimeError("TorchScript runs code when loaded; inspect it with inspect_in_subprocess, never in-process.")
    with zipfile.ZipFile(path) as archive:
        _check_zip_members(archive.infolist(), max_bytes=max_bytes, max_members=TORCHSCRIPT_MAX_MEMBERS, max_ratio=100.0)
    import torch

    torch.set_num_threads(1)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
        schema = module.forward.schema
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, AttributeError, ...
        raise FormatError(f"torch.jit.load cannot load this TorchScript archive: {torch_error_text(exc)}") from exc
    inputs = _torchscript_inputs(schema, _index_inputs(module))
    outputs = _torchscript_outputs(schema)
    size = path.stat().st_size
    sha = sha256_file(path)
    return Inspection(
        format="torchscript",
        signature=Signature(inputs=inputs, outputs=outputs, extra={"shapes": "from_dataset"}),
        sha256=sha,
        total_size=size,
        files=[FileEntry(path.name, sha, size)],
        primary=path.name,
        root=str(path.parent),
        notes=[
            f"TorchScript forward{str(schema)[len('forward'):][:300]}",
            "TorchScript keeps no shapes or dtypes: they come from the dataset at export.",
        ],
    )


_INTERPRETER_ERROR = "The following operation failed in the TorchScript interpreter"


def torch_error_text(exc: BaseException, limit: int = 300) -> str:
    """The line of a torch error that says what went wrong: the first one, except for an error raised
    by TorchScript code, whose first line is a generic header and whose last names the cause."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return (lines[-1] if lines[0].startswith(_INTERPRETER_ERROR) else lines[0])[:limit]


# (op, argument position) that only take integer tensors: an input feeding one of them holds indices.
_INDEX_USES = frozenset({("aten::embedding", 1), ("aten::embedding_bag", 1), ("aten::one_hot", 0)})


def _index_inputs(module: Any) -> set[int]:
    """Positions (after self) of forward inputs used directly as indices, e.g. token ids of an embedding."""
    try:
        graph_inputs = list(module.inlined_graph.inputs())[1:]
        return {i for i, value in enumerate(graph_inputs) if any((u.user.kind(), u.offset) in _INDEX_USES for u in value.uses())}
    except Exception:  # noqa: BLE001 - a guess only; float32 stays the default
        return set()


def _torchscript_inputs(schema: Any, index_inputs: set[int]) -> tuple[TensorSpec, ...]:
    inputs = []
    for position, argument in enumerate(list(schema.arguments)[1:]):  # the first one is self
        type_name = str(argument.type)
        if type_name == "Tensor":
            dtype = "int64" if position in index_inputs else "float32"
            inputs.append(TensorSpec(name=argument.name, dtype=dtype, shape=("batch", "?")))
        elif not argument.has_default_value():
            raise FormatError(
                f"forward() takes {argument.name!r} of type {type_name}; modelhub feeds tensors only. "
                "Wrap the model so that forward takes tensors."
            )
    if not inputs:
        raise FormatError("forward() takes no tensor inputs; modelhub feeds tensors by name.")
    return tuple(inputs)


def _torchscript_outputs(schema: Any) -> tuple[TensorSpec, ...]:
    returns = list(schema.returns)
    type_name = str(returns[0].type) if len(returns) == 1 else ""
    if type_name.startswith("Tuple[") and all(p.strip() == "Tensor" for p in type_name[6:-1].split(",")):
        count = type_name.count("Tensor")
        return tuple(TensorSpec(name=f"output_{i}", dtype="float32", shape=("batch", "?")) for i in range(count))
    name = returns[0].name if len(returns) == 1 and returns[0].name else "output"
    return (TensorSpec(name=name, dtype="float32", shape=("batch", "?")),)


# --- the sandboxed child ------------------------------------------------------------------------

CHILD_MODULE = "workers.intake_child"
_TEST_HOOKS = frozenset({"segfault", "sleep", "spin", "memory", "forge", "env"})


def _child_env(home: str) -> dict[str, str]:
    """Only what Python needs: no DATABASE_URL, REDIS_URL, SECRET_KEY or anything else of ours."""
    search_path = [entry or os.getcwd() for entry in sys.path]
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(search_path)),
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
    }


def signal_name(number: int) -> str:
    """The name of a signal number (``SIGSEGV``), or "unknown signal"."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


def inspect_in_subprocess(
    path: Path,
    *,
    max_bytes: int,
    memory_mb: int = 2048,
    cpu_seconds: int = 120,
    workdir: Path | None = None,
    wall_seconds: float | None = None,
    sandbox: bool = True,
    _test_hook: str | None = None,
) -> Inspection:
    """Run inspect_model in a fresh child process and return its Inspection.

    The child gets an address-space limit (``memory_mb``), a CPU-time limit, no core dumps, a
    scrubbed environment and an empty scratch directory as cwd and HOME; the parent also stops it
    after ``wall_seconds`` (default: ``cpu_seconds`` + 30). With ``sandbox`` (workers.sandbox) it
    also has no network and a read-only file system except its scratch directory and ``workdir``;
    when the host cannot give it one, the inspection fails with the reason. A crash, a timeout or
    running out of memory becomes a FormatError; the calling process is never at risk. This is the
    only way TorchScript uploads are ever loaded. ``_test_hook`` exists for the test-suite only.
    """
    if _test_hook is not None and _test_hook not in _TEST_HOOKS:
        raise ValueError(f"unknown test hook {_test_hook!r}")
    wall = float(wall_seconds if wall_seconds is not None else cpu_seconds + 30)
    with tempfile.TemporaryDirectory(prefix="modelhub-intake-") as scratch:
        command = [
            sys.executable, "-B", "-m", CHILD_MODULE, str(Path(path).resolve()),
            "--max-bytes", str(int(max_bytes)), "--memory-mb", str(int(memory_mb)),
            "--cpu-seconds", str(int(cpu_seconds)),
        ]
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)  # the sandbox makes only existing directories writable
            command += ["--workdir", str(Path(workdir).resolve())]
        if not sandbox:
            command.append("--no-sandbox")
        if _test_hook is not None:
            command += ["--test-hook", _test_hook]
        returncode, stdout, stderr_tail = run_child(command, scratch, wall)
    return _child_result(returncode, stdout, stderr_tail, memory_mb=memory_mb, cpu_seconds=cpu_seconds)


def run_child(command: list[str], scratch: str, wall: float, *, what: str = "Inspecting the model") -> tuple[int, bytes, str]:
    """Run a child (``python -m workers.<child> ...``) in its own session, with the scrubbed
    environment and ``scratch`` as cwd and HOME; return (exit status, stdout, stderr's last 4 KB).

    The child is killed with its whole process group when it runs past ``wall`` seconds (a
    FormatError that starts with ``what``) or when this process is interrupted meanwhile (e.g. by
    Celery's soft time limit), so that no child outlives its caller.
    """
    stderr_path = Path(scratch) / "stderr.log"
    with open(stderr_path, "wb") as stderr:
        child = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
            env=_child_env(scratch), cwd=scratch, start_new_session=True, close_fds=True,
        )
        try:
            stdout, _ = child.communicate(timeout=wall)
        except subprocess.TimeoutExpired:
            _kill_group(child.pid)  # the child is not reaped yet, so its group id is still its own
            child.communicate()
            raise FormatError(
                f"{what} took longer than {wall:.0f} s and was stopped; the model is too large or "
                "loading it hangs."
            ) from None
        except BaseException:
            _kill_group(child.pid)
            child.communicate()
            raise
    with open(stderr_path, "rb") as handle:
        handle.seek(max(0, stderr_path.stat().st_size - 4000))
        tail = handle.read().decode("utf-8", "replace")
    return child.returncode, stdout, tail


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _child_result(returncode: int, stdout: bytes, stderr_tail: str, *, memory_mb: int, cpu_seconds: int) -> Inspection:
    error: FormatError
    if returncode < 0:
        error = _signal_error(-returncode, memory_mb=memory_mb, cpu_seconds=cpu_seconds)
    else:
        payload = parse_payload(stdout)
        if payload is None:
            error = FormatError(f"The model loader exited with status {returncode} before reporting a result.")
        elif payload.get("ok"):
            return Inspection.from_dict(payload["inspection"])
        elif payload.get("kind") == "memory":
            error = FormatError(
                f"Loading the model needs more memory than the intake limit of {memory_mb} MB; "
                "upload a smaller model or ask an administrator to raise the limit."
            )
        elif payload.get("kind") == "sandbox":
            error = FormatError(f"The model was not inspected: {str(payload.get('message', ''))[:1000]}")
        elif payload.get("kind") == "format":
            error = FormatError(str(payload.get("message", "The model was refused.")))
        else:
            error = FormatError(f"The model could not be inspected: {str(payload.get('message', ''))[:400]}")
    error.stderr_tail = stderr_tail  # type: ignore[attr-defined]  # for logs, never shown to users
    raise error


def _signal_error(number: int, *, memory_mb: int, cpu_seconds: int) -> FormatError:
    label = f"signal {number}: {signal_name(number)}"
    if number == signal.SIGXCPU:
        return FormatError(f"Loading the model used more than {cpu_seconds} s of CPU time ({label}) and was stopped.")
    if number == signal.SIGKILL:
        return FormatError(
            f"The model loader was killed ({label}), most likely for exceeding the intake limits "
            f"({memory_mb} MB of memory, {cpu_seconds} s of CPU)."
        )
    return FormatError(
        f"The model loader crashed ({label}) while reading the model; the file is malformed or triggers a bug "
        "in the loader. Re-export the model with a current exporter and upload again."
    )


def parse_payload(stdout: bytes) -> dict[str, Any] | None:
    """The JSON object on the last line a child wrote to its result stream (None if there is none)."""
    lines = stdout.strip().splitlines()
    if not lines or len(stdout) > 16 << 20:
        return None
    try:
        payload = json.loads(lines[-1])
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


# --- datasets -----------------------------------------------------------------------------------

FLOAT_DTYPES = frozenset({"float16", "float32", "float64"})
INT_DTYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})
LABELS = "labels"
MAX_DATASET_ARRAYS = 256


@dataclass
class DatasetInfo:
    """What check_dataset learned about an .npz dataset."""

    sample_count: int
    arrays: dict[str, dict[str, Any]]
    has_labels: bool
    sha256: str
    size: int
    purpose: str = "validation"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_count": self.sample_count,
            "arrays": {name: dict(meta) for name, meta in self.arrays.items()},
            "has_labels": self.has_labels,
            "sha256": self.sha256,
            "size": self.size,
            "purpose": self.purpose,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetInfo:
        return cls(**{**data, "arrays": dict(data["arrays"]), "notes": list(data.get("notes", []))})


class _Header(NamedTuple):
    dtype: np.dtype
    shape: tuple[int, ...]


def check_dataset(
    path: Path,
    signature: Signature,
    *,
    max_bytes: int,
    purpose: str = "validation",
    max_unpacked_bytes: int | None = None,
) -> DatasetInfo:
    """Check an .npz dataset against a model's signature; FormatError names the offending array.

    Arrays are named after the model inputs (plus optional ``labels``); dim 0 counts samples.
    Names, dtypes and shapes are checked from the .npy headers before any data is read;
    ``max_unpacked_bytes`` (default 4 x ``max_bytes``) caps what the arrays unpack to.
    """
    what = f"The {purpose} dataset"
    size = _regular_size(Path(path), what)
    if size == 0:
        raise FormatError(f"{what} is empty; save the arrays with numpy.savez.")
    if size > max_bytes:
        raise FormatError(f"{what} is {_mb(size)}, over the limit of {_mb(max_bytes)}.")
    headers = _npz_headers(Path(path), what, max_unpacked_bytes or 4 * max_bytes)
    _check_array_names(headers, signature, what)
    notes: list[str] = []
    samples = _check_array_shapes(headers, signature, what, notes)
    specs = {spec.name: spec for spec in signature.inputs}
    for name, header in headers.items():
        _check_array_dtype(name, header.dtype, specs[name].dtype if name in specs else None, what)
    arrays = read_npz(Path(path))
    for name, array in arrays.items():
        _check_array_values(name, array, specs[name].dtype if name in specs else None, what)
    return DatasetInfo(
        sample_count=samples,
        arrays={name: {"dtype": str(h.dtype), "shape": list(h.shape)} for name, h in headers.items()},
        has_labels=LABELS in headers,
        sha256=sha256_file(Path(path)),
        size=size,
        purpose=purpose,
        notes=notes,
    )


def _npz_headers(path: Path, what: str, max_unpacked: int) -> dict[str, _Header]:
    """dtype and shape of every array, from the zip directory and .npy headers only."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_DATASET_ARRAYS:
                raise FormatError(f"{what} holds {len(infos)} arrays; at most {MAX_DATASET_ARRAYS} are accepted.")
            if sum(info.file_size for info in infos) > max_unpacked:
                raise FormatError(f"{what} unpacks to more than {_mb(max_unpacked)}; use fewer samples.")
            return {info.filename[:-4]: _npy_header(archive, info, what) for info in infos}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise FormatError(f"{what} is not a readable .npz file (save it with numpy.savez).") from exc


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> _Header:
    name = info.filename
    if not name.endswith(".npy"):
        raise FormatError(f"{what} holds {_show(name)}, which is not a numpy array; save it with numpy.savez.")
    with archive.open(info) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}[version]
            shape, _fortran, dtype = reader(handle)
        except (ValueError, KeyError, SyntaxError) as exc:
            raise FormatError(f"{what}: array {_show(name[:-4])} has an unreadable header; save it with numpy.savez.") from exc
    if dtype.hasobject:
        raise FormatError(
            f"{what}: array {_show(name[:-4])} holds Python objects, which need pickle to load; "
            "save plain numeric arrays with numpy.savez instead."
        )
    if dtype.names is not None or dtype.kind not in "biuf":
        raise FormatError(f"{what}: array {_show(name[:-4])} has dtype {dtype}; only numbers and booleans are accepted.")
    if int(np.prod(shape, dtype=object)) * dtype.itemsize > info.file_size:
        raise FormatError(f"{what}: array {_show(name[:-4])} declares shape {shape} but holds less data; the file is corrupt.")
    return _Header(dtype=dtype, shape=tuple(int(d) for d in shape))


def _check_array_names(headers: dict[str, _Header], signature: Signature, what: str) -> None:
    have = sorted(headers)
    missing = [name for name in signature.input_names if name not in headers]
    if missing:
        raise FormatError(
            f"{what} has no array for model input(s) {', '.join(map(_show, missing))}; it holds "
            f"{', '.join(map(_show, have)) or 'no arrays'}. Name each array after a model input (numpy.savez(path, "
            f"{missing[0]}=...))."
        )
    extra = [name for name in have if name not in signature.input_names and name != LABELS]
    if extra:
        hints = []
        for name in extra:
            close = difflib.get_close_matches(name, [*signature.input_names, LABELS], n=1)
            hints.append(_show(name) + (f" (did you mean {_show(close[0])}?)" if close else ""))
        raise FormatError(
            f"{what} holds array(s) the model does not take: {', '.join(hints)}. The model's inputs are "
            f"{', '.join(map(_show, signature.input_names))}; labels go in an array named 'labels'."
        )


def _check_array_shapes(headers: dict[str, _Header], signature: Signature, what: str, notes: list[str]) -> int:
    counts = {}
    for spec in signature.inputs:
        shape = headers[spec.name].shape
        _check_input_shape(spec, shape, what, notes)
        counts[spec.name] = shape[0]
    if LABELS in headers:
        if not headers[LABELS].shape:
            raise FormatError(f"{what}: array 'labels' is a scalar; it needs one label per sample.")
        counts[LABELS] = headers[LABELS].shape[0]
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{_show(name)}: {count}" for name, count in counts.items())
        raise FormatError(f"{what}: arrays disagree on the number of samples (first dimension): {listed}.")
    samples = next(iter(counts.values()), 0)
    if samples < 1:
        raise FormatError(f"{what} holds no samples; every array needs at least one row.")
    return samples


def _check_input_shape(spec: TensorSpec, shape: tuple[int, ...], what: str, notes: list[str]) -> None:
    expected = "[" + ", ".join(str(d) for d in spec.shape) + "]"
    if "?" in spec.shape:  # TorchScript: shapes are unknown; any array with a sample axis will do
        if not shape:
            raise FormatError(f"{what}: array {_show(spec.name)} is a scalar; it needs a first (samples) dimension.")
        return
    if not spec.shape:
        raise FormatError(f"{what}: model input {_show(spec.name)} is a scalar, which datasets cannot feed by sample.")
    if len(shape) != len(spec.shape):
        raise FormatError(
            f"{what}: array {_show(spec.name)} has shape {list(shape)} ({len(shape)} dims) but model input "
            f"{_show(spec.name)} has {len(spec.shape)} dims {expected} (the first counts samples)."
        )
    for axis, (want, got) in enumerate(zip(spec.shape[1:], shape[1:], strict=True), start=1):
        if isinstance(want, int) and want != got:
            raise FormatError(
                f"{what}: array {_show(spec.name)} has shape {list(shape)} but model input {_show(spec.name)} "
                f"needs {want} at dimension {axis} (shape {expected})."
            )
    if isinstance(spec.shape[0], int):
        if shape[0] % spec.shape[0]:
            raise FormatError(
                f"{what}: model input {_show(spec.name)} has a fixed batch of {spec.shape[0]}; the number of samples "
                f"({shape[0]}) must be a multiple of it."
            )
        notes.append(f"Input {spec.name!r} has a fixed batch of {spec.shape[0]}; samples are fed in batches of that size.")


def _check_array_dtype(name: str, dtype: np.dtype, spec_dtype: str | None, what: str) -> None:
    if spec_dtype is None:  # labels: any number or bool
        return
    if spec_dtype in FLOAT_DTYPES:
        accepted, fine = "floats or integers", dtype.kind in "fiu"
    elif spec_dtype in INT_DTYPES:
        accepted, fine = "integers", dtype.kind in "iu"
    elif spec_dtype == "bool":
        accepted, fine = "booleans", dtype.kind == "b"
    else:
        raise FormatError(f"{what}: model input {_show(name)} has element type {spec_dtype}, which datasets cannot feed.")
    if not fine:
        raise FormatError(f"{what}: array {_show(name)} has dtype {dtype} but model input {_show(name)} is {spec_dtype} and takes {accepted}.")


def _check_array_values(name: str, array: np.ndarray, spec_dtype: str | None, what: str) -> None:
    if spec_dtype in INT_DTYPES and array.size and not np.can_cast(array.dtype, spec_dtype):
        info = np.iinfo(spec_dtype)
        if array.min() < info.min or array.max() > info.max:
            raise FormatError(f"{what}: array {_show(name)} holds values outside the range of {spec_dtype} ({info.min}..{info.max}).")
    if array.dtype.kind != "f" and spec_dtype not in FLOAT_DTYPES:
        return
    cast = array.astype(spec_dtype, copy=False) if spec_dtype in FLOAT_DTYPES else array
    if cast.dtype.kind == "f" and not np.isfinite(cast).all():
        bad = int(np.count_nonzero(~np.isfinite(cast)))
        reason = "NaN or infinite values" if not np.isfinite(array).all() else f"values too large for {spec_dtype}"
        raise FormatError(f"{what}: array {_show(name)} holds {bad:,} {reason}; clean them before uploading.")
