"""TorchScript uploads: the forward schema as a signature, read with ``torch.jit.load`` only ever
inside the intake's sandboxed child (pure: no Django)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from workers.formats.archives import TORCHSCRIPT_MAX_MEMBERS, check_zip_members
from workers.formats.common import FormatError, sha256_file
from workers.formats.inspection import FileEntry, Inspection
from workers.formats.signature import Signature, TensorSpec

_SANDBOXED = False  # set by workers.intake_child: the only place TorchScript is ever loaded


def inspect_torchscript(path: Path, *, max_bytes: int) -> Inspection:
    """Read the forward schema of a TorchScript archive; only ever inside the intake child."""
    if not _SANDBOXED:
        raise RuntimeError("TorchScript runs code when loaded; inspect it with inspect_in_subprocess, never in-process.")
    with zipfile.ZipFile(path) as archive:
        check_zip_members(archive.infolist(), max_bytes=max_bytes, max_members=TORCHSCRIPT_MAX_MEMBERS, max_ratio=100.0)
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
