"""An Open Inference Protocol infer request, decoded and checked against the route's signature.

The body is a JSON header, optionally followed by the tensors' raw bytes (the binary tensor data
extension): ``Inference-Header-Content-Length`` says where the JSON ends, and each input whose
``parameters.binary_data_size`` is set takes that many bytes, in input order. Nothing depends on
Content-Type. Each tensor is checked against its declared datatype and shape before it is built
(element caps, byte counts), then every input goes through ``inputs.validate``: the same names,
rank, dimension, batch and finiteness rules as the predict route. Any refusal is a 400 (or 413)
with a reason that names the tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelhub.errors import Invalid
from predictions import inputs
from predictions.oip import datatypes
from predictions.routes import Route

_FIELDS = {"id", "parameters", "inputs", "outputs"}


@dataclass(frozen=True)
class Requested:
    """One output to answer with, and whether its data goes in binary."""

    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """What a request asks: its id, the validated input arrays, and the outputs to send back."""

    id: str | None
    feeds: dict[str, np.ndarray]
    outputs: tuple[Requested, ...]


def parse(body: bytes, header_length: str | None, route: Route) -> InferRequest:
    """Decode an infer body for ``route``; Invalid (400) or TooLarge (413) with the reason."""
    header, binary = _split(body, header_length)
    doc = _header(header)
    parameters = _parameters(doc.get("parameters"), "The request")
    given = _tensors(doc["inputs"], binary, route.inputs)
    feeds = inputs.validate(given, route.inputs)
    default_binary = parameters.get("binary_data_output") is True
    return InferRequest(id=_id(doc.get("id")), feeds=feeds, outputs=_requested(doc.get("outputs"), route, default_binary))


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(JSON header, binary section) of a body."""
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > len(body) or int(text) == 0:
        raise Invalid(f"Inference-Header-Content-Length must be a byte count within the body's {len(body)} "
                      f"bytes; got {header_length[:20]!r}.")
    return body[: int(text)], memoryview(body)[int(text):]


def _header(header: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise Invalid(inputs.json_problem(header, exc)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise Invalid('The body must be a JSON object {"inputs": [{"name", "shape", "datatype", "data"}, ...]}.')
    extra = sorted(set(doc) - _FIELDS)
    if extra:
        raise Invalid(f"Unknown field(s) {', '.join(extra)[:200]}; an infer request holds {', '.join(sorted(_FIELDS))}.")
    return doc


def _parameters(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"{what}'s parameters must be a JSON object.")
    return value


def _id(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise Invalid("The request id must be a string.")
    return value


def _tensors(docs: list[Any], binary: memoryview, specs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Every input tensor by name, its binary bytes taken in input order; all the bytes must be claimed."""
    types = {spec["name"]: spec["dtype"] for spec in specs}
    given: dict[str, np.ndarray] = {}
    offset = 0
    for doc in docs:
        name, shape, dtype = _described(doc, types)
        if name in given:
            raise Invalid(f"Input '{name}' is given twice.")
        size = _parameters(doc.get("parameters"), f"Input '{name}'").get("binary_data_size")
        if size is None:
            given[name] = _from_data(name, doc.get("data"), shape, dtype)
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or "data" in doc:
            raise Invalid(f"Input '{name}': binary_data_size must be a byte count, and the tensor has no \"data\".")
        if offset + size > len(binary):
            raise Invalid(f"Input '{name}': binary_data_size {size} runs past the {len(binary)} bytes after the header.")
        given[name] = _from_bytes(name, binary[offset: offset + size], shape, dtype)
        offset += size
    if offset != len(binary):
        raise Invalid(f"{len(binary) - offset} bytes after the header belong to no input's binary_data_size.")
    return given


def _described(doc: Any, types: dict[str, str]) -> tuple[str, list[int], np.dtype]:
    """(name, shape, element type) of an input tensor, its datatype matching the model's input."""
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise Invalid('Each input is {"name": ..., "shape": [...], "datatype": ..., "data": [...]}.')
    name, shape = doc["name"], doc.get("shape")
    if (not isinstance(shape, list) or len(shape) > inputs.MAX_RANK
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise Invalid(f"Input '{name[:64]}': shape must be a list of at most {inputs.MAX_RANK} non-negative integers.")
    dtype = datatypes.numpy_of(doc.get("datatype"), name[:64])
    if name in types and doc["datatype"] != datatypes.of_numpy(types[name]):
        raise Invalid(f"Input '{name}' takes {datatypes.of_numpy(types[name])}; got {doc['datatype']}.")
    inputs.check_count(name[:64], shape)
    return name, shape, dtype


def _from_data(name: str, data: Any, shape: list[int], dtype: np.dtype) -> np.ndarray:
    """A tensor from its JSON ``data``: row-major, flat or nested, values of its datatype's kind."""
    if not isinstance(data, list):
        raise Invalid(f"Input '{name}' needs \"data\" (a list) or parameters.binary_data_size.")
    try:
        array = np.asarray(data, dtype=object if dtype.kind == "O" else None)
    except (ValueError, TypeError, OverflowError):
        raise Invalid(f"Input '{name}': data is not a rectangular list of numbers.") from None
    _check_kind(name, array, dtype)
    if array.dtype.kind in "iuf" and inputs.mixes_bools(data):
        raise Invalid(f"Input '{name}': data mixes true/false with numbers; booleans go only into BOOL inputs.")
    if array.size != math.prod(shape):
        raise Invalid(f"Input '{name}': shape {shape} needs {math.prod(shape)} values; data holds {array.size}.")
    return array.reshape(shape)


def _check_kind(name: str, array: np.ndarray, dtype: np.dtype) -> None:
    """JSON values must be of the datatype's kind: booleans for BOOL, integers for INT/UINT, numbers for FP."""
    allowed = {"b": "b", "i": "iu", "u": "iu", "f": "iuf", "O": "O"}[dtype.kind]
    if array.size and array.dtype.kind not in allowed:
        raise Invalid(f"Input '{name}': data holds {array.dtype.kind!r}-kind values that are not "
                      f"{datatypes.of_numpy(dtype) if dtype.kind != 'O' else 'BYTES'} values.")
    if dtype.kind == "O" and not all(isinstance(item, str) for item in array.reshape(-1)):
        raise Invalid(f"Input '{name}': BYTES data in JSON is a list of strings.")


def _from_bytes(name: str, raw: memoryview, shape: list[int], dtype: np.dtype) -> np.ndarray:
    """A tensor from its binary bytes: little-endian, row-major; BYTES elements length-prefixed."""
    count = math.prod(shape)
    if dtype.kind == "O":
        return datatypes.bytes_elements(raw, count, name).reshape(shape)
    if len(raw) != count * dtype.itemsize:
        raise Invalid(f"Input '{name}': binary_data_size is {len(raw)} bytes; shape {shape} of "
                      f"{datatypes.of_numpy(dtype)} needs {count * dtype.itemsize}.")
    if dtype.kind == "b" and bytes(raw).translate(None, b"\x00\x01"):
        raise Invalid(f"Input '{name}': BOOL bytes must be 0 or 1.")
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
    return array if array.flags.aligned else array.copy()  # the header's length may leave the bytes unaligned


def _requested(docs: Any, route: Route, default_binary: bool) -> tuple[Requested, ...]:
    """The outputs to answer with: those asked for by name (each known to the model), else all."""
    names = [spec["name"] for spec in route.chain[0].signature.get("outputs", [])]
    if docs is None:
        return tuple(Requested(name, default_binary) for name in names)
    if not isinstance(docs, list) or not all(isinstance(d, dict) and isinstance(d.get("name"), str) for d in docs):
        raise Invalid('"outputs" is a list of {"name": ..., "parameters": {"binary_data": true}}.')
    requested = []
    for doc in docs:
        if doc["name"] not in names:
            raise Invalid(f"Unknown output '{doc['name'][:64]}'; the model gives {', '.join(names)}.")
        parameters = _parameters(doc.get("parameters"), f"Output '{doc['name']}'")
        if "classification" in parameters:
            raise Invalid("The classification extension is not offered; ask for the output itself.")
        binary = parameters.get("binary_data", default_binary)
        requested.append(Requested(doc["name"], binary is True))
    return tuple(requested)
