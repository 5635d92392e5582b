"""Datasets: an .npz checked against the model's signature, headers before data (pure: no Django).

Arrays are named after the model inputs (plus optional ``labels``); dim 0 counts samples. Names,
dtypes and shapes come from the zip directory and the .npy headers, so nothing is unpacked before
they pass; only then are the values read and checked (range of integer inputs, NaN and infinity).

Sequences of varied length come as callers send them: padded to any length (two datasets of the
same sentences may be padded to different lengths), with the real positions of each row told by
the model's attention-mask input (an input named like ``attention_mask``, 1 = real token) or by an
optional ``lengths`` array (``lengths[i]`` = real tokens of row i, counted from the start).
``real_positions`` is the one place that reads them; fidelity is computed over those positions.
"""

from __future__ import annotations

import difflib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from workers.formats.common import FormatError, mb, regular_size, sha256_file, show
from workers.formats.signature import Signature, TensorSpec, read_npz

FLOAT_DTYPES = frozenset({"float16", "float32", "float64"})
INT_DTYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})
LABELS = "labels"
LENGTHS = "lengths"
MAX_DATASET_ARRAYS = 256
# Input names that carry an attention mask (compared lower-cased, as substrings).
MASK_NAMES = ("attention_mask", "input_mask")


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
        """As stored in JSON."""
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
        """From ``to_dict``'s form."""
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
    size = regular_size(Path(path), what)
    if size == 0:
        raise FormatError(f"{what} is empty; save the arrays with numpy.savez.")
    if size > max_bytes:
        raise FormatError(f"{what} is {mb(size)}, over the limit of {mb(max_bytes)}.")
    headers = _npz_headers(Path(path), what, max_unpacked_bytes or 4 * max_bytes)
    _check_array_names(headers, signature, what)
    notes: list[str] = []
    samples = _check_array_shapes(headers, signature, what, notes)
    specs = {spec.name: spec for spec in signature.inputs}
    for name, header in headers.items():
        _check_array_dtype(name, header.dtype, specs[name].dtype if name in specs else None, what)
    if LENGTHS in headers and headers[LENGTHS].dtype.kind not in "iu":
        raise FormatError(f"{what}: array 'lengths' has dtype {headers[LENGTHS].dtype}; it takes integers.")
    arrays = read_npz(Path(path))
    for name, array in arrays.items():
        _check_array_values(name, array, specs[name].dtype if name in specs else None, what)
    if real_positions(arrays, signature.input_names, what=what) is not None:
        notes.append("Rows carry their real positions (attention mask or lengths): fidelity is computed over real "
                     "tokens only, and padding is never compared.")
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
            _check_declared_sizes(infos, what, max_unpacked)
            return {info.filename[:-4]: _npy_header(archive, info, what) for info in infos}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise FormatError(f"{what} is not a readable .npz file (save it with numpy.savez).") from exc


def _check_declared_sizes(infos: list[zipfile.ZipInfo], what: str, max_unpacked: int) -> None:
    """Refuse from the zip directory alone, before anything is decompressed: each member and all of
    them together must declare at most ``max_unpacked`` bytes (zipfile never inflates a member past
    its declared size, and each .npy header must fit in it, so this bounds what unpacking costs)."""
    for info in infos:
        if info.file_size > max_unpacked:
            raise FormatError(f"{what}: array {show(info.filename.removesuffix('.npy'))} unpacks to more than "
                              f"{mb(max_unpacked)} ({mb(info.file_size)} declared); use fewer samples.")
    total = sum(info.file_size for info in infos)
    if total > max_unpacked:
        raise FormatError(f"{what} unpacks to more than {mb(max_unpacked)} ({mb(total)} declared); "
                          "use fewer samples.")


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> _Header:
    name = info.filename
    if not name.endswith(".npy"):
        raise FormatError(f"{what} holds {show(name)}, which is not a numpy array; save it with numpy.savez.")
    with archive.open(info) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}[version]
            shape, _fortran, dtype = reader(handle)
        except (ValueError, KeyError, SyntaxError) as exc:
            raise FormatError(f"{what}: array {show(name[:-4])} has an unreadable header; save it with numpy.savez.") from exc
    if dtype.hasobject:
        raise FormatError(
            f"{what}: array {show(name[:-4])} holds Python objects, which need pickle to load; "
            "save plain numeric arrays with numpy.savez instead."
        )
    if dtype.names is not None or dtype.kind not in "biuf":
        raise FormatError(f"{what}: array {show(name[:-4])} has dtype {dtype}; only numbers and booleans are accepted.")
    if int(np.prod(shape, dtype=object)) * dtype.itemsize > info.file_size:
        raise FormatError(f"{what}: array {show(name[:-4])} declares shape {shape} but holds less data; the file is corrupt.")
    return _Header(dtype=dtype, shape=tuple(int(d) for d in shape))


def _check_array_names(headers: dict[str, _Header], signature: Signature, what: str) -> None:
    have = sorted(headers)
    missing = [name for name in signature.input_names if name not in headers]
    if missing:
        raise FormatError(
            f"{what} has no array for model input(s) {', '.join(map(show, missing))}; it holds "
            f"{', '.join(map(show, have)) or 'no arrays'}. Name each array after a model input (numpy.savez(path, "
            f"{missing[0]}=...))."
        )
    extra = [name for name in have if name not in signature.input_names and name not in (LABELS, LENGTHS)]
    if extra:
        hints = []
        for name in extra:
            close = difflib.get_close_matches(name, [*signature.input_names, LABELS, LENGTHS], n=1)
            hints.append(show(name) + (f" (did you mean {show(close[0])}?)" if close else ""))
        raise FormatError(
            f"{what} holds array(s) the model does not take: {', '.join(hints)}. The model's inputs are "
            f"{', '.join(map(show, signature.input_names))}; labels go in an array named 'labels', real "
            "sequence lengths in one named 'lengths'."
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
    if LENGTHS in headers:
        if len(headers[LENGTHS].shape) != 1:
            raise FormatError(f"{what}: array 'lengths' has shape {list(headers[LENGTHS].shape)}; it needs one "
                              "number per sample (shape [samples]).")
        counts[LENGTHS] = headers[LENGTHS].shape[0]
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{show(name)}: {count}" for name, count in counts.items())
        raise FormatError(f"{what}: arrays disagree on the number of samples (first dimension): {listed}.")
    samples = next(iter(counts.values()), 0)
    if samples < 1:
        raise FormatError(f"{what} holds no samples; every array needs at least one row.")
    return samples


def _check_input_shape(spec: TensorSpec, shape: tuple[int, ...], what: str, notes: list[str]) -> None:
    expected = "[" + ", ".join(str(d) for d in spec.shape) + "]"
    if "?" in spec.shape:  # TorchScript: shapes are unknown; any array with a sample axis will do
        if not shape:
            raise FormatError(f"{what}: array {show(spec.name)} is a scalar; it needs a first (samples) dimension.")
        return
    if not spec.shape:
        raise FormatError(f"{what}: model input {show(spec.name)} is a scalar, which datasets cannot feed by sample.")
    if len(shape) != len(spec.shape):
        raise FormatError(
            f"{what}: array {show(spec.name)} has shape {list(shape)} ({len(shape)} dims) but model input "
            f"{show(spec.name)} has {len(spec.shape)} dims {expected} (the first counts samples)."
        )
    for axis, (want, got) in enumerate(zip(spec.shape[1:], shape[1:], strict=True), start=1):
        if isinstance(want, int) and want != got:
            raise FormatError(
                f"{what}: array {show(spec.name)} has shape {list(shape)} but model input {show(spec.name)} "
                f"needs {want} at dimension {axis} (shape {expected})."
            )
    if isinstance(spec.shape[0], int):
        if shape[0] % spec.shape[0]:
            raise FormatError(
                f"{what}: model input {show(spec.name)} has a fixed batch of {spec.shape[0]}; the number of samples "
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
        raise FormatError(f"{what}: model input {show(name)} has element type {spec_dtype}, which datasets cannot feed.")
    if not fine:
        raise FormatError(f"{what}: array {show(name)} has dtype {dtype} but model input {show(name)} is {spec_dtype} and takes {accepted}.")


def _check_array_values(name: str, array: np.ndarray, spec_dtype: str | None, what: str) -> None:
    if spec_dtype in INT_DTYPES and array.size and not np.can_cast(array.dtype, spec_dtype):
        info = np.iinfo(spec_dtype)
        if array.min() < info.min or array.max() > info.max:
            raise FormatError(f"{what}: array {show(name)} holds values outside the range of {spec_dtype} ({info.min}..{info.max}).")
    if array.dtype.kind != "f" and spec_dtype not in FLOAT_DTYPES:
        return
    cast = array.astype(spec_dtype, copy=False) if spec_dtype in FLOAT_DTYPES else array
    if cast.dtype.kind == "f" and not np.isfinite(cast).all():
        bad = int(np.count_nonzero(~np.isfinite(cast)))
        reason = "NaN or infinite values" if not np.isfinite(array).all() else f"values too large for {spec_dtype}"
        raise FormatError(f"{what}: array {show(name)} holds {bad:,} {reason}; clean them before uploading.")


def mask_input(input_names: list[str] | tuple[str, ...]) -> str | None:
    """The model input that carries an attention mask (named like ``attention_mask``), if any."""
    return next((name for name in input_names if any(m in name.lower() for m in MASK_NAMES)), None)


def _sequence_length(arrays: dict[str, np.ndarray], input_names: list[str] | tuple[str, ...]) -> int | None:
    """The padded length: dim 1 of the first input array with a sequence axis."""
    return next((arrays[n].shape[1] for n in input_names if n in arrays and arrays[n].ndim >= 2), None)


def _mask_from_lengths(lengths: np.ndarray, seq: int | None, what: str) -> np.ndarray:
    if seq is None:
        raise FormatError(f"{what} has 'lengths' but no input array with a sequence axis (dims [samples, seq, ...]).")
    lengths = np.asarray(lengths).astype(np.int64)
    if lengths.size and (lengths.min() < 1 or lengths.max() > seq):
        raise FormatError(f"{what}: 'lengths' must lie in 1..{seq} (the padded length); it holds "
                          f"{int(lengths.min())}..{int(lengths.max())}.")
    return np.arange(seq)[None, :] < lengths[:, None]


def _mask_from_input(name: str, mask: np.ndarray, what: str) -> np.ndarray:
    if mask.ndim != 2:
        raise FormatError(f"{what}: attention mask {show(name)} has {mask.ndim} dims; it needs [samples, seq].")
    if mask.size and not np.isin(mask, (0, 1)).all():
        raise FormatError(f"{what}: attention mask {show(name)} holds values other than 0 and 1.")
    real = mask.astype(bool)
    if mask.size and not real.any(axis=1).all():
        row = int(np.argmin(real.any(axis=1)))
        raise FormatError(f"{what}: attention mask {show(name)} marks no real token in row {row}; every row needs one.")
    return real


def real_positions(arrays: dict[str, np.ndarray], input_names: list[str] | tuple[str, ...], *,
                   what: str = "The validation dataset") -> np.ndarray | None:
    """[samples, seq] booleans, True at real (non-padding) positions, from the model's attention-mask
    input or the ``lengths`` array (both: they must agree); None when the dataset tells neither.
    FormatError when they are malformed or disagree."""
    name = mask_input(input_names)
    from_mask = _mask_from_input(name, np.asarray(arrays[name]), what) if name and name in arrays else None
    if LENGTHS not in arrays:
        return from_mask
    from_lengths = _mask_from_lengths(arrays[LENGTHS], _sequence_length(arrays, input_names), what)
    if from_mask is None:
        return from_lengths
    if from_mask.shape != from_lengths.shape or not np.array_equal(from_mask.sum(axis=1), from_lengths.sum(axis=1)):
        raise FormatError(f"{what}: 'lengths' disagrees with attention mask {show(name)} (its 1s per row).")
    return from_mask
