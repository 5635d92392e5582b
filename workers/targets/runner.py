"""Measuring variants in a JavaScript runtime: ``node`` (onnxruntime-node) and ``browser-wasm``
(onnxruntime-web's wasm backend in headless Chromium) (pure: no Django).

``benchmark_many`` is ``workers.evaluation.bench.benchmark_many`` for these targets: the same
children-per-model, interleaved rounds (order rotated each round), figures with intervals and
``BenchReport`` shape; only the child differs (``RUNNERS``). Loading a child is the load check: a
variant that cannot create a session in the target is left out before any round, with a reason
that names the op the target lacks (``load_problem``). ``outputs`` runs a model on rows in the
target, for accuracy measured on the target itself (``workers.targets.fidelity``).
"""

from __future__ import annotations

import base64
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workers.evaluation import bench, bench_child
from workers.evaluation.bench import BenchConfig, BenchError, Child, Run, ToMeasure
from workers.formats import Signature, read_npz
from workers.targets.capabilities import JS_TARGETS, PROVIDER_OF_TARGET

ROOT = Path(__file__).resolve().parents[2]
NODE_RUNNER = ROOT / "workers" / "targets" / "js" / "node_runner.mjs"
_RUNTIME_NAMES = {"node": "onnxruntime-node", "browser-wasm": "onnxruntime-web (wasm)"}
# onnxruntime's words when no kernel exists: "Could not find an implementation for ConvInteger(10)
# node with name 'conv_quant'".
_MISSING_KERNEL = re.compile(r"implementation for (?P<op>[A-Za-z0-9_]+)\((?P<opset>\d+)\) node with name '?(?P<node>[^']*)'?")
# ... and when the op's domain is not there at all: "com.microsoft.nchwc:Conv(-1) is not a
# registered function/op" (x86 NCHWc layout ops, which the wasm build does not have).
_UNREGISTERED = re.compile(r"(?P<domain>[A-Za-z0-9_.]+):(?P<op>[A-Za-z0-9_]+)\(-?\d+\) is not a registered function/op")


def runner_argv(target: str, scratch: str) -> list[str]:
    """The command of the measuring child of ``target`` (Debian's node, or Python with Chromium,
    whose profile goes under ``scratch``); a runtime that is not installed is a BenchError that
    says how to install it."""
    if target == "node":
        node = shutil.which("node")
        if node is None:
            raise BenchError("The node target needs Debian's node on PATH (apt-get install nodejs).")
        if not (ROOT / "node_modules" / "onnxruntime-node" / "package.json").is_file():
            raise BenchError("onnxruntime-node is not installed in node_modules; run `make install` (npm ci).")
        return [node, str(NODE_RUNNER)]
    if target == "browser-wasm":
        return [sys.executable, "-m", "workers.targets.browser_child", scratch]
    raise BenchError(f"Unknown JavaScript target {target!r}; use one of {', '.join(JS_TARGETS)}.")


def load_problem(target: str, message: str) -> str:
    """The reason a variant does not load in ``target``, naming the op when the runtime says which."""
    runtime = _RUNTIME_NAMES.get(target, target)
    missing = _MISSING_KERNEL.search(message)
    unregistered = _UNREGISTERED.search(message)
    if missing:
        node = f"node {missing['node']!r}, " if missing["node"] else ""
        op, where = missing["op"], f" ({node}opset {missing['opset']})"
    elif unregistered:
        op, where = unregistered["op"], f" (domain {unregistered['domain']})"
    else:
        return f"The variant does not load in {runtime}: {message}"
    return (f"The variant does not load in {runtime}: it has no kernel for {op}{where}. "
            f"Choose a recipe without {op} for the {target} target. ({message})")


# --- tensors on the wire -----------------------------------------------------------------------


def wire(array: np.ndarray) -> dict[str, Any]:
    """An array as the JavaScript side reads it: dtype, dims and its little-endian bytes in base64."""
    array = np.ascontiguousarray(array)
    data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return {"dtype": "bool" if array.dtype == np.bool_ else str(array.dtype), "dims": list(array.shape),
            "b64": base64.b64encode(data).decode("ascii")}


def unwire(tensor: dict[str, Any]) -> np.ndarray:
    """The array of a tensor the JavaScript side sent back."""
    dtype = np.dtype("bool" if tensor["dtype"] == "bool" else tensor["dtype"]).newbyteorder("<")
    return np.frombuffer(base64.b64decode(tensor["b64"]), dtype=dtype).reshape(tensor["dims"]).astype(dtype.newbyteorder("="))


# --- the children ------------------------------------------------------------------------------


def _feeds(signature: Signature, config: BenchConfig, data: Path | None, notes: list[str]) -> dict[str, Any]:
    """The inputs per batch size, built as the native child builds them (same rows, same seed)."""
    arrays = read_npz(Path(data)) if data else None
    return {str(batch): {name: wire(value) for name, value in bench_child.batch_inputs(signature, batch, arrays).items()}
            for batch in bench_child.batch_sizes(signature, config, notes)}


def _fingerprint(target: str, config: BenchConfig, runtime: dict[str, Any]) -> dict[str, Any]:
    """The hardware, and the runtime that measured: its name and version, the backend, threads."""
    fingerprint = bench.hardware_fingerprint("cpu", config.threads)
    fingerprint.update({"provider": PROVIDER_OF_TARGET[target], "target": target,
                        "onnxruntime": runtime.get("ort_version"), "threads": runtime.get("threads", config.threads),
                        **{key: runtime.get(key) for key in ("runtime", "runtime_version", "ort_package", "backend",
                                                               "simd", "isolated") if key in runtime}})
    return fingerprint


class TargetChild(Child):
    """A measuring child of a JavaScript target with a scratch directory of its own (the browser's
    profile), removed once the child's whole process group is killed: the child itself is killed
    right after its last answer, before it could tidy up."""

    def __init__(self, target: str, config: BenchConfig) -> None:
        self.scratch = tempfile.mkdtemp(prefix="modelhub-target-")
        try:
            super().__init__(timeout_s=config.effective_timeout_s, threads=config.threads,
                             argv=runner_argv(target, self.scratch))
        except BaseException:
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise

    def close(self) -> None:
        """Kill the child's process group, then remove its scratch directory."""
        try:
            super().close()
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)


def open_child(target: str, model: Path, feeds: dict[str, Any], config: BenchConfig) -> tuple[Child, dict[str, Any]]:
    """A child of ``target`` with ``model`` loaded (the load check) and warmed up on ``feeds``."""
    child = TargetChild(target, config)
    request = {"op": "load", "model": str(Path(model).resolve()), "feeds": feeds, "threads": config.threads,
               "warmup_min": config.warmup_min, "warmup_max": config.warmup_max, "time_budget_s": config.time_budget_s}
    try:
        answer = child.ask(request)
    except BenchError as exc:
        child.close()
        text = str(exc)
        raise BenchError(load_problem(target, text) if "could not load the model" in text else text) from None
    return child, answer


def _load(item: ToMeasure, target: str, config: BenchConfig, data: Path | None) -> tuple[list[Child], dict[str, Any]]:
    """``config.processes`` children of ``target``, each with the model loaded and warmed up."""
    if not Path(item.model).is_file():
        raise BenchError(f"There is no model file for {item.key}.")
    notes: list[str] = []
    feeds = _feeds(item.signature, config, data, notes)
    children: list[Child] = []
    answers: list[dict[str, Any]] = []
    try:
        for _ in range(config.processes):
            child, answer = open_child(target, item.model, feeds, config)
            children.append(child)
            answers.append(answer)
    except BenchError:
        for child in children:
            child.close()
        raise
    first = answers[0]
    return children, {**first, "notes": notes + list(first.get("notes", [])),
                      "fingerprint": _fingerprint(target, config, first.get("runtime", {}))}


def benchmark_many(items: Sequence[ToMeasure], config: BenchConfig, target: str, data: Path | None = None) -> Run:
    """Measure several models together in ``target``, in interleaved rounds, as the native
    ``bench.benchmark_many`` does: a model that does not load or fails is left out with its error."""
    run = bench.measure_loaded(items, config, lambda item: _load(item, target, config, data), {"target": target})
    for report in run.reports.values():
        report.config["target"] = target
    return run


def outputs(target: str, model: Path, inputs: dict[str, np.ndarray], step: int, *, threads: int = 1,
            timeout_s: float = 300.0) -> list[np.ndarray]:
    """The model's outputs on ``inputs`` computed in ``target``, ``step`` rows per call (a
    BenchError, naming the missing op, when it does not load there)."""
    config = BenchConfig(threads=threads, processes=1, timeout_s=timeout_s)
    child, _ = open_child(target, model, {}, config)
    try:
        answer = child.ask({"op": "outputs", "inputs": {name: wire(value) for name, value in inputs.items()},
                            "step": int(step)})
        child.ask({"op": "finish"})
    finally:
        child.close()
    return [unwire(tensor) for tensor in answer["outputs"]]
