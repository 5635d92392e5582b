"""The frame a pass runs in: the steps every pass takes before and after its own work.

A pass's ``run`` reads::

    with PassRun(NAME, src, dst, config) as job:
        source = job.load()                  # the ONNX input (float32 models only, unless told)
        ...                                  # the pass's own work
        job.save(model)                      # dst/model.onnx, one self-contained file
        return job.result(metrics, notes)    # the PassResult, timed from the start of the run

A PassError raised inside the block, once the pass has begun writing its model, removes
``dst/model.onnx``: a model that failed the pass's checks is never mistaken for its output.

A pass checks its output against its input with ``check_error``: on a few real validation rows
when the job has a validation set (the config's ``check_data``, a path the job runner fills in),
on synthetic inputs in the model's domain only when there is none.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Any

from workers.passes import _onnx_util as util
from workers.passes.base import OUTPUT_NAME, PassError, PassResult, config_to_json, prepare_output, save_onnx


class PassRun:
    """One run of one pass: its input file, its output directory and config, timed from creation."""

    def __init__(self, name: str, src: Path | str, dst: Path | str, config: Any) -> None:
        self.name, self.config = name, config
        self.src, self.dst = Path(src), Path(dst)
        self.out = self.dst / OUTPUT_NAME
        self.started = time.perf_counter()
        self._writing = False

    def __enter__(self) -> PassRun:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        # Only a model this run wrote is removed: a refusal before writing leaves dst as it was.
        if isinstance(error, PassError) and self._writing:
            self.out.unlink(missing_ok=True)

    def load(self, *, float_only: bool = True) -> Any:
        """The input as an onnx.ModelProto; ``float_only`` refuses quantized or float16-only graphs."""
        source = util.load_onnx_input(self.src, self.name)
        if float_only:
            util.require_float_model(source, self.name)
        return source

    def output(self) -> Path:
        """``dst/model.onnx`` with its directory created, for a pass that writes the file itself."""
        self._writing = True
        return prepare_output(self.dst)

    def save(self, model: Any) -> Path:
        """Write the pass's model to ``dst/model.onnx`` (see ``base.save_onnx``) and return its path."""
        return save_onnx(model, self.output())

    def sizes(self, *, ratio: bool = False) -> dict[str, Any]:
        """``size_before`` (the input file) and ``size_after`` (the output), with ``size_ratio`` if asked."""
        before, after = util.file_size(self.src), util.file_size(self.out)
        return {"size_before": before, "size_after": after, **({"size_ratio": after / before} if ratio else {})}

    @property
    def check_data(self) -> Path | None:
        """The validation rows this run checks its output on (the config's ``check_data``), if any."""
        given = getattr(self.config, "check_data", None)
        return Path(given) if given else None

    def check_error(self, source: Any, seeds: tuple[int, ...] = (0, 1, 2)) -> tuple[float | None, float, str | None]:
        """The output against the input: on real validation rows when the config has ``check_data``,
        else on synthetic batches (see ``_onnx_util.output_error``)."""
        return util.output_error(self.src, self.out, util.signature_of(source), self.check_data, seeds)

    # Passes written before validation rows reached them call it by this name: same check.
    synthetic_error = check_error

    def result(self, metrics: dict[str, Any], notes: list[str]) -> PassResult:
        """The PassResult of this run: its model, config (as JSON), metrics, notes and duration."""
        return PassResult(artifact=self.out, pass_name=self.name, config=config_to_json(self.config),
                          metrics=metrics, notes=notes, duration_s=time.perf_counter() - self.started)
