"""The tensor signature of a model, and the .npz arrays that feed it (pure: no Django)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workers.formats.common import FormatError

# Element types we can feed and read. Keys are ONNX TensorProto enum names in lower case.
ONNX_ELEM_TYPES: dict[int, str] = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
}


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output: element type and shape (str entries are symbolic dims)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict[str, Any]:
        """As stored in JSON."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        """From ``to_dict``'s form."""
        return cls(name=data["name"], dtype=data["dtype"], shape=tuple(data["shape"]))


@dataclass(frozen=True)
class Signature:
    """The inputs and outputs of a model, as stored on ModelVersion.signature."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """As stored on ModelVersion.signature."""
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        """From ``to_dict``'s form."""
        return cls(
            inputs=tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
            extra=dict(data.get("extra", {})),
        )

    @property
    def input_names(self) -> list[str]:
        """The names of the inputs, in order."""
        return [t.name for t in self.inputs]


def _value_info_spec(value_info: Any) -> TensorSpec:
    tensor_type = value_info.type.tensor_type
    dims: list[int | str] = []
    for i, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or f"dim{i}")
    dtype = ONNX_ELEM_TYPES.get(tensor_type.elem_type, f"onnx:{tensor_type.elem_type}")
    return TensorSpec(name=value_info.name, dtype=dtype, shape=tuple(dims))


def signature_from_onnx_model(model: Any) -> Signature:
    """Read the signature of a loaded onnx.ModelProto (initializers are not inputs)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(_value_info_spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_value_info_spec(v) for v in model.graph.output)
    return Signature(inputs=inputs, outputs=outputs)


def signature_from_onnx(path: Path) -> Signature:
    """Read the signature of an ONNX file without loading external weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return signature_from_onnx_model(model)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Load every array of an .npz dataset, refusing object arrays (they need pickle)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise FormatError(
                "The dataset holds Python objects, which need pickle to load; save plain numeric "
                "arrays with numpy.savez instead."
            ) from exc
        raise FormatError(f"The dataset is not a readable .npz file: {exc}") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise FormatError(f"The dataset is not a readable .npz file: {exc}") from exc


def model_inputs(arrays: dict[str, np.ndarray], signature: Signature) -> dict[str, np.ndarray]:
    """The arrays of a dataset that feed the model, cast to the signature's element types."""
    return {spec.name: arrays[spec.name].astype(spec.dtype, copy=False) for spec in signature.inputs}
