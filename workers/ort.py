"""The one place that builds an ONNX Runtime session (pure engine: no Django).

Intake, the passes, the benchmark child and the serving plane all open models through
``session``, so the settings that matter for comparable numbers (explicit thread counts,
sequential execution, quiet logging) are written once. onnxruntime is imported on first use:
the sandboxed children must not start its thread pools before they enter the sandbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

CPU = ("CPUExecutionProvider",)
LEVELS = ("disable", "basic", "extended", "all")


MODES = ("sequential", "parallel")


def session(model: Path | str | bytes, *, threads: int = 1, inter_threads: int = 1, level: str = "all",
            providers: Sequence[str] = CPU, optimized_path: Path | None = None,
            config: dict[str, str] | None = None, log_level: int = 3, execution_mode: str = "sequential") -> Any:
    """An ``InferenceSession`` for a model file (path) or serialized bytes.

    ``execution_mode`` is one of ``MODES`` (parallel runs independent branches on the inter-op threads);
    ``level`` is the graph optimization level (one of ``LEVELS``); ``optimized_path`` makes ORT
    write the optimized graph there; ``config`` holds session config entries
    (``session.allow_released_opsets_only`` …). ORT's own exception types pass through: each
    caller turns them into its own error with its own words.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = inter_threads
    if execution_mode not in MODES:
        raise ValueError(f"Unknown execution mode {execution_mode!r}; use one of {', '.join(MODES)}.")
    options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if execution_mode == "parallel"
                              else ort.ExecutionMode.ORT_SEQUENTIAL)
    options.graph_optimization_level = _level(ort, level)
    options.log_severity_level = log_level
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=list(providers))


def tuned(options: dict[str, Any] | None, *, threads: int, inter_threads: int) -> dict[str, Any]:
    """``session`` keyword arguments from a variant's tuned ``session_options`` (intra_op_threads,
    inter_op_threads, execution_mode); what they leave out comes from ``threads`` / ``inter_threads``."""
    options = options or {}
    return {"threads": int(options.get("intra_op_threads") or threads),
            "inter_threads": int(options.get("inter_op_threads") or inter_threads),
            "execution_mode": options.get("execution_mode") if options.get("execution_mode") in MODES else "sequential"}


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build offers (CUDA only where its build has it)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _level(ort: Any, level: str) -> Any:
    levels = ort.GraphOptimizationLevel
    return {"disable": levels.ORT_DISABLE_ALL, "basic": levels.ORT_ENABLE_BASIC,
            "extended": levels.ORT_ENABLE_EXTENDED, "all": levels.ORT_ENABLE_ALL}[level]
