"""Latency, throughput and memory of ONNX models, measured in interleaved rounds (pure: no Django).

``benchmark_many`` measures the variants of one job together. Each model gets processes of its own
(``workers.evaluation.bench_child``; ``processes``, 2 by default, which take turns round by round
so that one process's luck shows in the interval rather than in the result), so that one model's
arenas, caches and thread pools never
flatter or hurt another, its memory figure is its own, and a model that crashes the runtime
(SIGSEGV, SIGFPE) takes down only its child: the caller gets a ``BenchError`` naming the signal.

The children are loaded and warmed up first; then, per batch size, ``rounds`` rounds follow. In
each round every model runs a slice of timed calls, one model at a time, in an order rotated from
round to round (A B C, B C A, C A B ...), so that drift of a shared machine hits all alike. The
raw call times of every round are kept in the report (``rounds``), and each percentile is given
with its 95 % interval and the number of calls behind it (``workers.evaluation.stats``).
Speed-ups between two models of the same run are paired round by round (``BenchReport.speedup``).

``benchmark`` measures one model the same way.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workers.child import ChildTimeout, Conversation, CrashWords, measuring_env
from workers.errors import EngineError
from workers.evaluation import stats
from workers.formats import Signature

_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni")
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_CHILD = [sys.executable, "-m", "workers.evaluation.bench_child"]


class BenchError(EngineError, RuntimeError):
    """A model could not be measured; the message says why (load error, crash signal, timeout)."""


@dataclass(frozen=True)
class BenchConfig:
    """How to measure: batch sizes, threads, warm-up bounds, timed calls, rounds and time per
    batch size and model (``time_budget_s``, shared out over the rounds)."""

    batch_sizes: tuple[int, ...] = (1, 8, 32)
    threads: int = 1
    warmup_min: int = 10
    warmup_max: int = 200
    iterations: int = 4000  # a cap: each round stops at its share or when its time slice ends
    rounds: int = 20
    # Processes per model, taking turns round by round: one process's own luck (memory layout, the
    # core it landed on) then shows in the interval instead of moving the result between runs.
    processes: int = 2
    time_budget_s: float = 3.0
    provider: str = "cpu"
    timeout_s: float | None = None  # of each request to a child; None: derived from the budget

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise BenchError(f"Unknown provider {self.provider!r}; use one of {', '.join(PROVIDERS)}.")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise BenchError("Batch sizes must be a non-empty list of positive integers.")
        if min(self.threads, self.iterations, self.rounds, self.processes) < 1 or not 0 <= self.warmup_min <= self.warmup_max:
            raise BenchError("threads, iterations, rounds and processes must be >= 1 and 0 <= warmup_min <= warmup_max.")

    @property
    def effective_timeout_s(self) -> float:
        if self.timeout_s is not None:
            return self.timeout_s
        # Load + per batch size: warm-up and timed calls are each capped by the budget.
        return 120.0 + 3 * self.time_budget_s * len(self.batch_sizes)

    @property
    def calls_per_round(self) -> int:
        return max(1, math.ceil(self.iterations / self.rounds))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "batch_sizes" in data:
            data["batch_sizes"] = tuple(int(b) for b in data["batch_sizes"])
        return cls(**data)


@dataclass
class BenchReport:
    """One model's measurement: per batch size latencies with intervals and their raw rounds,
    memory, load time, the hardware, and the run it belongs to (``run``: models measured together,
    rounds, order)."""

    model: str
    file_size_bytes: int
    load_time_ms: float
    peak_memory_mb: float
    baseline_memory_mb: float
    memory_method: str
    results: dict[int, dict[str, Any]]
    fingerprint: dict[str, Any]
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_sizes(self) -> list[int]:
        return sorted(self.results)

    def at(self, batch: int) -> dict[str, Any]:
        """The figures at one batch size: mean_ms, p50_ms, p95_ms, p99_ms, max_ms, min_ms, std_ms,
        throughput (samples/s at this batch), iterations, warmup_iterations, warmup_stable,
        ``intervals`` (per statistic: value, low, high, calls, enough) and ``rounds`` (raw ms)."""
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

    def estimate(self, statistic: str, batch: int) -> stats.Estimate:
        """A statistic at a batch size with its interval and the calls behind it. A report stored
        before intervals were kept gives its point value with no width, judged on its call count."""
        figures = self.at(batch)
        if "intervals" in figures:
            return stats.Estimate.from_dict(figures["intervals"][statistic])
        value, calls = float(figures[f"{statistic}_ms"]), int(figures.get("iterations", 0))
        return stats.Estimate(statistic, value, value, value, calls, calls >= stats.min_calls(statistic))

    def rounds(self, batch: int) -> list[list[float]]:
        """The raw call times per round in ms (empty for a report stored before rounds were kept)."""
        return self.at(batch).get("rounds") or []

    def speedup(self, other: BenchReport, statistic: str, batch: int) -> stats.Estimate:
        """How many times faster this model is than ``other`` (paired when measured in one run).
        Without the raw rounds of both (an older stored report) it is the ratio of the two point
        values, marked as not enough to claim anything."""
        if self.rounds(batch) and other.rounds(batch):
            together = bool(self.run.get("id")) and self.run.get("id") == other.run.get("id")
            return stats.speedup(other.rounds(batch), self.rounds(batch), statistic, paired=together)
        mine, theirs = self.estimate(statistic, batch), other.estimate(statistic, batch)
        ratio = theirs.value / mine.value if mine.value else math.inf
        return stats.Estimate(f"{statistic} speed-up", ratio, ratio, ratio, min(mine.calls, theirs.calls), False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["results"] = {str(b): dict(r) for b, r in self.results.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchReport:
        data = dict(data)
        data["results"] = {int(b): dict(r) for b, r in data["results"].items()}
        data["notes"] = list(data.get("notes", []))
        data["run"] = dict(data.get("run", {}))
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
        "provider": PROVIDERS.get(provider, provider),
        "threads": threads,
    }


# --- the children -------------------------------------------------------------------------------


_CRASH = CrashWords(crashed="The benchmark process crashed: signal {number} ({name}). The model is not safe to run.",
                     unknown="unknown")


def _crash_message(returncode: int | None, stderr: str) -> str:
    if returncode is not None and returncode < 0:
        return _CRASH.message(-returncode)
    tail = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
    if returncode is None:  # still running, but what it wrote was no answer
        return f"The benchmark process gave no readable answer: {tail}"
    return f"The benchmark process exited with status {returncode}: {tail}"


class Child:
    """One measuring process: a request line in, an answer line out, each answer under a deadline
    of ``timeout_s`` (per request: a child of a run of many models lives through the others' loads
    and rounds too). It runs in its own process group (``workers.child``), and the whole group is
    killed on any failure."""

    def __init__(self, *, timeout_s: float, threads: int, argv: Sequence[str] | None = None) -> None:
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.conversation = Conversation(argv or _CHILD, env=measuring_env(threads, _PROJECT_ROOT), cwd=_PROJECT_ROOT)

    @property
    def process(self) -> subprocess.Popen[str]:
        """The child process (its ``returncode`` is set once it has ended)."""
        return self.conversation.process

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its answer; a crash, an error or the deadline is a BenchError."""
        self.deadline = time.monotonic() + self.timeout_s
        self.conversation.send(request)
        try:
            answer = self.conversation.receive(self.deadline - time.monotonic())
        except ChildTimeout:
            raise BenchError(f"The benchmark took longer than {self.timeout_s:.0f} s and was stopped.") from None
        if answer is not None and "error" in answer:
            self.close()
            raise BenchError(answer["error"])
        if answer is None or "ok" not in answer:
            raise self._failure()
        return answer["ok"]

    def _failure(self) -> BenchError:
        """No answer came: how the child ended (signal, or status and its last stderr line). The
        message is read before ``close``, which kills the group and drops the stderr file."""
        message = _crash_message(self.conversation.exit_status(timeout=5), self.conversation.stderr_tail())
        self.close()
        return BenchError(message)

    def close(self) -> None:
        """Kill the child's whole process group (threads or helpers it started go with it)."""
        self.conversation.close()


# --- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToMeasure:
    """One model of a run: a key naming it (the variant), its file and its signature."""

    key: str
    model: Path
    signature: Signature


def _load(item: ToMeasure, config: BenchConfig, data: Path | None) -> tuple[list[Child], dict[str, Any]]:
    """``config.processes`` children, each with the model loaded and warmed up; the first one's answer."""
    if not Path(item.model).is_file():
        raise BenchError(f"There is no model file for {item.key}.")
    request = {"op": "load", "model": str(Path(item.model).resolve()), "signature": item.signature.to_dict(),
               "config": config.to_dict(), "data": str(Path(data).resolve()) if data else None}
    children: list[Child] = []
    try:
        answers = []
        for _ in range(config.processes):
            children.append(Child(timeout_s=config.effective_timeout_s, threads=config.threads))
            answers.append(children[-1].ask(request))
    except BenchError:
        for child in children:
            child.close()
        raise
    return children, answers[0]


def _rounds(children: dict[str, list[Child]], batch: int, config: BenchConfig,
            errors: dict[str, BenchError]) -> dict[str, list[list[float]]]:
    """``config.rounds`` rounds at one batch size, the order rotated each round and each model's
    processes taking turns (round r runs in process r mod processes); rounds stop early (after at
    least three) when the run is past its time budget. A model that fails leaves the run (its error
    goes to ``errors``); the others go on."""
    times: dict[str, list[list[float]]] = {key: [] for key in children}
    slice_s = config.time_budget_s / config.rounds
    started = time.monotonic()
    for index in range(config.rounds):
        keys = [key for key in children if key not in errors]
        shift = index % max(len(keys), 1)
        for key in keys[shift:] + keys[:shift]:
            try:
                replica = children[key][index % len(children[key])]
                answer = replica.ask({"op": "round", "batch": batch, "calls": config.calls_per_round,
                                      "slice_s": slice_s})
            except BenchError as exc:
                errors[key] = exc
                continue
            times[key].append([float(t) for t in answer["times"]])
        if index >= 2 and time.monotonic() - started > config.time_budget_s * max(len(keys), 1) * 1.5:
            break
    return times


def _figures(rounds: list[list[float]], batch: int, warmup: tuple[int, bool]) -> dict[str, Any]:
    ms = np.concatenate([np.asarray(r) for r in rounds])
    intervals = {name: stats.estimate(rounds, name).to_dict() for name in stats.STATISTICS}
    return {
        "mean_ms": float(ms.mean()), "p50_ms": intervals["p50"]["value"], "p95_ms": intervals["p95"]["value"],
        "p99_ms": intervals["p99"]["value"], "max_ms": float(ms.max()), "min_ms": float(ms.min()),
        "std_ms": float(ms.std()), "throughput": batch * len(ms) / (ms.sum() / 1000.0),  # samples/s at this batch
        "iterations": len(ms), "warmup_iterations": warmup[0], "warmup_stable": warmup[1],
        "intervals": intervals, "rounds": rounds,
    }


def _report(item: ToMeasure, loaded: dict[str, Any], finished: dict[str, Any], times: dict[int, list[list[float]]],
            config: BenchConfig, run: dict[str, Any]) -> BenchReport:
    results = {batch: _figures(rounds, batch, tuple(loaded["warmup"][str(batch)])) for batch, rounds in times.items()}
    return BenchReport(model=str(item.model), file_size_bytes=Path(item.model).stat().st_size,
                       load_time_ms=loaded["load_time_ms"], peak_memory_mb=finished["peak_memory_mb"],
                       baseline_memory_mb=finished["baseline_memory_mb"], memory_method=finished["memory_method"],
                       results=results, fingerprint=loaded["fingerprint"], config=config.to_dict(),
                       notes=list(loaded["notes"]), run=run)


@dataclass
class Run:
    """What one interleaved run gave: a report per model measured, an error per model that failed."""

    reports: dict[str, BenchReport]
    errors: dict[str, BenchError]


def _finish(children: dict[str, list[Child]], errors: dict[str, BenchError]) -> dict[str, dict[str, Any]]:
    """Each model's memory: the peak of its processes."""
    finished = {}
    for key, replicas in children.items():
        if key in errors:
            continue
        try:
            answers = [child.ask({"op": "finish"}) for child in replicas]
        except BenchError as exc:
            errors[key] = exc
            continue
        finished[key] = max(answers, key=lambda answer: answer["peak_memory_mb"])
    return finished


def benchmark_many(items: Sequence[ToMeasure], config: BenchConfig, data: Path | None = None) -> Run:
    """Measure several models together in interleaved rounds (see the module docstring).

    ``data`` is an .npz whose arrays are named after the inputs: the first ``batch`` rows are used
    (tiled when there are fewer). Without it inputs are synthesized from each signature. A model
    that cannot be loaded, fails or crashes is left out with its error; the others are measured.
    """
    return measure_loaded(items, config, lambda item: _load(item, config, data))


Loader = Callable[[ToMeasure], tuple[list[Any], dict[str, Any]]]


def measure_loaded(items: Sequence[ToMeasure], config: BenchConfig, load: Loader,
                   run_fields: dict[str, Any] | None = None) -> Run:
    """The interleaved run over children that ``load`` starts for each item (processes that answer
    the bench child's ``round`` and ``finish`` requests: native ONNX Runtime here, a JavaScript
    runtime for the node and browser-wasm targets). ``run_fields`` are added to each report's run."""
    children: dict[str, list[Any]] = {}
    loaded: dict[str, dict[str, Any]] = {}
    errors: dict[str, BenchError] = {}
    try:
        for item in items:
            try:
                children[item.key], loaded[item.key] = load(item)
            except BenchError as exc:
                errors[item.key] = exc
        batches = sorted({batch for info in loaded.values() for batch in info["batches"]})
        times = {batch: _rounds({k: c for k, c in children.items() if batch in loaded[k]["batches"]}, batch, config,
                                errors) for batch in batches}
        finished = _finish(children, errors)
    finally:
        for replicas in children.values():
            for child in replicas:
                child.close()
    measured = [item for item in items if item.key not in errors]
    run = {"id": uuid.uuid4().hex, "models": [item.key for item in measured], "order": "rotated each round",
           "rounds": min((len(r) for t in times.values() for k, r in t.items() if k not in errors), default=0),
           "calls_per_round": config.calls_per_round, "processes": config.processes, **(run_fields or {})}
    reports = {item.key: _report(item, loaded[item.key], finished[item.key],
                                 {b: t[item.key] for b, t in times.items() if item.key in t}, config, run)
               for item in measured}
    return Run(reports=reports, errors=errors)


def benchmark(model: Path, signature: Signature, config: BenchConfig, data: Path | None = None) -> BenchReport:
    """Measure one ONNX model in a fresh subprocess, in rounds like ``benchmark_many``."""
    model = Path(model)
    if not model.is_file():
        raise BenchError(f"There is no model file at {model}.")
    run = benchmark_many([ToMeasure(key=model.name, model=model, signature=signature)], config, data)
    if run.errors:
        raise run.errors[model.name]
    return run.reports[model.name]
