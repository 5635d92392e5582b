"""What every optimization pass shares: its result, its errors, and safe ONNX writing.

A pass has one shape: ``run(src: Path, dst: Path, config: <Pass>Config) -> PassResult``.
``src`` is the input model file (never changed), ``dst`` a directory the pass owns and writes
only under; the output model is ``dst / "model.onnx"``. ``frame.PassRun`` runs those steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.errors import EngineError

# onnxruntime 1.31 loads IR version <= 13; onnx 1.23 writes 14 by default.
MAX_IR_VERSION = 10
OUTPUT_NAME = "model.onnx"


class PassError(EngineError):
    """A pass could not produce a model; the message tells a person what to change."""


class UnsupportedModelError(PassError):
    """The pass does not handle this kind of graph (the message names what it does handle)."""


class AccuracyError(PassError):
    """The pass produced a model whose outputs are out of the stated tolerance."""


class PassInputError(PassError):
    """The pass was given a config or data it cannot use."""


@dataclass
class PassResult:
    """The outcome of one pass: the model it wrote and the facts it measured on the way."""

    artifact: Path
    pass_name: str
    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON (as the sandboxed pass child hands it back)."""
        return {
            "artifact": str(self.artifact),
            "pass": self.pass_name,
            "config": self.config,
            "metrics": self.metrics,
            "notes": self.notes,
            "duration_s": round(self.duration_s, 4),
        }


def config_to_json(config: Any) -> dict[str, Any]:
    """The public, hashable part of a pass config: data paths are left out on purpose,
    because the same config on the same version must map to the same variant."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Path) or f.metadata.get("data"):
            continue
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def config_hash(pass_name: str, config: dict[str, Any]) -> str:
    """Stable short hash of (pass, config) used to keep variants unique."""
    blob = json.dumps({"pass": pass_name, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def data_field(default: Any = None) -> Any:
    """A config field that points at data (a dataset path): excluded from the config hash."""
    return field(default=default, metadata={"data": True})


def prepare_output(dst: Path) -> Path:
    """Create the pass's output directory and return the path of its model file."""
    dst.mkdir(parents=True, exist_ok=True)
    return dst / OUTPUT_NAME


def save_onnx(model: Any, path: Path) -> Path:
    """Write an onnx.ModelProto as one self-contained file loadable by the pinned onnxruntime.

    Weights are kept inside the file (no external data), so nothing is ever written outside
    ``path``; models over protobuf's 2 GB limit are refused rather than split.
    """
    import onnx

    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    if model.ByteSize() > 2**31 - 1:
        raise PassError("The optimized model is over 2 GB, which a single ONNX file cannot hold.")
    tmp = path.with_name(path.name + ".tmp")
    onnx.save_model(model, str(tmp))
    os.replace(tmp, path)
    return path
