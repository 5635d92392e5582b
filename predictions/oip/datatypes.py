"""Open Inference Protocol datatypes: their numpy element types, and the BYTES wire form.

The protocol names element types in capitals (``FP32``, ``INT64``, ``BYTES``...); the registry's
signatures name them as numpy does (``float32``). BYTES travels in the binary extension as
elements each preceded by its length (4 bytes, little-endian), as Triton writes it.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from modelhub.errors import Invalid

TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_FROM_NUMPY = {dtype: name for name, dtype in TO_NUMPY.items() if name != "BYTES"}
_LENGTH = struct.Struct("<I")


def of_numpy(dtype: Any) -> str:
    """The protocol datatype of a numpy element type (or its name, as signatures store it)."""
    found = _FROM_NUMPY.get(np.dtype(dtype))
    return found if found is not None else "BYTES"


def numpy_of(datatype: Any, name: str) -> np.dtype:
    """The numpy element type of a protocol datatype; Invalid (400) for one the protocol lacks."""
    found = TO_NUMPY.get(datatype) if isinstance(datatype, str) else None
    if found is None:
        raise Invalid(f"Input '{name}': datatype {str(datatype)[:20]!r} is not one of {', '.join(TO_NUMPY)}.")
    return found


def metadata_shape(dims: list[Any]) -> list[int]:
    """A signature's dimensions as the protocol shows them: -1 for a dynamic (symbolic) one."""
    return [d if isinstance(d, int) and d > 0 else -1 for d in dims]


def bytes_elements(raw: memoryview, count: int, name: str) -> np.ndarray:
    """``count`` length-prefixed BYTES elements that must fill ``raw`` exactly."""
    items, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(raw):
            raise Invalid(f"Input '{name}': the BYTES data ends inside an element's length.")
        (size,) = _LENGTH.unpack_from(raw, offset)
        if offset + 4 + size > len(raw):
            raise Invalid(f"Input '{name}': a BYTES element of {size} bytes runs past the data.")
        items.append(bytes(raw[offset + 4: offset + 4 + size]))
        offset += 4 + size
    if offset != len(raw):
        raise Invalid(f"Input '{name}': {len(raw) - offset} bytes are left after {count} BYTES elements.")
    return np.array(items, dtype=object)


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES elements in their wire form (str elements are sent as UTF-8)."""
    parts = []
    for item in array.reshape(-1):
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts += [_LENGTH.pack(len(data)), data]
    return b"".join(parts)
