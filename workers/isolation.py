"""Running a pass in the sandboxed child ``workers.pass_child`` instead of the calling process
(pure: no Django).

TorchScript is code: ``torch.jit.load`` runs the archive's ``__setstate__``, and ``forward`` runs
whatever the uploader scripted. A pass that loads one (export, or any pass given a TorchScript
file) runs in a fresh child with no network and a read-only file system except its output
directory and a scratch directory (``workers.sandbox``), a scrubbed environment and resource
limits (``workers.child``). ``run_isolated`` returns the PassResult, or raises the PassError
subclass, that the pass's own ``run`` would have; a crash, a timeout or running out of memory
becomes a PassError too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from workers import child, formats
from workers.passes import base

CHILD_MODULE = "workers.pass_child"
_ERRORS: dict[str, type[base.PassError]] = {
    error.__name__: error
    for error in (base.PassError, base.UnsupportedModelError, base.AccuracyError, base.PassInputError)
}
_CRASH = child.CrashWords(
    killed="The {pass_name} pass was killed ({label}), most likely for exceeding its limits "
           "({memory_mb} MB of memory, MODELHUB_PASS_MEMORY_MB).",
    cpu="The {pass_name} pass used up its CPU time ({label}) and was stopped.",
    crashed="The {pass_name} pass crashed ({label}) while running on the model; the model "
            "triggers a bug in torch or onnxruntime, or was built to.",
)


def needs_isolation(pass_name: str, src: Path) -> bool:
    """Whether running ``pass_name`` on ``src`` may run code of the model's: export always loads
    TorchScript, and any other pass is given one when ``src`` is not an ONNX file."""
    if pass_name == "export":
        return True
    try:
        return formats.sniff(Path(src), Path(src).name) != "onnx"
    except formats.FormatError:
        return True  # not recognisably ONNX: never load it in this process


def run_isolated(pass_name: str, src: Path, dst: Path, config: Any, *, memory_mb: int = 8192,
                 wall_seconds: float = 3600.0, sandbox: bool = True) -> base.PassResult:
    """Run ``pass_name``'s ``run(src, dst, config)`` in the sandboxed child and return its PassResult.

    ``dst`` is created here (the sandbox makes only existing directories writable). The child is
    stopped after ``wall_seconds``; ``memory_mb`` bounds its address space. ``sandbox=False``
    (MODELHUB_SANDBOX=off) keeps only the resource limits.
    """
    wall = max(1.0, float(wall_seconds))
    dst = Path(dst).resolve()
    dst.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-B", "-m", CHILD_MODULE, pass_name, str(Path(src).resolve()), str(dst),
        "--config", json.dumps(_config_spec(config)), "--memory-mb", str(int(memory_mb)),
        "--cpu-seconds", str(math.ceil(wall) + 10),  # a backstop: the wall-clock limit comes first
    ]
    if not sandbox:
        command.append("--no-sandbox")
    with tempfile.TemporaryDirectory(prefix="modelhub-pass-") as scratch:
        try:
            finished = child.run(command, scratch, wall)
        except child.ChildTimeout as exc:
            raise base.PassError(f"The {pass_name} pass took longer than {exc.seconds:.0f} s and was stopped; the "
                                 "model is too large or loading it hangs.") from None
    if finished.returncode < 0:
        raise base.PassError(_CRASH.message(-finished.returncode, pass_name=pass_name, memory_mb=memory_mb))
    payload = child.last_result(finished.stdout)
    if payload is None:
        raise base.PassError(f"The {pass_name} pass exited with status {finished.returncode} before reporting a result.")
    if not payload.get("ok"):
        raise _error(pass_name, payload, memory_mb)
    return _checked_result(pass_name, dst, payload.get("result"))


def _config_spec(config: Any) -> dict[str, Any]:
    """The config as JSON for ``make_config`` in the child: options, and data paths apart."""
    data = {}
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        if value is not None and (isinstance(value, Path) or spec.metadata.get("data")):
            data[spec.name] = str(Path(value).resolve())
    return {"options": base.config_to_json(config), "data": data}


def _error(pass_name: str, payload: dict[str, Any], memory_mb: int) -> base.PassError:
    kind, message = payload.get("kind"), str(payload.get("message", ""))[:2000]
    if kind in _ERRORS:
        return _ERRORS[kind](message)
    if kind == "memory":
        return base.PassError(f"The {pass_name} pass needs more memory than its limit of {memory_mb} MB "
                              "(MODELHUB_PASS_MEMORY_MB).")
    if kind == "sandbox":
        return base.PassError(f"The {pass_name} pass did not run: {message}")
    return base.PassError(f"The {pass_name} pass failed: {message[:400]}")


def _checked_result(pass_name: str, dst: Path, data: Any) -> base.PassResult:
    """The child's PassResult, accepted only when its model is the regular file dst/model.onnx: the
    child ran the model's code, so the path it reports is not trusted to point anywhere else."""
    try:
        result = base.PassResult(artifact=Path(data["artifact"]), pass_name=pass_name, config=dict(data["config"]),
                                 metrics=dict(data["metrics"]), notes=[str(note) for note in data["notes"]],
                                 duration_s=float(data["duration_s"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise base.PassError(f"The {pass_name} pass reported a malformed result.") from exc
    expected = dst / base.OUTPUT_NAME
    try:
        info = os.lstat(expected)
    except FileNotFoundError:
        info = None
    if result.artifact != expected or info is None or not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        raise base.PassError(f"The {pass_name} pass did not leave its model as one regular file "
                             f"{base.OUTPUT_NAME} in its output directory.")
    return result
