"""The measuring child of ``workers.evaluation.bench``: one model, one process (pure: no Django).

It speaks one JSON object per line on stdin / stdout:

- ``{"op": "load", "model", "signature", "config", "data"}``: import onnxruntime, read the
  baseline memory, reset the peak, load the session, build the inputs and warm each batch size up
  (at least ``warmup_min`` calls, then until the median of the last window moves by no more than
  ``_STABLE_TOLERANCE``, at most ``warmup_max`` calls or the time budget);
- ``{"op": "round", "batch", "calls", "slice_s"}``: ``ROUND_WARMUP`` untimed calls (another model
  ran just before, and caches are cold), then up to ``calls`` timed calls or until ``slice_s``
  passes (at least one); answers the call times in ms;
- ``{"op": "finish"}``: answers the peak memory and exits.

Every answer is ``{"ok": ...}`` or ``{"error": "..."}``. Nothing else reaches stdout: whatever a
library prints, from Python or native code, goes to stderr.

Memory: ``VmRSS`` after importing onnxruntime and building the inputs is the baseline; the kernel's
high-water mark is reset by writing ``5`` to ``/proc/self/clear_refs``; ``VmHWM`` at the end minus
the baseline is the model's peak: weights, arenas and activations. Where the reset is not allowed
the peak includes whatever the process reached before (the report's ``memory_method`` says which).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from workers import ort, sandbox
from workers.child import report
from workers.evaluation.bench import PROVIDERS, BenchConfig, BenchError, hardware_fingerprint
from workers.formats import Signature, read_npz

_WINDOW = 10  # calls per warm-up window
_STABLE_TOLERANCE = 0.03  # warm-up ends when the window median moves by no more than 3 %
_DEFAULT_SYMBOLIC_DIM = 16
ROUND_WARMUP = 2


def _status_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _synthetic(spec: Any, batch: int, rng: np.random.Generator) -> np.ndarray:
    shape = [batch if i == 0 and not isinstance(d, int) else (d if isinstance(d, int) and d > 0
             else _DEFAULT_SYMBOLIC_DIM) for i, d in enumerate(spec.shape)]
    if spec.dtype == "bool":
        return rng.random(shape) < 0.5
    if np.issubdtype(np.dtype(spec.dtype), np.integer):
        return rng.integers(0, 10, size=shape).astype(spec.dtype)  # small non-negative: ids, indices
    return rng.standard_normal(shape).astype(spec.dtype)


def rows(array: np.ndarray, batch: int) -> np.ndarray:
    """The first ``batch`` rows, tiled when the array has fewer."""
    if len(array) == 0:
        raise BenchError("The benchmark dataset has an empty array.")
    repeats = -(-batch // len(array))
    return np.concatenate([array] * repeats)[:batch] if repeats > 1 else array[:batch]


def batch_inputs(signature: Signature, batch: int, data: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """The feeds of one call at ``batch``: the first rows of ``data`` (tiled when it has fewer), or
    inputs synthesized from the signature; the same for native and JavaScript runtimes."""
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in signature.inputs:
        if data is None:
            feeds[spec.name] = _synthetic(spec, batch, rng)
            continue
        if spec.name not in data:
            raise BenchError(f"The benchmark dataset has no array named {spec.name!r}; it has {', '.join(sorted(data))}.")
        feeds[spec.name] = np.ascontiguousarray(rows(data[spec.name], batch).astype(spec.dtype, copy=False))
    return feeds


def _session(model: str, config: BenchConfig) -> Any:
    provider = PROVIDERS[config.provider]
    available = ort.available_providers()
    if provider not in available:
        raise BenchError(f"{provider} is not available in this onnxruntime build (available: {', '.join(available)}).")
    try:
        return ort.session(model, threads=config.threads, inter_threads=1, providers=[provider])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise BenchError(f"onnxruntime could not load the model: {exc}") from exc


def batch_sizes(signature: Signature, config: BenchConfig, notes: list[str]) -> list[int]:
    """A model with a fixed first dimension runs only at that batch size."""
    first = signature.inputs[0].shape[0] if signature.inputs and signature.inputs[0].shape else None
    if isinstance(first, int) and first > 0:
        if set(config.batch_sizes) != {first}:
            notes.append(f"The model's batch dimension is fixed at {first}; only that batch size was measured.")
        return [first]
    return sorted(set(config.batch_sizes))


class Measured:
    """One loaded model in this process: its session, inputs per batch size and memory baseline."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.config = BenchConfig.from_dict(request["config"])
        signature = Signature.from_dict(request["signature"])
        self.notes: list[str] = []
        data = read_npz(Path(request["data"])) if request.get("data") else None
        self.feeds = {b: batch_inputs(signature, b, data) for b in batch_sizes(signature, self.config, self.notes)}
        import onnxruntime  # noqa: F401  (library memory belongs to the baseline, not the model)

        self.baseline_kb = _status_kb("VmRSS") or 0
        self.reset = _reset_peak_rss()
        start = time.perf_counter()
        self.session = _session(request["model"], self.config)
        self.load_ms = (time.perf_counter() - start) * 1000.0

    def call(self, batch: int) -> float:
        start = time.perf_counter()
        try:
            self.session.run(None, self.feeds[batch])
        except Exception as exc:  # onnxruntime's errors on run (shape, type) are not typed
            raise BenchError(f"The model failed at batch size {batch}: {exc}") from exc
        return (time.perf_counter() - start) * 1000.0

    def warm_up(self, batch: int) -> tuple[int, bool]:
        """Call until the window median settles; returns (calls made, whether it settled)."""
        times: list[float] = []
        deadline = time.perf_counter() + self.config.time_budget_s
        while len(times) < self.config.warmup_max:
            times.append(self.call(batch))
            if len(times) >= max(self.config.warmup_min, 2 * _WINDOW):
                last, before = np.median(times[-_WINDOW:]), np.median(times[-2 * _WINDOW: -_WINDOW])
                if abs(last - before) <= _STABLE_TOLERANCE * before:
                    return len(times), True
            if len(times) >= self.config.warmup_min and time.perf_counter() > deadline:
                break
        return len(times), False

    def loaded(self) -> dict[str, Any]:
        warmup = {str(b): self.warm_up(b) for b in self.feeds}
        return {"load_time_ms": self.load_ms, "batches": sorted(self.feeds), "notes": self.notes, "warmup": warmup,
                "fingerprint": hardware_fingerprint(self.config.provider, self.config.threads)}

    def round(self, batch: int, calls: int, slice_s: float) -> dict[str, Any]:
        for _ in range(ROUND_WARMUP):
            self.call(batch)
        times = [self.call(batch)]
        deadline = time.perf_counter() + slice_s
        while len(times) < calls and time.perf_counter() < deadline:
            times.append(self.call(batch))
        return {"times": [round(t, 5) for t in times]}

    def finish(self) -> dict[str, Any]:
        peak_kb = _status_kb("VmHWM") or _status_kb("VmRSS") or 0
        return {"peak_memory_mb": max(peak_kb - self.baseline_kb, 0) / 1024.0,
                "baseline_memory_mb": self.baseline_kb / 1024.0,
                "memory_method": "VmHWM after clear_refs reset - VmRSS baseline" if self.reset
                else "VmHWM - VmRSS baseline (no reset)"}


def _answer(model: Measured | None, request: dict[str, Any]) -> tuple[Measured | None, dict[str, Any]]:
    op = request.get("op")
    if op == "load":
        model = Measured(request)
        return model, model.loaded()
    if model is None:
        raise BenchError(f"The benchmark child got {op!r} before a model was loaded.")
    if op == "round":
        return model, model.round(int(request["batch"]), int(request["calls"]), float(request["slice_s"]))
    if op == "finish":
        return model, model.finish()
    raise BenchError(f"Unknown benchmark request {op!r}.")


def serve(requests: IO[str], out: IO[str]) -> int:
    """Answer requests until ``finish`` (or the parent closes stdin); an error ends the child."""
    model: Measured | None = None
    for line in requests:
        op = None
        try:
            request = json.loads(line)
            op = request.get("op")
            model, answer = _answer(model, request)
            answer = {"ok": answer}
        except BenchError as exc:
            answer = {"error": str(exc)}
        except Exception as exc:  # any other failure still reaches the parent as a readable message
            answer = {"error": f"The benchmark failed: {type(exc).__name__}: {exc}"}
        report(out, answer)
        if "error" in answer:
            return 2
        if op == "finish":
            return 0
    return 0


def main() -> int:
    """Serve the parent on stdin and the result channel until ``finish``; the exit status (2: an error)."""
    # Nothing but the answers may reach the parent's stdout: they go to a private copy of fd 1,
    # and fd 1 itself becomes stderr, so that native code printing to it cannot break the protocol.
    out = sandbox.result_channel()
    sys.stdout = sys.stderr
    return serve(sys.stdin, out)


if __name__ == "__main__":
    raise SystemExit(main())
