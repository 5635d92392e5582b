"""Decoding and validating the inputs of a prediction against the version's signature.

Accepted bodies:

- JSON ``{"inputs": {name: nested list}}`` with a leading batch dimension, or per input the
  binary form ``{"b64": ..., "dtype": "float32", "shape": [...]}`` (raw little-endian bytes);
- ``Content-Type: application/x-npy``: one array, for single-input models;
- ``Content-Type: application/x-npz``: arrays named after the inputs (never unpickled).

Every refusal is an ``Invalid`` (400) or ``TooLarge`` (413) whose message names the input and the
problem; nothing a client sends can reach ``session.run`` with the wrong names, element type,
rank, fixed dimension, or beyond the batch and element caps. JSON is parsed by orjson, which
refuses NaN / Infinity literals and nesting deeper than 1024 levels without recursion.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import zipfile
import zlib
from typing import Any

import numpy as np
import orjson
from django.conf import settings

from modelhub.errors import Invalid, ServiceError, TooLarge

# Element types a client may name in the binary form.
DTYPES = {name: np.dtype(name) for name in
          ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")}
NPY_TYPES = {"application/x-npy", "application/octet-stream"}
MAX_NPZ_MEMBERS = 64
MAX_RANK = 16


class UnsupportedMediaType(ServiceError):
    status = 415


def decode(body: bytes, content_type: str, specs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The validated input arrays of a request body, in the signature's element types."""
    names = [spec["name"] for spec in specs]
    if content_type in NPY_TYPES:
        if len(names) != 1:
            raise Invalid(f"application/x-npy carries one array; this model takes {len(names)} inputs "
                          f"({', '.join(names)}): send application/x-npz or JSON.")
        given: dict[str, Any] = {names[0]: _npy(names[0], body)}
    elif content_type == "application/x-npz":
        given = _npz(body)
    elif content_type in ("application/json", "", "text/plain"):
        given = _json(body)
    else:
        raise UnsupportedMediaType(f"Content-Type {content_type!r} is not accepted; send application/json, "
                                   "application/x-npy or application/x-npz.")
    return validate(given, specs)


# --- bodies ------------------------------------------------------------------------------------


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Invalid(json_problem(body, exc)) from None
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), dict):
        raise Invalid('The body must be a JSON object {"inputs": {"<input name>": [...]}}.')
    extra = sorted(set(data) - {"inputs"})
    if extra:
        raise Invalid(f"Unknown top-level field(s): {', '.join(extra)}; the body holds only \"inputs\".")
    return data["inputs"]


def json_problem(body: bytes, exc: orjson.JSONDecodeError) -> str:
    """Why orjson refused a body, said for the client (shared by the Open Inference Protocol route)."""
    where = f"at character {exc.pos}" if exc.pos is not None else ""
    text = str(exc)
    if "depth" in text or "recursion" in text:
        return "The JSON is nested too deeply (more than 1024 levels)."
    if "infinity" in text.lower() and "double" in text.lower():
        return f"A number in the JSON is too large for a float {where}."
    snippet = body[exc.pos: exc.pos + 9] if exc.pos is not None else b""
    if snippet.lstrip(b"-").startswith((b"NaN", b"Infinity", b"nan", b"inf")):
        return f"NaN and Infinity are not valid JSON numbers and are not accepted as inputs {where}."
    if not body.strip():
        return 'The body is empty; send {"inputs": {"<input name>": [...]}}.'
    return f"The body is not valid JSON: {text.split(':')[0]} {where}."


def _npy_header(name: str, stream: io.BytesIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            return fmt.read_array_header_1_0(stream, max_header_size=10000)
        if version in ((2, 0), (3, 0)):
            return fmt.read_array_header_2_0(stream, max_header_size=10000)
    except (ValueError, SyntaxError, EOFError, TypeError) as exc:
        raise Invalid(f"Input '{name}': not a readable .npy array ({str(exc)[:120]}).") from None
    raise Invalid(f"Input '{name}': unsupported .npy format version {version}.")


def _npy(name: str, raw: bytes) -> np.ndarray:
    """An .npy array read from its header and bytes: no pickle, no allocation before the checks."""
    stream = io.BytesIO(raw)
    shape, fortran, dtype = _npy_header(name, stream)
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "fiub":
        raise Invalid(f"Input '{name}': arrays of {dtype} are not accepted; send numeric or bool arrays.")
    check_count(name, shape)
    data = memoryview(raw)[stream.tell():]
    if len(data) != math.prod(shape) * dtype.itemsize:
        raise Invalid(f"Input '{name}': the .npy data holds {len(data)} bytes; shape {list(shape)} of {dtype} "
                      f"needs {math.prod(shape) * dtype.itemsize}.")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _npz(raw: bytes) -> dict[str, np.ndarray]:
    limit = max(settings.DATA_UPLOAD_MAX_MEMORY_SIZE, settings.MODELHUB_SERVING_MAX_ELEMENTS * 8)
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_NPZ_MEMBERS:
                raise Invalid(f"The .npz holds {len(infos)} arrays; at most {MAX_NPZ_MEMBERS} are accepted.")
            if sum(info.file_size for info in infos) > limit:
                raise TooLarge(f"The .npz unpacks to more than {limit // (1024 * 1024)} MB.")
            arrays = {}
            for info in infos:
                name = info.filename.removesuffix(".npy")
                # Reads stop at the declared size, so a forged header cannot inflate past the cap.
                arrays[name] = _npy(name, archive.read(info))
            return arrays
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise Invalid(f"The body is not a readable .npz archive ({str(exc)[:120]}).") from None


def _binary(name: str, value: dict[str, Any]) -> np.ndarray:
    """The binary form {"b64", "dtype", "shape"}: raw little-endian bytes."""
    unknown = sorted(set(value) - {"b64", "dtype", "shape"})
    if unknown or not {"b64", "dtype", "shape"} <= set(value):
        raise Invalid(f'Input \'{name}\': the binary form is {{"b64": ..., "dtype": ..., "shape": [...]}}'
                      + (f"; unknown field(s) {', '.join(unknown)}" if unknown else "") + ".")
    dtype = DTYPES.get(value["dtype"]) if isinstance(value["dtype"], str) else None
    if dtype is None:
        raise Invalid(f"Input '{name}': dtype {value['dtype']!r} is not one of {', '.join(DTYPES)}.")
    shape = value["shape"]
    if (not isinstance(shape, list) or len(shape) > MAX_RANK
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise Invalid(f"Input '{name}': shape must be a list of at most {MAX_RANK} non-negative integers.")
    check_count(name, shape)
    need = math.prod(shape) * dtype.itemsize
    text = value["b64"]
    if not isinstance(text, str) or len(text) > 4 * math.ceil(need / 3) + 4:
        raise Invalid(f"Input '{name}': b64 must be a base64 string of {need} bytes (shape {shape} of {dtype}).")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"Input '{name}': b64 is not valid base64.") from None
    if len(raw) != need:
        raise Invalid(f"Input '{name}': b64 decodes to {len(raw)} bytes; shape {shape} of {dtype} needs {need}.")
    if dtype.kind == "b" and raw.translate(None, b"\x00\x01"):
        raise Invalid(f"Input '{name}': bool bytes must be 0 or 1.")
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)


def check_count(name: str, shape: Any) -> None:
    """TooLarge (413) when a declared shape holds more elements than the cap, before anything is allocated."""
    count = math.prod(shape)
    if count > settings.MODELHUB_SERVING_MAX_ELEMENTS:
        raise TooLarge(f"Input '{name}' has {count} elements; the limit is {settings.MODELHUB_SERVING_MAX_ELEMENTS}.")


# --- validation --------------------------------------------------------------------------------


def validate(given: dict[str, Any], specs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Check names, then each input's element type, rank, dimensions and caps; coerce types."""
    expected = [spec["name"] for spec in specs]
    missing = [n for n in expected if n not in given]
    extra = sorted(set(given) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append("missing input(s) " + ", ".join(f"'{n}'" for n in missing))
        if extra:
            parts.append("unknown input(s) " + ", ".join(f"'{n}'" for n in extra[:10]))
        raise Invalid(f"{'; '.join(parts).capitalize()}; the model takes {', '.join(expected)}.")
    symbols: dict[str, tuple[int, str]] = {}
    feeds = {}
    for spec in specs:
        name = spec["name"]
        array = _array(name, given[name])
        _check_shape(name, array.shape, spec["shape"], symbols)
        feeds[name] = _coerce(name, array, spec["dtype"])
    return feeds


def _array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, dict):
        return _binary(name, value)
    if not isinstance(value, list):
        raise Invalid(f"Input '{name}' must be a nested list with a leading batch dimension, or "
                      '{"b64": ..., "dtype": ..., "shape": [...]}.')
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise Invalid(f"Input '{name}' is not a rectangular array of numbers (ragged or mixed lists).") from None
    if array.dtype.kind not in "fiub":
        raise Invalid(f"Input '{name}' holds values that are not numbers (or its lists are ragged).")
    if array.dtype.kind != "b" and mixes_bools(value):
        raise Invalid(f"Input '{name}' mixes true/false with numbers; booleans go only into bool inputs.")
    return array


def mixes_bools(value: list[Any]) -> bool:
    """Whether a JSON list of numbers also holds booleans (numpy would read them as 0 / 1).

    A number is written with digits, sign, point and exponent only, so "true" / "false" in the
    re-serialized list can only be booleans: one pass in C, no Python loop over the elements.
    """
    text = orjson.dumps(value)
    return b"true" in text or b"false" in text


def _check_shape(name: str, shape: tuple[int, ...], dims: list[Any], symbols: dict[str, tuple[int, str]]) -> None:
    if len(shape) != len(dims):
        raise Invalid(f"Input '{name}' has rank {len(shape)} (shape {list(shape)}); the model expects rank "
                      f"{len(dims)} ({_show(dims)}).")
    for axis, (size, dim) in enumerate(zip(shape, dims, strict=True)):
        if isinstance(dim, int) and dim > 0:
            if size != dim:
                raise Invalid(f"Input '{name}' has size {size} on axis {axis}; the model expects {dim} "
                              f"({_show(dims)}).")
            continue
        if axis == 0 and size > settings.MODELHUB_SERVING_MAX_BATCH:
            raise TooLarge(f"Input '{name}' has a batch of {size}; the limit is {settings.MODELHUB_SERVING_MAX_BATCH}.")
        if size == 0:
            raise Invalid(f"Input '{name}' is empty on axis {axis}.")
        symbol = str(dim)
        if symbol in symbols and symbols[symbol][0] != size:
            other_size, other = symbols[symbol]
            raise Invalid(f"Input '{name}' has {symbol}={size} on axis {axis} but input '{other}' has "
                          f"{symbol}={other_size}; they must match.")
        symbols.setdefault(symbol, (size, name))
    check_count(name, shape)


def _show(dims: list[Any]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _coerce(name: str, array: np.ndarray, dtype_name: str) -> np.ndarray:
    """Ints may feed float inputs; floats never feed int inputs; bools feed only bool inputs."""
    target = np.dtype(dtype_name)
    kind = array.dtype.kind
    if target.kind == "b":
        if kind != "b":
            raise Invalid(f"Input '{name}' takes bool values (true/false); got {array.dtype}.")
        return array.astype(target, copy=False)
    if kind == "b":
        raise Invalid(f"Input '{name}' takes {target} values; got booleans.")
    if target.kind in "iu":
        if kind == "f":
            raise Invalid(f"Input '{name}' takes integers ({target}); got floating-point values.")
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise Invalid(f"Input '{name}' has values outside the range of {target} ({info.min}..{info.max}).")
        return array.astype(target, copy=False)
    with np.errstate(over="ignore"):  # a value beyond the target's range becomes inf, refused just below
        out = array.astype(target, copy=False)
    if not np.isfinite(out).all():
        raise Invalid(f"Input '{name}' holds NaN or Infinity (or values beyond the range of {target}); "
                      "only finite numbers are accepted.")
    return out
