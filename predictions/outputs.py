"""Model outputs on their way to the client: the non-finite check and JSON rendering with orjson."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

# Element types orjson serializes natively (compared as dtypes: dtype.name is slow on the hot path).
_NATIVE = {np.dtype(name) for name in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint64",
                                       "uint32", "uint16", "uint8", "bool")}


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
