"""The checks an ONNX upload passes before anything runs it, then the two that load it: the ONNX
checker and an onnxruntime session (pure: no Django).

Every external-data path is checked from metadata (relative, no symlink or hardlink anywhere, in
range) before any loader touches a file. Operators outside ai.onnx, ai.onnx.ml and com.microsoft
(and the model's own functions), and those that run code or native binaries, are refused.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from workers import ort
from workers.formats.common import UNSAFE_NAME_CHARS, FormatError, mb, show
from workers.formats.limits import RuntimeLimits

PROTOBUF_LIMIT = 2**31 - 1  # one protobuf message cannot be larger; bigger models need external data

ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
# PyOp runs Python; EPContext and Snpe point at or embed native binaries for an execution provider.
DENIED_OPS = frozenset({("com.microsoft", "PyOp"), ("com.microsoft", "EPContext"), ("com.microsoft", "Snpe")})

# Bits per element of ONNX tensor types (strings have no fixed size and are left out).
_ELEM_BITS: dict[int, int] = {
    1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 14: 64, 15: 128,
    16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2, 27: 6, 28: 6,
}


def parse_onnx(path: Path) -> Any:
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


def check_ir_version(model: Any, limits: RuntimeLimits) -> None:
    """Refuse an IR version newer than the installed onnxruntime loads."""
    if model.ir_version > limits.max_ir_version:
        raise FormatError(
            f"The model has ONNX IR version {model.ir_version}; the installed onnxruntime loads IR version "
            f"{limits.max_ir_version} or older. Set model.ir_version = {min(10, limits.max_ir_version)} "
            "before onnx.save (or export with an older onnx) and upload again."
        )


def _opset_sets(model: Any) -> list[Any]:
    return [model.opset_import, *(function.opset_import for function in model.functions)]


def check_opsets(model: Any, limits: RuntimeLimits) -> None:
    """Refuse an opset (of the model or of a local function) newer than onnxruntime supports."""
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


def check_operators(model: Any) -> list[str]:
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
                    f"The model uses operator {node.op_type} from custom domain {show(node.domain)}; modelhub only "
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
            raise FormatError(f"Tensor {show(tensor.name)} declares a negative dimension; the file is corrupt.")
        count *= dim
    bits = _ELEM_BITS.get(tensor.data_type)
    if bits is None:
        return None
    nbytes = (count * bits + 7) // 8
    if nbytes > max_bytes:
        raise FormatError(
            f"Tensor {show(tensor.name)} declares {count:,} elements ({mb(nbytes)}), more than the whole upload "
            f"limit of {mb(max_bytes)}; the file is corrupt or hostile."
        )
    return nbytes


def check_external_data(model: Any, model_dir: Path, *, max_bytes: int) -> dict[str, Path]:
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
    where = f"Tensor {show(name)} keeps its data in {show(location)}, "
    if not location:
        raise FormatError(f"Tensor {show(name)} is marked as external data but names no file; the file is corrupt.")
    if "_ORT_MEM_ADDR_" in location:
        raise FormatError(where + "onnxruntime's in-memory marker; uploads may only name files.")
    if location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise FormatError(where + "an absolute path; external data must sit beside the model (e.g. 'weights.bin').")
    if any(ord(c) < 32 or ord(c) == 127 or c in UNSAFE_NAME_CHARS for c in location):
        raise FormatError(where + "which holds a backslash, colon, wildcard or control character; use a plain file name.")
    parts = location.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise FormatError(where + "which is not a plain relative path inside the model's directory ('..', '.' or '//').")
    return parts


def _external_target(name: str, location: str, model_dir: Path) -> Path:
    """Walk the location one component at a time with lstat: no symlink anywhere, no hardlink."""
    parts = _check_location(name, location)
    where = f"Tensor {show(name)} keeps its data in {show(location)}, "
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
    where = f"Tensor {show(name)} in {show(location)}"
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


def check_no_extra_files(root: Path, used: list[Path]) -> None:
    """Refuse an extracted archive that holds files the model does not use."""
    wanted = {p.resolve() for p in used}
    extra = []
    for directory, _dirs, names in os.walk(root):
        extra.extend(str((Path(directory) / n).relative_to(root)) for n in names if (Path(directory) / n).resolve() not in wanted)
    if extra:
        raise FormatError(
            f"The archive holds file(s) the model does not use: {', '.join(show(n) for n in sorted(extra)[:5])}. "
            "Zip only the .onnx and the external-data files it names."
        )


def _output_dims(model: Any) -> dict[str, list[int | str]]:
    """Each output's dims: declared, with a free one replaced by what shape inference (constants
    propagated) proves; an output whose shape nothing states has no entry."""
    import onnx

    try:
        inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model, data_prop=True).graph.output}
    except Exception:  # noqa: BLE001 - inference is a bonus; the declared shapes and run time still hold
        inferred = {}
    dims: dict[str, list[int | str]] = {}
    for output in model.graph.output:
        if not output.type.tensor_type.HasField("shape"):
            continue
        declared = list(output.type.tensor_type.shape.dim)
        proved = inferred.get(output.name)
        proved_dims = list(proved.type.tensor_type.shape.dim) if proved is not None else []
        if len(proved_dims) != len(declared):
            proved_dims = declared
        dims[output.name] = [d.dim_value if d.HasField("dim_value") else (p.dim_value if p.HasField("dim_value")
                                                                              else d.dim_param or "?")
                             for d, p in zip(declared, proved_dims, strict=True)]
    return dims


def check_output_bound(model: Any, max_elements: int) -> list[str]:
    """Refuse a model whose outputs hold more than ``max_elements`` at their smallest (every symbolic
    dim 1, fixed and proved dims as they are); notes for outputs whose size is free of the inputs.

    A dim named like an input's dim is bounded by the serving input caps; any other symbolic dim
    (detections after NMS, a generated length) is accepted and left to the run-time answer cap,
    because a declaration cannot be trusted anyway: what the session returns is checked at run time.
    """
    input_dims = {d.dim_param for v in model.graph.input for d in v.type.tensor_type.shape.dim if d.dim_param}
    dims = _output_dims(model)
    smallest = sum(math.prod(d if isinstance(d, int) and d > 0 else 1 for d in shape) for shape in dims.values())
    if smallest > max_elements:
        shapes = ", ".join(f"{show(name)} {shape}" for name, shape in list(dims.items())[:4])
        raise FormatError(f"The model's outputs hold at least {smallest:,} elements ({shapes}); an answer holds at "
                          f"most {max_elements:,} (MODELHUB_SERVING_MAX_OUTPUT_ELEMENTS).")
    free = sorted({str(d) for shape in dims.values() for d in shape if isinstance(d, str) and d not in input_dims})
    unshaped = [output.name for output in model.graph.output if output.name not in dims]
    notes = [f"Output dims {', '.join(free[:5])} are not an input's: the answer's size is checked at run time."] if free else []
    if unshaped:
        notes.append(f"Output(s) {', '.join(show(n) for n in unshaped[:5])} declare no shape: checked at run time.")
    return notes


def run_checker(path: Path) -> None:
    """Run the ONNX checker (full check, shape inference included); FormatError with its first line."""
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


def prove_it_loads(path: Path) -> None:
    """Create a CPU session with one thread, as serving will (full graph optimizations)."""
    try:
        ort.session(path, threads=1, inter_threads=1, config={"session.allow_released_opsets_only": "1"})
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types
        text = _ort_error_text(exc)
        if "bad_alloc" in text or "allocate" in text.lower():
            raise MemoryError(text) from exc
        raise FormatError(f"onnxruntime cannot load the model: {text}") from exc
