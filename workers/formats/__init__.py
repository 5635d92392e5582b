"""Safe inspection of model files and datasets (pure: no Django).

This package never unpickles anything. It knows the tensor signature of a model and the rules a
dataset must follow to be used with it. The intake has three steps of rising cost and risk:

- ``sniff`` (web process; ``sniffing.py``): names the format from the first few KB; refuses
  pickles, torch.save checkpoints, other formats and truncated files.
- ``inspect_in_subprocess`` (worker; ``sandboxed.py``): runs ``inspect_model`` (``intake.py``)
  in a fresh, resource-limited child with a scrubbed environment, sandboxed (``workers.sandbox``:
  no network, read-only file system but for its scratch directory; ``workers.intake_child``).
  Every external-data path and archive member is checked from metadata before any loader
  touches a file (``onnx_checks.py``, ``archives.py``); only then do the ONNX checker and an
  onnxruntime session (or ``torch.jit.load``, only ever in that child: ``torchscript.py``) run.
- ``check_dataset`` (``datasets.py``): an .npz checked against the model's signature, headers
  before data.

The names below are the package's interface; a test that patches a module attribute patches it
in the module that reads it (``workers.formats.torchscript._SANDBOXED``, not here).
"""

from workers.formats.archives import extract_archive
from workers.formats.common import FormatError, sha256_file
from workers.formats.datasets import DatasetInfo, check_dataset
from workers.formats.inspection import FileEntry, Inspection
from workers.formats.intake import inspect_model
from workers.formats.limits import FALLBACK_MAX_IR_VERSION, FALLBACK_MAX_OPSETS, RuntimeLimits, runtime_limits
from workers.formats.sandboxed import inspect_in_subprocess
from workers.formats.signature import (
    ONNX_ELEM_TYPES,
    Signature,
    TensorSpec,
    model_inputs,
    read_npz,
    signature_from_onnx,
    signature_from_onnx_model,
)
from workers.formats.sniffing import ACCEPTED_FORMATS, CHECKPOINT_MESSAGE, PICKLE_MESSAGE, sniff
from workers.formats.torchscript import torch_error_text

__all__ = [
    "ACCEPTED_FORMATS",
    "CHECKPOINT_MESSAGE",
    "FALLBACK_MAX_IR_VERSION",
    "FALLBACK_MAX_OPSETS",
    "ONNX_ELEM_TYPES",
    "PICKLE_MESSAGE",
    "DatasetInfo",
    "FileEntry",
    "FormatError",
    "Inspection",
    "RuntimeLimits",
    "Signature",
    "TensorSpec",
    "check_dataset",
    "extract_archive",
    "inspect_in_subprocess",
    "inspect_model",
    "model_inputs",
    "read_npz",
    "runtime_limits",
    "sha256_file",
    "signature_from_onnx",
    "signature_from_onnx_model",
    "sniff",
    "torch_error_text",
]
