"""An infer answer in the protocol's form: a JSON header, then the binary outputs' bytes, if any.

Each output asked for in binary (its ``binary_data`` parameter, else the request's
``binary_data_output``) is sent as raw little-endian bytes after the JSON, with
``parameters.binary_data_size``; the others as flat row-major ``data``. The answer's
``parameters`` name the version and variant that actually served, and whether a fallback link
answered (with the reason and the links that failed) or the response cache did.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from predictions.oip import datatypes
from predictions.oip.infer_request import InferRequest
from predictions.outputs import jsonable_outputs
from predictions.pipeline import Served
from predictions.refusals import Unavailable


def render(request: InferRequest, served: Served) -> tuple[bytes, int | None]:
    """(body, JSON header length when binary data follows it, else None)."""
    arrays = _arrays(served)
    entries, chunks = [], []
    for wanted in request.outputs:
        array = arrays.get(wanted.name)
        if array is None:
            raise Unavailable(f"The variant that answered ({served.answer.variant.label}) gives no output "
                              f"'{wanted.name}'.")
        entry: dict[str, Any] = {"name": wanted.name, "datatype": datatypes.of_numpy(array.dtype),
                                 "shape": list(array.shape)}
        if wanted.binary:
            chunks.append(_raw(array))
            entry["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            entry["data"] = jsonable_outputs({wanted.name: array.reshape(-1)})[wanted.name]
        entries.append(entry)
    header = orjson.dumps(_header(request, served, entries), option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _header(request: InferRequest, served: Served, entries: list[dict[str, Any]]) -> dict[str, Any]:
    answer, variant = served.answer, served.answer.variant
    parameters: dict[str, Any] = {"variant": variant.name, "version": variant.version, "selector": served.route.selector,
                                  "cached": answer.cached, "fallback": answer.fallback_reason is not None,
                                  "server_ms": round(served.elapsed_s * 1000, 3)}
    if answer.fallback_reason is not None:
        # parameter values are scalars in the protocol: the failed links are one string
        parameters.update(fallback_reason=answer.fallback_reason, fallback_from="; ".join(answer.failures))
    header = {"model_name": served.route.model, "model_version": str(variant.version), "parameters": parameters,
              "outputs": entries}
    if request.id is not None:
        header["id"] = request.id
    return header


def _arrays(served: Served) -> dict[str, np.ndarray]:
    """The answer's outputs as arrays; a cached answer is JSON bytes, read back in the signature's types."""
    answer = served.answer
    if answer.payload is None:
        return answer.outputs
    types = {spec["name"]: spec.get("dtype") for spec in answer.variant.signature.get("outputs", [])}
    return {name: np.asarray(value, dtype=types.get(name)) for name, value in orjson.loads(answer.payload).items()}


def _raw(array: np.ndarray) -> bytes:
    """An output's bytes on the wire: length-prefixed elements for BYTES, else little-endian row-major."""
    if array.dtype.kind in "OSU":
        return datatypes.serialize_bytes(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
