"""Session options for one model: intra/inter-op threads and execution mode, measured (pure: no Django).

The settings are timed in this process, interleaved: in each round every setting's session runs a
slice of calls, in an order rotated from round to round, so that drift hits all alike. Each setting's
speed-up over the default (the profile's threads, one inter-op thread, sequential execution) is
paired round by round (``stats.speedup``); the default is kept unless a setting is faster beyond noise
(``stats.claim``). Intra-op threads above the profile's are never tried: the profile says what the
deployment has.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workers import formats, ort
from workers.errors import EngineError
from workers.evaluation import stats

MODES = ("sequential", "parallel")
MAX_CALLS = 100  # per session and round: enough for a p50, and the bootstrap stays cheap


class TuningError(EngineError, RuntimeError):
    """The model could not be run to tune its session; the message says why."""


@dataclass(frozen=True)
class Setting:
    """One set of session options, as ``Variant.session_options`` stores it."""

    intra_op_threads: int
    inter_op_threads: int = 1
    execution_mode: str = "sequential"

    @property
    def label(self) -> str:
        return f"intra {self.intra_op_threads}, inter {self.inter_op_threads}, {self.execution_mode}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def candidates(threads: int) -> list[Setting]:
    """The default first, then fewer intra-op threads, then parallel execution (two inter-op threads)."""
    intra = sorted({threads, max(1, threads // 2), 1}, reverse=True)
    settings = [Setting(n) for n in intra]
    return settings + [Setting(threads, 2, "parallel")]


@dataclass
class Tuning:
    """Each setting's speed-up over the default (Estimate dicts) and the one chosen."""

    chosen: Setting
    default: Setting
    speedups: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_size: int = 1
    statistic: str = "p50"

    def describe(self) -> str:
        """The choice in words, with its evidence."""
        if self.chosen == self.default:
            return f"kept the default ({self.default.label}): no setting was faster beyond noise"
        ratio = self.speedups[self.chosen.label]
        return (f"{self.chosen.label}: {ratio['value']:.2f}x [{ratio['low']:.2f}, {ratio['high']:.2f}] faster than "
                f"{self.default.label} ({self.statistic} at batch {self.batch_size})")

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen.to_dict(), "default": self.default.to_dict(), "speedups": self.speedups,
                "batch_size": self.batch_size, "statistic": self.statistic, "why": self.describe()}


def _feeds(model: Path, batch: int, data: Path | None) -> dict[str, np.ndarray]:
    """``batch`` rows of the dataset (tiled when it has fewer), else zeros shaped by the signature."""
    signature = formats.signature_from_onnx(model)
    if data is not None:
        arrays = formats.model_inputs(formats.read_npz(data), signature)
        return {name: np.resize(a, (batch, *a.shape[1:])) for name, a in arrays.items()}
    return {spec.name: np.zeros([batch] + [d if isinstance(d, int) and d > 0 else 8 for d in spec.shape[1:]],
                                spec.dtype) for spec in signature.inputs}


def _timed(session: Any, feeds: dict[str, np.ndarray], calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def interleaved(sessions: dict[str, Any], feeds: dict[str, np.ndarray], *, rounds: int = 12,
                time_budget_s: float = 3.0) -> dict[str, list[list[float]]]:
    """Raw call times (ms) per round of each session, order rotated each round, within ``time_budget_s``."""
    names = list(sessions)
    slice_s = time_budget_s / rounds / len(names)
    calls = {}
    for name in names:  # warm-up (arenas, thread pools), then as many calls as fill a slice, within bounds
        _timed(sessions[name], feeds, 5)
        per_call = float(np.median(_timed(sessions[name], feeds, 3))) / 1000.0
        calls[name] = int(min(MAX_CALLS, max(3, slice_s / max(per_call, 1e-6))))
    times: dict[str, list[list[float]]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_timed(sessions[name], feeds, calls[name]))
    return times


def tune(model: Path, *, batch_size: int = 1, threads: int = 1, statistic: str = "p50", data: Path | None = None,
         time_budget_s: float = 3.0) -> Tuning:
    """Measure ``candidates(threads)`` on ``model`` at ``batch_size`` and choose (module docstring)."""
    settings = candidates(threads)
    try:
        feeds = _feeds(Path(model), batch_size, data)
        sessions = {s.label: ort.session(model, threads=s.intra_op_threads, inter_threads=s.inter_op_threads,
                                         execution_mode=s.execution_mode) for s in settings}
        times = interleaved(sessions, feeds, time_budget_s=time_budget_s)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a model it cannot run
        raise TuningError(f"The session options could not be measured: {str(exc)[:300]}") from exc
    default = settings[0]
    speedups = {s.label: stats.speedup(times[default.label], times[s.label], statistic) for s in settings[1:]}
    faster = [s for s in settings[1:] if stats.claim(speedups[s.label]) == stats.FASTER]
    chosen = max(faster, key=lambda s: speedups[s.label].value, default=default)
    return Tuning(chosen=chosen, default=default, speedups={k: v.to_dict() for k, v in speedups.items()},
                  batch_size=batch_size, statistic=statistic)
