"""``inspect_in_subprocess``: ``inspect_model`` in the intake's sandboxed child,
``workers.intake_child`` (pure: no Django); ``check_dataset_in_subprocess``: ``check_dataset`` there.

The child runs through ``workers.child`` (scrubbed environment, its own session, its process
group killed at the wall-clock limit); here its end becomes an Inspection or a FormatError in the
intake's own words.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from workers import child
from workers.formats.common import FormatError
from workers.formats.datasets import DatasetInfo
from workers.formats.inspection import Inspection
from workers.formats.signature import Signature

CHILD_MODULE = "workers.intake_child"
_TEST_HOOKS = frozenset({"segfault", "sleep", "spin", "memory", "forge", "env"})
_CRASH = child.CrashWords(
    cpu="Loading the model used more than {cpu_seconds} s of CPU time ({label}) and was stopped.",
    killed="The model loader was killed ({label}), most likely for exceeding the intake limits "
           "({memory_mb} MB of memory, {cpu_seconds} s of CPU).",
    crashed="The model loader crashed ({label}) while reading the model; the file is malformed or triggers a bug "
            "in the loader. Re-export the model with a current exporter and upload again.",
)


def inspect_in_subprocess(
    path: Path,
    *,
    max_bytes: int,
    memory_mb: int = 2048,
    cpu_seconds: int = 120,
    workdir: Path | None = None,
    max_output_elements: int | None = None,
    wall_seconds: float | None = None,
    sandbox: bool = True,
    _test_hook: str | None = None,
) -> Inspection:
    """Run inspect_model in a fresh child process and return its Inspection.

    The child gets an address-space limit (``memory_mb``), a CPU-time limit, no core dumps, a
    scrubbed environment and an empty scratch directory as cwd and HOME; the parent also stops it
    after ``wall_seconds`` (default: ``cpu_seconds`` + 30). With ``sandbox`` (workers.sandbox) it
    also has no network and a read-only file system except its scratch directory and ``workdir``;
    when the host cannot give it one, the inspection fails with the reason. A crash, a timeout or
    running out of memory becomes a FormatError; the calling process is never at risk. This is the
    only way TorchScript uploads are ever loaded. ``_test_hook`` exists for the test-suite only.
    """
    if _test_hook is not None and _test_hook not in _TEST_HOOKS:
        raise ValueError(f"unknown test hook {_test_hook!r}")
    wall = float(wall_seconds if wall_seconds is not None else cpu_seconds + 30)
    command = _command(path, max_bytes=max_bytes, memory_mb=memory_mb, cpu_seconds=cpu_seconds, workdir=workdir,
                       sandbox=sandbox, test_hook=_test_hook)
    if max_output_elements is not None:  # the answer cap the declared outputs must fit
        command += ["--max-output-elements", str(int(max_output_elements))]
    with tempfile.TemporaryDirectory(prefix="modelhub-intake-") as scratch:
        try:
            finished = child.run(command, scratch, wall)
        except child.ChildTimeout as exc:
            raise FormatError(f"Inspecting the model took longer than {exc.seconds:.0f} s and was stopped; the model "
                              "is too large or loading it hangs.") from None
    return _child_result(finished, memory_mb=memory_mb, cpu_seconds=cpu_seconds)


def check_dataset_in_subprocess(
    path: Path,
    signature: Signature,
    *,
    max_bytes: int,
    max_unpacked_bytes: int,
    purpose: str = "validation",
    memory_mb: int = 2048,
    cpu_seconds: int = 120,
    sandbox: bool = True,
) -> DatasetInfo:
    """``check_dataset`` in the intake's sandboxed, memory-limited child: the declared sizes are
    checked before anything is decompressed, and the arrays are unpacked there, never in the calling
    (web) process. A refusal, a crash or running out of memory becomes a FormatError."""
    command = _command(path, max_bytes=max_bytes, memory_mb=memory_mb, cpu_seconds=cpu_seconds, workdir=None,
                       sandbox=sandbox, test_hook=None)
    command += ["--dataset-signature", json.dumps(signature.to_dict()), "--purpose", purpose,
                "--max-unpacked-bytes", str(int(max_unpacked_bytes))]
    with tempfile.TemporaryDirectory(prefix="modelhub-dataset-") as scratch:
        try:
            finished = child.run(command, scratch, float(cpu_seconds + 30))
        except child.ChildTimeout as exc:
            raise FormatError(f"Checking the dataset took longer than {exc.seconds:.0f} s and was stopped.") from None
    if finished.returncode >= 0:
        payload = child.last_result(finished.stdout)
        if payload is not None and payload.get("ok") and "dataset" in payload:
            return DatasetInfo.from_dict(payload["dataset"])
        if payload is not None and payload.get("kind") == "memory":
            raise FormatError(f"Unpacking the dataset needs more than the limit of {memory_mb} MB of memory; "
                              "upload fewer samples.")
        if payload is not None and payload.get("kind") == "format":
            raise FormatError(str(payload.get("message", "The dataset was refused.")))
    raise FormatError(f"The dataset could not be checked (the checker ended with status {finished.returncode}, "
                      f"most likely over the limit of {memory_mb} MB of memory); upload fewer samples.")


def _command(path: Path, *, max_bytes: int, memory_mb: int, cpu_seconds: int, workdir: Path | None,
             sandbox: bool, test_hook: str | None) -> list[str]:
    command = [
        sys.executable, "-B", "-m", CHILD_MODULE, str(Path(path).resolve()),
        "--max-bytes", str(int(max_bytes)), "--memory-mb", str(int(memory_mb)),
        "--cpu-seconds", str(int(cpu_seconds)),
    ]
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)  # the sandbox makes only existing directories writable
        command += ["--workdir", str(Path(workdir).resolve())]
    if not sandbox:
        command.append("--no-sandbox")
    if test_hook is not None:
        command += ["--test-hook", test_hook]
    return command


def _child_result(finished: child.Finished, *, memory_mb: int, cpu_seconds: int) -> Inspection:
    if finished.returncode < 0:
        error = FormatError(_CRASH.message(-finished.returncode, memory_mb=memory_mb, cpu_seconds=cpu_seconds))
    else:
        payload = child.last_result(finished.stdout)
        if payload is not None and payload.get("ok"):
            return Inspection.from_dict(payload["inspection"])
        error = _refusal(payload, finished.returncode, memory_mb)
    error.stderr_tail = finished.stderr_tail  # type: ignore[attr-defined]  # for logs, never shown to users
    raise error


def _refusal(payload: dict[str, Any] | None, returncode: int, memory_mb: int) -> FormatError:
    """The FormatError of a child that reported a failure, or none at all."""
    if payload is None:
        return FormatError(f"The model loader exited with status {returncode} before reporting a result.")
    if payload.get("kind") == "memory":
        return FormatError(
            f"Loading the model needs more memory than the intake limit of {memory_mb} MB; "
            "upload a smaller model or ask an administrator to raise the limit."
        )
    if payload.get("kind") == "sandbox":
        return FormatError(f"The model was not inspected: {str(payload.get('message', ''))[:1000]}")
    if payload.get("kind") == "format":
        return FormatError(str(payload.get("message", "The model was refused.")))
    return FormatError(f"The model could not be inspected: {str(payload.get('message', ''))[:400]}")
