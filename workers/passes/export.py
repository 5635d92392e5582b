"""export: TorchScript archive (.pt) -> ONNX with a dynamic batch axis, checked against torch.

- The archive is loaded with ``torch.jit.load(map_location="cpu")`` only (no pickle of Python
  objects); an ONNX file or anything that is not a TorchScript zip is refused.
- Input names come from the TorchScript ``forward`` schema (``self`` skipped). The example inputs
  and the check data come from ``validation_data`` (an .npz whose arrays are named after the
  inputs). When the schema's names are not in the dataset (e.g. ``nn.Sequential`` calls its
  argument ``input``) and the dataset holds exactly as many non-label arrays as there are inputs,
  they are matched by position and the ONNX inputs take the dataset's names, so that the same
  dataset feeds the exported model in later passes.
- torch 2.13's default exporter is the dynamo one (needs opset >= 18, splits weights into a
  ``.onnx.data`` file): ``dynamo=False`` is used, which writes one file at the requested opset.
- After export, torch and onnxruntime run the first <= 64 validation rows (a batch size different
  from the 2-row example, so the dynamic batch axis is exercised). The max abs error must be within
  ``tolerance * max(1, max|reference|)``, else ``AccuracyError`` (and no model is left behind).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workers import ort
from workers.formats import FormatError, read_npz, torch_error_text
from workers.passes import _onnx_util as util
from workers.passes.base import AccuracyError, PassInputError, PassResult, UnsupportedModelError, data_field
from workers.passes.frame import PassRun

NAME = "export"
_EXAMPLE_ROWS = 2
_CHECK_ROWS = 64
_LABEL_KEYS = ("labels", "label", "targets", "target", "y")
_MIN_OPSET, _MAX_OPSET = 7, 20  # what torch 2.13's TorchScript-based exporter writes


@dataclass(frozen=True)
class Config:
    """Options of the export pass (``validation_data`` is required at run time)."""

    opset: int = 17
    tolerance: float = 1e-4
    validation_data: Path | None = data_field()

    def __post_init__(self) -> None:
        if isinstance(self.validation_data, str):
            object.__setattr__(self, "validation_data", Path(self.validation_data))
        if not isinstance(self.opset, int) or not _MIN_OPSET <= self.opset <= _MAX_OPSET:
            raise PassInputError(
                f"opset must be an integer from {_MIN_OPSET} to {_MAX_OPSET} (the TorchScript exporter's "
                f"range); got {self.opset!r}."
            )
        if not self.tolerance > 0:
            raise PassInputError(f"tolerance must be a positive number; got {self.tolerance!r}.")


def _check_source(src: Path) -> None:
    if not src.is_file():
        raise PassInputError(f"The export pass was given {src}, which is not a file.")
    if zipfile.is_zipfile(src):
        return
    try:
        import onnx

        onnx.load(str(src), load_external_data=False)
    except Exception:  # noqa: BLE001 - not ONNX either
        raise PassInputError(
            f"{src.name} is not a TorchScript archive; save the model with torch.jit.save "
            "(torch.jit.script or torch.jit.trace) and upload the .pt file."
        ) from None
    raise PassInputError(f"{src.name} is already an ONNX model; export takes a TorchScript archive (.pt).")


def _load_torchscript(src: Path) -> Any:
    import torch

    try:
        module = torch.jit.load(str(src), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError and friends
        raise PassInputError(
            f"{src.name} could not be loaded as TorchScript ({exc.__class__.__name__}: {torch_error_text(exc)}); "
            "a checkpoint saved with torch.save is not TorchScript: save it with torch.jit.save."
        ) from exc
    module.eval()
    return module


def _schema_inputs(module: Any) -> list[str]:
    try:
        arguments = module.forward.schema.arguments
    except AttributeError as exc:
        raise UnsupportedModelError("The TorchScript module has no forward method to export.") from exc
    return [arg.name for arg in arguments if arg.name != "self"]


def _match_inputs(names: list[str], arrays: dict[str, np.ndarray]) -> tuple[list[str], list[np.ndarray], str | None]:
    """(ONNX input names, arrays in forward's order, a note when matched by position)."""
    if all(name in arrays for name in names):
        return names, [arrays[name] for name in names], None
    candidates = [key for key in arrays if key not in _LABEL_KEYS]
    if len(candidates) == len(names):
        note = (
            f"forward() names its input(s) {', '.join(names)}, which the dataset lacks; matched the "
            f"dataset's {', '.join(candidates)} by position and named the ONNX inputs after them."
        )
        return candidates, [arrays[key] for key in candidates], note
    raise PassInputError(
        f"The validation dataset must hold one array per forward() input ({', '.join(names)}); "
        f"it has {', '.join(sorted(arrays)) or 'no arrays'}."
    )


def _flatten(outputs: Any) -> list[Any]:
    import torch

    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, (tuple, list)):
        flat: list[Any] = []
        for item in outputs:
            flat.extend(_flatten(item))
        return flat
    raise UnsupportedModelError(
        f"forward() returns {type(outputs).__name__}; export handles tensors and tuples/lists of tensors."
    )


def _torch_outputs(module: Any, arrays: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        return [t.detach().cpu().numpy() for t in _flatten(module(*[torch.from_numpy(a) for a in arrays]))]


def _read_dataset(validation_data: Path | None) -> dict[str, np.ndarray]:
    """The validation dataset's arrays; it is required (example inputs and the check come from it)."""
    if validation_data is None:
        raise PassInputError(
            "Export needs a validation dataset (.npz with one array per model input) to build example "
            "inputs and to check the ONNX model against TorchScript."
        )
    try:
        return read_npz(Path(validation_data))
    except FormatError as exc:
        raise PassInputError(f"The validation dataset cannot be used: {exc}") from exc


def _inputs(module: Any, data: dict[str, np.ndarray]) -> tuple[list[str], list[np.ndarray], list[str]]:
    """(ONNX input names, the dataset's arrays in forward's order, notes)."""
    names, arrays, match_note = _match_inputs(_schema_inputs(module), data)
    notes = [match_note] if match_note else []
    converted = []
    for name, array in zip(names, arrays, strict=True):
        if array.dtype == np.float64:  # torch weights are float32; float64 data would not multiply
            array = array.astype(np.float32)
            notes.append(f"Input {name} was float64 in the dataset; fed as float32.")
        converted.append(np.ascontiguousarray(array))
    if min(len(a) for a in converted) == 0:
        raise PassInputError("The validation dataset has no rows.")
    return names, converted, notes


def _output_names(module: Any, example: list[np.ndarray]) -> list[str]:
    """One name per (flattened) output, learned by running the example through torch."""
    try:
        outputs = _torch_outputs(module, example)
    except (PassInputError, UnsupportedModelError):
        raise
    except Exception as exc:  # noqa: BLE001 - the model rejected the data
        raise PassInputError(f"The TorchScript model failed on the validation data: {torch_error_text(exc, 400)}") from exc
    return ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]


def _export(module: Any, example: list[np.ndarray], names: list[str], output_names: list[str], opset: int) -> Any:
    """The onnx.ModelProto of the TorchScript exporter, batch axis dynamic on every input and output."""
    import onnx
    import torch

    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
            torch.onnx.export(
                module,
                tuple(torch.from_numpy(a) for a in example),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=names,
                output_names=output_names,
                dynamic_axes={name: {0: "batch"} for name in names + output_names},
                do_constant_folding=True,
            )
    except Exception as exc:  # noqa: BLE001 - exporter errors name the unsupported op
        raise UnsupportedModelError(f"torch.onnx.export (TorchScript exporter, opset {opset}) failed: {str(exc)[:600]}") from exc
    return onnx.load_from_string(buffer.getvalue())


def _check(module: Any, out_path: Path, names: list[str], check: list[np.ndarray], tolerance: float) -> float:
    """Max abs error of onnxruntime vs torch on the check rows; out of tolerance -> AccuracyError."""
    try:
        ort_out = ort.session(out_path).run(None, dict(zip(names, check, strict=True)))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UnsupportedModelError(f"onnxruntime could not run the exported model: {str(exc)[:600]}") from exc
    reference = _torch_outputs(module, check)
    error = util.max_abs_error(reference, ort_out)
    scale = max(1.0, util.max_abs_value(reference))
    if not error <= tolerance * scale:
        raise AccuracyError(
            f"The exported ONNX model differs from TorchScript by {error:.3g} (max abs error on "
            f"{len(check[0])} validation rows), over the tolerance {tolerance:g} x {scale:.3g}. "
            "The model may use ops the exporter translates approximately, random ops, or trace-time "
            "constants (shapes baked in by torch.jit.trace)."
        )
    return error


def run(src: Path, dst: Path, config: Config | None = None) -> PassResult:
    """Export a TorchScript archive to ``dst/model.onnx`` and check it against TorchScript."""
    config = config or Config()
    with PassRun(NAME, src, dst, config) as job:
        _check_source(job.src)
        data = _read_dataset(config.validation_data)
        module = _load_torchscript(job.src)
        names, arrays, notes = _inputs(module, data)
        example, check = [a[:_EXAMPLE_ROWS] for a in arrays], [a[:_CHECK_ROWS] for a in arrays]
        output_names = _output_names(module, example)
        job.save(_export(module, example, names, output_names, config.opset))
        metrics = {
            "max_abs_error": _check(module, job.out, names, check, config.tolerance),
            "opset": config.opset,
            "size_bytes": util.file_size(job.out),
            "size_before": util.file_size(job.src),
            "inputs": names,
            "outputs": output_names,
            "checked_rows": len(check[0]),
        }
        return job.result(metrics, notes)
