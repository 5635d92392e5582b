"""Model outputs on their way to the client: the answer caps, the check against the declared
output signature, the non-finite check and JSON rendering with orjson."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson

# Element types orjson serializes natively (compared as dtypes: dtype.name is slow on the hot path).
_NATIVE = {np.dtype(name) for name in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint64",
                                       "uint32", "uint16", "uint8", "bool")}
# Declared element types the output check compares ("onnx:<n>" types are not checked).
_KNOWN = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}
# Names for "unknown" rather than a dim the model names: ours (``dim<i>``, TorchScript's "?"), onnx's ``unk__<n>``.
_AUTO = re.compile(r"dim\d+|\?|unk__\d+")


def over_cap(outputs: dict[str, np.ndarray], max_elements: int, max_bytes: int) -> str | None:
    """Why the outputs of one answer are over the caps (elements, array bytes), else None; read from
    the shapes only, before anything is rendered."""
    elements = sum(array.size for array in outputs.values())
    nbytes = sum(array.nbytes for array in outputs.values())
    if elements <= max_elements and nbytes <= max_bytes:
        return None
    sizes = ", ".join(f"'{name}' {list(array.shape)}" for name, array in list(outputs.items())[:4])
    return (f"{elements:,} elements ({nbytes / 2**20:.1f} MB: {sizes}); an answer holds at most {max_elements:,} "
            f"elements and {max_bytes // 2**20} MB (MODELHUB_SERVING_MAX_OUTPUT_ELEMENTS / _MB)")


def mismatch(outputs: dict[str, np.ndarray], signature: dict[str, Any], feeds: dict[str, np.ndarray]) -> str | None:
    """How the outputs differ from the declared ones (names, element types, ranks, fixed dimensions,
    dimensions named like an input's), else None. Placeholder names (``dim<i>``, "?") bind nothing."""
    sizes = _symbol_sizes(signature.get("inputs", []), feeds)
    for spec in signature.get("outputs", []):
        array = outputs.get(spec["name"])
        if array is None:
            return f"no output '{spec['name']}'"
        declared = spec.get("dtype", "")
        if declared in _KNOWN and array.dtype != np.dtype(declared):
            return f"output '{spec['name']}' is {array.dtype}; the signature declares {declared}"
        problem = _shape_problem(array.shape, spec["shape"], sizes)
        if problem:
            return f"output '{spec['name']}' has shape {list(array.shape)}; the signature declares {spec['shape']} ({problem})"
    return None


def _symbol_sizes(specs: list[dict[str, Any]], feeds: dict[str, np.ndarray]) -> dict[str, int]:
    """Named input dims and their sizes in this request (placeholder names are not the model's: skipped)."""
    sizes = {}
    for spec in specs:
        feed = feeds.get(spec["name"])
        for axis, dim in enumerate(spec["shape"]):
            if isinstance(dim, str) and not _AUTO.fullmatch(dim) and feed is not None and axis < feed.ndim:
                sizes.setdefault(dim, int(feed.shape[axis]))
    return sizes


def _shape_problem(shape: tuple[int, ...], dims: list[Any], sizes: dict[str, int]) -> str | None:
    if len(shape) != len(dims):
        return f"rank {len(shape)}, not {len(dims)}"
    for axis, (size, dim) in enumerate(zip(shape, dims, strict=True)):
        expected = dim if isinstance(dim, int) and dim > 0 else sizes.get(dim) if isinstance(dim, str) else None
        if expected is not None and size != expected:
            return f"axis {axis} is {size}, not {expected}"
    return None


def non_finite(outputs: dict[str, np.ndarray]) -> str | None:
    """The name of the first floating output holding NaN or Infinity, else None."""
    for name, array in outputs.items():
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            return name
    return None


def render_outputs(outputs: dict[str, np.ndarray]) -> bytes:
    """JSON bytes of named output arrays (orjson serializes numpy arrays natively)."""
    return orjson.dumps(jsonable_outputs(outputs), option=orjson.OPT_SERIALIZE_NUMPY)


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype in _NATIVE:
        return array if array.flags.c_contiguous else np.ascontiguousarray(array)
    return array.tolist()


def jsonable_outputs(outputs: Any) -> Any:
    """Outputs ready for orjson: cached JSON bytes as they are, arrays in a form orjson serializes."""
    if isinstance(outputs, orjson.Fragment):
        return outputs
    return {name: _jsonable(array) for name, array in outputs.items()}
