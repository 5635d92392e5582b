"""Latency, throughput and memory of one ONNX model, measured in a fresh process (pure: no Django).

``benchmark`` starts ``python -m workers.evaluation.bench`` with the interpreter that runs it,
sends a JSON request on stdin and reads a JSON report on stdout. A fresh process per model means
that one model's arenas, caches and thread pools never flatter or hurt the next one, that the
memory figure is the model's own, and that a model which crashes the runtime (SIGSEGV, SIGFPE)
takes down only the measuring child: the caller gets a ``BenchError`` naming the signal.

What is measured, per batch size:
- warm-up: at least ``warmup_min`` calls, then until the median of the last window of calls moves
  by no more than ``_STABLE_TOLERANCE`` from the window before it, at most ``warmup_max`` calls
  (and no longer than the time budget);
- then ``iterations`` timed calls, or fewer when ``time_budget_s`` runs out (never fewer than
  ``_MIN_TIMED_CALLS``);
- latency mean / p50 / p95 / p99 / max / std in milliseconds and throughput in samples per second.

Memory: the child reads ``VmRSS`` from ``/proc/self/status`` after importing onnxruntime and
building the inputs (the baseline), then resets the kernel's high-water mark by writing ``5`` to
``/proc/self/clear_refs``; after the runs, ``VmHWM`` (peak resident set since the reset) minus the
baseline is the model's peak memory: weights, session arenas and activations. Where the reset is
not allowed the peak includes whatever the process reached before (``memory_method`` says which).
On CUDA the figure covers host memory only.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workers.formats import Signature, read_npz

_WINDOW = 10  # calls per warm-up window
_STABLE_TOLERANCE = 0.03  # warm-up ends when the window median moves by no more than 3 %
_MIN_TIMED_CALLS = 5
_DEFAULT_SYMBOLIC_DIM = 16
_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni")
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class BenchError(RuntimeError):
    """A model could not be measured; the message says why (load error, crash signal, timeout)."""


@dataclass(frozen=True)
class BenchConfig:
    """How to measure: batch sizes, threads, warm-up bounds, timed calls and time per batch size."""

    batch_sizes: tuple[int, ...] = (1, 8, 32)
    threads: int = 1
    warmup_min: int = 10
    warmup_max: int = 200
    iterations: int = 200
    time_budget_s: float = 3.0
    provider: str = "cpu"
    timeout_s: float | None = None  # of the whole child process; None: derived from the budget

    def __post_init__(self) -> None:
        if self.provider not in _PROVIDERS:
            raise BenchError(f"Unknown provider {self.provider!r}; use one of {', '.join(_PROVIDERS)}.")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise BenchError("Batch sizes must be a non-empty list of positive integers.")
        if self.threads < 1 or self.iterations < 1 or not 0 <= self.warmup_min <= self.warmup_max:
            raise BenchError("threads and iterations must be >= 1 and 0 <= warmup_min <= warmup_max.")

    @property
    def effective_timeout_s(self) -> float:
        if self.timeout_s is not None:
            return self.timeout_s
        # Load + per batch size: warm-up and timed calls are each capped by the budget.
        return 120.0 + 3 * self.time_budget_s * len(self.batch_sizes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        data = dict(data)
        if "batch_sizes" in data:
            data["batch_sizes"] = tuple(int(b) for b in data["batch_sizes"])
        return cls(**data)


@dataclass
class BenchReport:
    """One model's measurement: per batch size latencies, memory, load time, and the hardware."""

    model: str
    file_size_bytes: int
    load_time_ms: float
    peak_memory_mb: float
    baseline_memory_mb: float
    memory_method: str
    results: dict[int, dict[str, float]]
    fingerprint: dict[str, Any]
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def batch_sizes(self) -> list[int]:
        return sorted(self.results)

    def at(self, batch: int) -> dict[str, float]:
        """The figures at one batch size: mean_ms, p50_ms, p95_ms, p99_ms, max_ms, min_ms, std_ms,
        throughput (samples/s), iterations, warmup_iterations, warmup_stable."""
        if batch not in self.results:
            measured = ", ".join(str(b) for b in sorted(self.results)) or "none"
            raise KeyError(f"Batch size {batch} was not measured (measured: {measured}).")
        return self.results[batch]

    def p50(self, batch: int) -> float:
        return self.at(batch)["p50_ms"]

    def p95(self, batch: int) -> float:
        return self.at(batch)["p95_ms"]

    def p99(self, batch: int) -> float:
        return self.at(batch)["p99_ms"]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["results"] = {str(b): dict(r) for b, r in self.results.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchReport:
        data = dict(data)
        data["results"] = {int(b): dict(r) for b, r in data["results"].items()}
        data["notes"] = list(data.get("notes", []))
        return cls(**data)


# --- hardware -----------------------------------------------------------------------------------


def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (empty where the file does not exist)."""
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def hardware_fingerprint(provider: str, threads: int) -> dict[str, Any]:
    """What a measurement depends on: CPU model and ISA, cores, library versions, provider, threads.

    Versions come from package metadata, so nothing heavy (torch) is imported to read them.
    """
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    isa = {flag: flag in flags for flag in _ISA_FLAGS}
    isa["amx"] = any(flag.startswith("amx") for flag in flags)
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return {
        "cpu_model": info.get("model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count() or 1,
        "usable_cores": usable,
        "machine": platform.machine(),
        "isa": isa,
        "python": platform.python_version(),
        "onnxruntime": _package_version("onnxruntime", "onnxruntime-gpu"),
        "torch": _package_version("torch"),
        "provider": _PROVIDERS.get(provider, provider),
        "threads": threads,
    }


# --- the parent side ----------------------------------------------------------------------------


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in _THREAD_ENV:
        env[name] = str(threads)
    # The child imports workers.* from this checkout, whatever the caller's working directory.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    return env


def _crash_message(returncode: int, stderr: str) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown"
        return f"The benchmark process crashed: signal {-returncode} ({name}). The model is not safe to run."
    tail = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
    return f"The benchmark process exited with status {returncode}: {tail}"


def _run_child(request: dict[str, Any], *, timeout_s: float, threads: int, argv: list[str] | None = None) -> dict:
    """Run the measuring child and return its JSON answer; every failure becomes a BenchError."""
    argv = argv or [sys.executable, "-m", "workers.evaluation.bench"]
    try:
        done = subprocess.run(argv, input=json.dumps(request), capture_output=True, text=True,
                              timeout=timeout_s, env=_child_env(threads), cwd=_PROJECT_ROOT)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"The benchmark took longer than {timeout_s:.0f} s and was stopped.") from exc
    try:
        answer = json.loads(done.stdout) if done.stdout.strip() else None
    except json.JSONDecodeError:
        answer = None
    if isinstance(answer, dict) and "error" in answer:
        raise BenchError(answer["error"])
    if done.returncode != 0 or not isinstance(answer, dict):
        raise BenchError(_crash_message(done.returncode, done.stderr))
    return answer


def benchmark(model: Path, signature: Signature, config: BenchConfig, data: Path | None = None) -> BenchReport:
    """Measure an ONNX model in a fresh subprocess (see the module docstring for the method).

    ``data`` is an .npz whose arrays are named after the inputs: the first ``batch`` rows are used
    (tiled when there are fewer). Without it inputs are synthesized from the signature.
    """
    model = Path(model)
    if not model.is_file():
        raise BenchError(f"There is no model file at {model}.")
    request = {
        "model": str(model.resolve()),
        "signature": signature.to_dict(),
        "config": config.to_dict(),
        "data": str(Path(data).resolve()) if data else None,
    }
    answer = _run_child(request, timeout_s=config.effective_timeout_s, threads=config.threads)
    return BenchReport.from_dict(answer)


# --- the child side -----------------------------------------------------------------------------


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


def _rows(array: np.ndarray, batch: int) -> np.ndarray:
    """The first ``batch`` rows, tiled when the array has fewer."""
    if len(array) == 0:
        raise BenchError("The benchmark dataset has an empty array.")
    repeats = -(-batch // len(array))
    return np.concatenate([array] * repeats)[:batch] if repeats > 1 else array[:batch]


def _inputs(signature: Signature, batch: int, data: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in signature.inputs:
        if data is not None:
            if spec.name not in data:
                raise BenchError(f"The benchmark dataset has no array named {spec.name!r}; it has {', '.join(sorted(data))}.")
            feeds[spec.name] = np.ascontiguousarray(_rows(data[spec.name], batch).astype(spec.dtype, copy=False))
        else:
            feeds[spec.name] = _synthetic(spec, batch, rng)
    return feeds


def _session(model: str, config: BenchConfig) -> Any:
    import onnxruntime as ort

    provider = _PROVIDERS[config.provider]
    if provider not in ort.get_available_providers():
        raise BenchError(f"{provider} is not available in this onnxruntime build "
                         f"(available: {', '.join(ort.get_available_providers())}).")
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model, options, providers=[provider])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise BenchError(f"onnxruntime could not load the model: {exc}") from exc


def _timed_call(session: Any, feeds: dict[str, np.ndarray]) -> float:
    start = time.perf_counter()
    session.run(None, feeds)
    return (time.perf_counter() - start) * 1000.0


def _warm_up(session: Any, feeds: dict[str, np.ndarray], config: BenchConfig) -> tuple[int, bool]:
    """Call until the window median settles; returns (calls made, whether it settled)."""
    times: list[float] = []
    deadline = time.perf_counter() + config.time_budget_s
    while len(times) < config.warmup_max:
        times.append(_timed_call(session, feeds))
        if len(times) >= max(config.warmup_min, 2 * _WINDOW):
            last, before = np.median(times[-_WINDOW:]), np.median(times[-2 * _WINDOW : -_WINDOW])
            if abs(last - before) <= _STABLE_TOLERANCE * before:
                return len(times), True
        if len(times) >= config.warmup_min and time.perf_counter() > deadline:
            break
    return len(times), False


def _measure(session: Any, feeds: dict[str, np.ndarray], batch: int, config: BenchConfig) -> dict[str, float]:
    warmup_calls, stable = _warm_up(session, feeds, config)
    times: list[float] = []
    deadline = time.perf_counter() + config.time_budget_s
    while len(times) < config.iterations:
        times.append(_timed_call(session, feeds))
        if len(times) >= _MIN_TIMED_CALLS and time.perf_counter() > deadline:
            break
    ms = np.asarray(times)
    return {
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "min_ms": float(ms.min()),
        "std_ms": float(ms.std()),
        "throughput": batch * len(ms) / (ms.sum() / 1000.0),  # samples per second
        "iterations": len(ms),
        "warmup_iterations": warmup_calls,
        "warmup_stable": stable,
    }


def _batch_sizes(signature: Signature, config: BenchConfig, notes: list[str]) -> list[int]:
    """A model with a fixed first dimension runs only at that batch size."""
    first = signature.inputs[0].shape[0] if signature.inputs and signature.inputs[0].shape else None
    if isinstance(first, int) and first > 0:
        if set(config.batch_sizes) != {first}:
            notes.append(f"The model's batch dimension is fixed at {first}; only that batch size was measured.")
        return [first]
    return sorted(set(config.batch_sizes))


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """The child's work: load once, then warm up and time each batch size (returns the report dict)."""
    config = BenchConfig.from_dict(request["config"])
    signature = Signature.from_dict(request["signature"])
    model = request["model"]
    notes: list[str] = []
    data = read_npz(Path(request["data"])) if request.get("data") else None
    batches = _batch_sizes(signature, config, notes)
    feeds_by_batch = {b: _inputs(signature, b, data) for b in batches}
    import onnxruntime  # noqa: F401  (library memory belongs to the baseline, not the model)

    baseline_kb = _status_kb("VmRSS") or 0
    reset = _reset_peak_rss()
    start = time.perf_counter()
    session = _session(model, config)
    load_ms = (time.perf_counter() - start) * 1000.0
    results = {}
    for batch in batches:
        try:
            results[batch] = _measure(session, feeds_by_batch[batch], batch, config)
        except Exception as exc:  # onnxruntime's errors on run (shape, type) are not typed
            raise BenchError(f"The model failed at batch size {batch}: {exc}") from exc
    peak_kb = _status_kb("VmHWM") or _status_kb("VmRSS") or 0
    return BenchReport(
        model=model,
        file_size_bytes=Path(model).stat().st_size,
        load_time_ms=load_ms,
        peak_memory_mb=max(peak_kb - baseline_kb, 0) / 1024.0,
        baseline_memory_mb=baseline_kb / 1024.0,
        memory_method="VmHWM after clear_refs reset - VmRSS baseline" if reset else "VmHWM - VmRSS baseline (no reset)",
        results=results,
        fingerprint=hardware_fingerprint(config.provider, config.threads),
        config=config.to_dict(),
        notes=notes,
    ).to_dict()


def main() -> int:
    """Entry point of the child: JSON request on stdin, JSON report (or {"error": ...}) on stdout."""
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but the answer may reach the parent's stdout
    try:
        answer = measure(json.loads(sys.stdin.read()))
    except BenchError as exc:
        json.dump({"error": str(exc)}, out)
        return 2
    except Exception as exc:  # any other failure still reaches the parent as a readable message
        json.dump({"error": f"The benchmark failed: {type(exc).__name__}: {exc}"}, out)
        return 2
    json.dump(answer, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
