"""Small ONNX models built by hand for tests, and the archives that carry them.

``onnx_model`` holds the boilerplate of every hand-made graph (opset 17 and IR version 8 unless a
test asks for others); the graphs that several test modules share follow it. A test whose graph is
the point (a hostile or odd model) still builds that graph itself, with ``onnx_model``. Files are
written with ``write_model``: the proto's own bytes, never ``onnx.save``, which may touch the
external-data files a hostile model names. Pure: no Django.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 17
IR_VERSION = 8
WEIGHTS = np.arange(4, dtype=np.float32)  # W of add_model: y = x + [0, 1, 2, 3]

node = helper.make_node


def tensor(name: str, dtype: str, shape: Sequence[int | str]) -> onnx.ValueInfoProto:
    """A graph input or output of a numpy ``dtype`` ("float32", "int64", "bool"); strings in
    ``shape`` are symbolic dimensions ("batch")."""
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), list(shape))


def onnx_model(nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
               outputs: Sequence[onnx.ValueInfoProto], initializers: Mapping[str, np.ndarray] | None = None, *,
               name: str = "graph", opset: int = OPSET, ir_version: int = IR_VERSION,
               domains: Mapping[str, int] | None = None,
               functions: Sequence[onnx.FunctionProto] = ()) -> onnx.ModelProto:
    """A model of one graph: the default opset (``opset``) plus ``domains`` (domain -> version), the
    initializers made from named arrays, at IR version ``ir_version``."""
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs),
                              [numpy_helper.from_array(array, key) for key, array in (initializers or {}).items()])
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
    made = helper.make_model(graph, opset_imports=imports, functions=list(functions))
    made.ir_version = ir_version
    return made


def write_model(model: onnx.ModelProto, path: Path, *, check: bool = False) -> Path:
    """Write the model's bytes to ``path`` (its directory made); ``check`` runs the ONNX checker first."""
    if check:
        onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


# --- graphs several modules share --------------------------------------------------------------


def add_model(*, opset: int = OPSET, ir_version: int = IR_VERSION) -> onnx.ModelProto:
    """y = x + W, x float32 [batch, 4], W a 4-float initializer: the smallest model worth inspecting
    (and the smallest the intake accepts)."""
    return onnx_model([node("Add", ["x", "W"], ["y"])], [tensor("x", "float32", ["batch", 4])],
                      [tensor("y", "float32", ["batch", 4])], {"W": WEIGHTS}, name="add", opset=opset,
                      ir_version=ir_version)


def tiny_onnx_bytes() -> bytes:
    """The file of add_model, the smallest model the intake accepts."""
    return add_model().SerializeToString()


def one_node_model(op_type: str, domain: str, *, functions: Sequence[onnx.FunctionProto] = ()) -> onnx.ModelProto:
    """y = op(x) for an operator of any domain (imported at version 1)."""
    return onnx_model([node(op_type, ["x"], ["y"], domain=domain)], [tensor("x", "float32", ["batch", 4])],
                      [tensor("y", "float32", ["batch", 4])], name="one", domains={domain: 1}, functions=functions)


def linear_onnx(path: Path, weights: np.ndarray, *, batch: int | str = "batch", input_name: str = "x") -> Path:
    """y = x @ weights as an ONNX file (IR 10) with the given batch dimension."""
    rows, cols = weights.shape
    model = onnx_model([node("MatMul", [input_name, "w"], ["y"])], [tensor(input_name, "float32", [batch, rows])],
                       [tensor("y", "float32", [batch, cols])], {"w": weights.astype(np.float32)}, name="linear",
                       ir_version=10)
    return write_model(model, path)


def sqrt_onnx(path: Path, *, safe: bool) -> Path:
    """x float32 [batch, 1] -> y = sqrt(|x|) when safe, else sqrt(x) (NaN for negative x)."""
    nodes = [node("Abs", ["x"], ["a"]), node("Sqrt", ["a"], ["y"])] if safe else [node("Sqrt", ["x"], ["y"])]
    return write_model(onnx_model(nodes, [tensor("x", "float32", ["batch", 1])], [tensor("y", "float32", ["batch", 1])],
                                  name=path.stem), path, check=True)


def onnx_copy(source: Path, target: Path, note: str) -> Path:
    """The same network under another sha256 (another doc string): a second, equivalent model file
    with the same signature."""
    model = onnx.load(str(source))
    model.doc_string = note
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target


# --- external data and archives ------------------------------------------------------------------


def externalize(model: onnx.ModelProto, location: str, *, offset: int = 0, length: int | None = 16) -> onnx.ModelProto:
    """Point the first initializer (W) at external data (the proto is edited by hand: nothing is read
    or written)."""
    tensor_proto = model.graph.initializer[0]
    tensor_proto.ClearField("raw_data")
    tensor_proto.data_location = onnx.TensorProto.EXTERNAL
    del tensor_proto.external_data[:]
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for key, value in entries.items():
        entry = tensor_proto.external_data.add()
        entry.key, entry.value = key, value
    return model


def external_model_dir(root: Path) -> Path:
    """A directory holding model.onnx (add_model) whose W lives in weights.bin."""
    write_model(externalize(add_model(), "weights.bin"), root / "model.onnx")
    (root / "weights.bin").write_bytes(WEIGHTS.tobytes())
    return root


def make_zip(path: Path, members: Mapping[str, bytes] | Iterable[tuple[str | zipfile.ZipInfo, bytes]], *,
             deflate: bool = False) -> Path:
    """A zip archive of ``members`` (name or ZipInfo -> bytes), stored or deflated."""
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    pairs: Iterable[tuple[Any, bytes]] = members.items() if isinstance(members, Mapping) else members
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in pairs:
            archive.writestr(name, data)
    return path


def patch_declared_size(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size a member's central-directory entry declares."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + name_len] == member.encode():
            struct.pack_into("<I", data, at + 24, size)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
