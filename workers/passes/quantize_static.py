"""quantize_static: calibrated INT8 (weights and activations) with onnxruntime's quantize_static.

Calibration is driven here rather than inside ``quantize_static`` so that it is bounded:

- at most ``max_samples`` rows of ``calibration_data`` are used, fed in small batches
  (``_BATCH`` rows, or the model's fixed batch size);
- ORT's entropy / percentile calibrators keep *every* activation of every sample they are given
  in one ``collect_data`` call before building histograms, so onnxruntime's stock path holds
  ``samples x activation bytes`` at once. Here each batch is a separate ``collect_data`` call (ORT
  merges the histograms across calls), and the activation bytes of one sample are *measured* by
  running one sample through the augmented calibration model. The batch is then reduced until
  ``batch x bytes/sample x _HISTOGRAM_OVERHEAD`` fits in ``max_memory_mb``; when even one sample
  does not fit the pass refuses (PassInputError) and says how much it would need. The numbers
  are in ``metrics`` and, when the batch was reduced, in ``notes``;
- MinMax keeps only per-tensor min/max per batch; its peak is one batch's activations inside ORT.

The ranges are written to a calibration cache (JSON) in a scratch directory under ``dst``, along
with ORT's augmented model; ``quantize_static`` then reads the cache instead of calibrating again.
The scratch directory is removed afterwards; the source file is only read.

A model below opset 13 is converted first (``opset.ensure_opset``: per-channel QDQ needs opset 13)
and checked for equal outputs; the note says so. The output is checked on the check rows: a few
real validation rows when the job has a validation set (``check_data``), else calibration rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workers import ort
from workers.passes import _onnx_util as util
from workers.passes import opset
from workers.passes.base import PassError, PassInputError, PassResult, UnsupportedModelError, data_field, save_onnx
from workers.passes.frame import PassRun
from workers.passes.quantize_dynamic import prepare, quant_type

NAME = "quantize_static"
FORMATS = ("qdq", "qoperator")
METHODS = ("minmax", "entropy", "percentile")
TYPES = ("qint8", "quint8")
_BATCH = 8
_HISTOGRAM_OVERHEAD = 2.0  # ORT stacks and flattens each collected tensor while histogramming it
_MB = 1 << 20


@dataclass(frozen=True)
class Config:
    """Options of calibrated (static) INT8 quantization; ``calibration_data`` is required at run time."""

    format: str = "qdq"
    method: str = "minmax"
    per_channel: bool = True
    activation_type: str = "quint8"
    weight_type: str = "qint8"
    max_samples: int = 256
    max_memory_mb: int = 2048
    nodes_to_exclude: tuple[str, ...] = ()
    calibration_data: Path | None = data_field()
    check_data: Path | None = data_field()  # validation rows the output is checked on (the job fills it)

    def __post_init__(self) -> None:
        for name in ("calibration_data", "check_data"):
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.format not in FORMATS:
            raise PassInputError(f"Unknown format {self.format!r}; use one of {', '.join(FORMATS)}.")
        if self.method not in METHODS:
            raise PassInputError(f"Unknown calibration method {self.method!r}; use one of {', '.join(METHODS)}.")
        for name in ("activation_type", "weight_type"):
            if getattr(self, name) not in TYPES:
                raise PassInputError(f"Unknown {name} {getattr(self, name)!r}; use one of {', '.join(TYPES)}.")
        if self.activation_type == "qint8" and self.weight_type == "quint8":
            raise PassInputError("onnxruntime does not support int8 activations with uint8 weights; use weight_type 'qint8'.")
        if not isinstance(self.max_samples, int) or self.max_samples < 1:
            raise PassInputError(f"max_samples must be a positive integer; got {self.max_samples!r}.")
        if not isinstance(self.max_memory_mb, int) or self.max_memory_mb < 1:
            raise PassInputError(f"max_memory_mb must be a positive integer; got {self.max_memory_mb!r}.")
        if isinstance(self.nodes_to_exclude, str) or not all(isinstance(v, str) for v in self.nodes_to_exclude):
            raise PassInputError(f"nodes_to_exclude must be a list of node names; got {self.nodes_to_exclude!r}.")
        object.__setattr__(self, "nodes_to_exclude", tuple(self.nodes_to_exclude))


@dataclass
class Calibration:
    """What calibration used and measured; ``cache`` holds the tensor ranges."""

    cache: Path
    method: str
    samples: int
    batch: int
    activation_bytes_per_sample: int | None = None
    peak_mb_estimate: float | None = None
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """The figures a PassResult reports about calibration."""
        return {
            "calibration_samples": self.samples,
            "calibration_batch": self.batch,
            "activation_mb_per_sample": None if self.activation_bytes_per_sample is None
            else round(self.activation_bytes_per_sample / _MB, 3),
            "calibration_peak_mb_estimate": None if self.peak_mb_estimate is None else round(self.peak_mb_estimate, 1),
        }


def calibration_method(name: str) -> Any:
    """onnxruntime's CalibrationMethod for a config name."""
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def load_calibration(path: Path | None, signature: util.Signature, max_samples: int) -> dict[str, np.ndarray]:
    """At most ``max_samples`` rows of the calibration dataset, cast to the model's input types."""
    if path is None:
        raise PassInputError(
            "Static quantization needs a calibration dataset (.npz with one array per model input, a few "
            "hundred representative rows); without one use quantize_dynamic."
        )
    feeds, _ = util.dataset_feeds(Path(path), signature, what="calibration")
    rows = min(max_samples, min(len(v) for v in feeds.values()))
    fixed = util.fixed_batch(signature)
    if fixed:
        rows -= rows % fixed
        if rows == 0:
            raise PassInputError(f"The model takes batches of exactly {fixed} rows; the calibration dataset has fewer.")
    return {name: value[:rows] for name, value in feeds.items()}


class _Reader:
    """A CalibrationDataReader over a list of feed dicts (one ``collect_data`` call each)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._iter = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or None when done (the CalibrationDataReader protocol)."""
        return next(self._iter, None)


def _measure_sample(calibrator: Any, feeds: dict[str, np.ndarray], rows: int) -> int:
    """Bytes of the collected activations of one sample (one ``rows``-row batch / rows)."""
    try:
        outputs = calibrator.infer_session.run(None, {name: value[:rows] for name, value in feeds.items()})
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
        raise UnsupportedModelError(f"The model does not run on the calibration data: {str(exc)[:500]}") from exc
    names = [o.name for o in calibrator.infer_session.get_outputs()]
    wanted = set(getattr(calibrator, "tensors_to_calibrate", None) or names)
    total = sum(int(out.nbytes) for name, out in zip(names, outputs, strict=True) if name in wanted)
    return max(1, total // rows)


def _calibrated_op_types() -> list[str]:
    """The op types quantize_static itself calibrates when given none (QOperator + QDQ registries)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def _histogram_batch(method: str, per_sample: int, rows: int, batch: int, fixed: int | None,
                     max_memory_mb: int) -> tuple[int, list[str]]:
    """The batch whose histogram activations fit ``max_memory_mb`` (refuses when one sample does not)."""
    budget, per_row = max_memory_mb * _MB, per_sample * _HISTOGRAM_OVERHEAD
    if (fixed or 1) * per_row > budget:
        raise PassInputError(
            f"{method.title()} calibration keeps the activations it histograms: about {(fixed or 1) * per_row / _MB:,.0f} "
            f"MB for {'one batch' if fixed else 'one sample'} of this model, over max_memory_mb={max_memory_mb}. "
            "Raise max_memory_mb or use method 'minmax' (which keeps only min/max per tensor)."
        )
    notes = []
    fitting = int(budget // per_row)
    if not fixed and fitting < batch:
        notes.append(
            f"Calibration batch reduced from {batch} to {fitting} rows so that {method} histograms stay "
            f"within max_memory_mb={max_memory_mb} ({per_sample / _MB:,.1f} MB of activations per sample)."
        )
        batch = fitting
    if rows * per_row > budget:
        notes.append(
            f"All {rows} samples at once would hold about {rows * per_row / _MB:,.0f} MB of activations; calibration "
            f"was streamed in batches of {batch} rows instead (histograms are merged across batches)."
        )
    return batch, notes


def _collect(calibrator: Any, feeds: dict[str, np.ndarray], batch: int, exact: bool) -> Any:
    """Feed every batch as its own ``collect_data`` call and return the computed ranges."""
    try:
        with util.quiet():
            for part in util.batches(feeds, batch, exact=exact):
                calibrator.collect_data(_Reader([part]))
            return calibrator.compute_data()
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UnsupportedModelError(f"Calibration failed in onnxruntime: {str(exc)[:600]}") from exc


def calibrate(model_path: Path, work: Path, feeds: dict[str, np.ndarray], method: str, max_memory_mb: int,
              fixed: int | None = None) -> Calibration:
    """Collect tensor ranges over ``feeds`` in bounded batches and write them to a cache in ``work``."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    rows = min(len(v) for v in feeds.values())
    augmented = work / f"augmented-{method}.onnx"
    try:
        with util.quiet():
            calibrator = create_calibrator(model_path, _calibrated_op_types(), augmented_model_path=str(augmented),
                                           calibrate_method=calibration_method(method), extra_options={})
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedModelError(f"onnxruntime could not prepare calibration: {str(exc)[:600]}") from exc
    calibration = Calibration(cache=work / f"calibration-{method}.json", method=method, samples=rows,
                              batch=fixed or min(_BATCH, rows))
    try:
        if method != "minmax":  # MinMax keeps two numbers per tensor, histograms keep activations
            per_sample = _measure_sample(calibrator, feeds, fixed or 1)
            calibration.batch, calibration.notes = _histogram_batch(method, per_sample, rows, calibration.batch,
                                                                    fixed, max_memory_mb)
            calibration.activation_bytes_per_sample = per_sample
            calibration.peak_mb_estimate = calibration.batch * per_sample * _HISTOGRAM_OVERHEAD / _MB
        ranges = _collect(calibrator, feeds, calibration.batch, exact=fixed is not None)
    finally:
        del calibrator
        augmented.unlink(missing_ok=True)
    save_tensors_data(ranges, calibration.cache)
    return calibration


def quantize(model_path: Path, out_path: Path, calibration: Calibration, config: Config, work: Path) -> Any:
    """Quantize ``model_path`` with cached ranges and save it (IR pinned) to ``out_path``."""
    import onnx
    from onnxruntime.quantization import QuantFormat, quantize_static

    raw = work / f"static-{out_path.parent.name}.onnx"
    try:
        with util.quiet():
            quantize_static(
                str(model_path),
                str(raw),
                None,
                quant_format=QuantFormat.QDQ if config.format == "qdq" else QuantFormat.QOperator,
                per_channel=config.per_channel,
                activation_type=quant_type(config.activation_type),
                weight_type=quant_type(config.weight_type),
                nodes_to_exclude=list(config.nodes_to_exclude) or None,
                calibrate_method=calibration_method(calibration.method),
                calibration_cache_path=str(calibration.cache),
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedModelError(f"onnxruntime's static quantization failed: {str(exc)[:600]}") from exc
    model = onnx.load(str(raw))
    raw.unlink(missing_ok=True)
    save_onnx(model, out_path)
    return model


def check_feeds(config: Config, signature: util.Signature, calibration: dict[str, np.ndarray],
                fixed: int | None) -> dict[str, np.ndarray]:
    """The rows outputs are checked on: validation rows (``check_data``), else the first calibration rows."""
    if config.check_data is not None:
        return util.check_rows(config.check_data, signature)
    return {name: value[: fixed or 16] for name, value in calibration.items()}


def _sanity_error(src: Path, out_path: Path, sample: dict[str, np.ndarray]) -> float:
    """Max abs error on the check rows (the accuracy claim belongs to the job's evaluation)."""
    return util.max_abs_error(ort.session(src).run(None, sample), util.run_produced(out_path, [sample])[0])


def run(src: Path, dst: Path, config: Config | None = None) -> PassResult:
    """Calibrate on ``calibration_data`` and quantize ``src`` into ``dst/model.onnx``."""
    config = config or Config()
    with PassRun(NAME, src, dst, config) as job:
        source = job.load()
        signature = util.signature_of(source)
        fixed = util.fixed_batch(signature)
        feeds = load_calibration(config.calibration_data, signature, config.max_samples)
        checks = check_feeds(config, signature, feeds, fixed)
        out_path = job.output()
        with util.scratch_dir(job.dst) as work:
            converted, converted_note = opset.ensure_opset(job.src, work, checks)
            model_path, notes = prepare(converted, work, config.nodes_to_exclude)
            calibration = calibrate(model_path, work, feeds, config.method, config.max_memory_mb, fixed)
            quantized = quantize(model_path, out_path, calibration, config, work)
        metrics = {**job.sizes(ratio=True), "quantized_nodes": util.quantized_node_count(quantized),
                   **calibration.metrics()}
        if metrics["quantized_nodes"] == 0:
            raise util.nothing_quantized(source, "Static quantization")
        metrics["max_abs_error"] = _sanity_error(job.src, out_path, checks)
        if metrics["max_abs_error"] == float("inf"):
            raise PassError("The quantized model produces non-finite outputs on the check rows.")
        notes = ([converted_note] if converted_note else []) + notes + calibration.notes
        if config.check_data is not None:
            notes.append(f"Outputs checked on {len(next(iter(checks.values())))} validation rows.")
        if config.format == "qoperator" and config.activation_type == "qint8":
            notes.append("QOperator with int8 activations is slow on x64 CPUs; QDQ is recommended for S8S8.")
        return job.result(metrics, notes)
