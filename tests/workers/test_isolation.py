"""Passes that load TorchScript run in the sandboxed child and give the same results as in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from workers import isolation
from workers.passes import export, make_config
from workers.passes.base import PassError, PassInputError
from workers.samples import SampleModel


class NeverReturns(torch.nn.Module):
    """A valid TorchScript model whose forward loops for ever (x grows to inf, and inf > -1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while bool(x.sum() > -1.0):
            x = x + 1.0
        return x


@pytest.mark.slow
def test_export_in_the_child_gives_the_in_process_result(digits_cnn: SampleModel, tmp_path: Path) -> None:
    config = make_config("export", {"opset": 17}, validation_data=digits_cnn.validation)
    inside = isolation.run_isolated("export", digits_cnn.torchscript, tmp_path / "child", config, wall_seconds=300)
    here = export.run(digits_cnn.torchscript, tmp_path / "here", config)
    assert inside.artifact == (tmp_path / "child" / "model.onnx").resolve()
    assert sorted(p.name for p in (tmp_path / "child").iterdir()) == ["model.onnx"]
    assert inside.pass_name == "export" and inside.config == here.config
    assert {k: v for k, v in inside.metrics.items() if k != "max_abs_error"} == \
        {k: v for k, v in here.metrics.items() if k != "max_abs_error"}
    assert inside.metrics["max_abs_error"] <= 1e-4


@pytest.mark.slow
def test_a_pass_error_in_the_child_comes_back_as_the_same_error(quality_mlp: SampleModel, tmp_path: Path) -> None:
    config = make_config("export", {}, validation_data=quality_mlp.validation)
    with pytest.raises(PassInputError, match="already an ONNX model"):
        isolation.run_isolated("export", quality_mlp.onnx, tmp_path / "out", config, wall_seconds=120)


@pytest.mark.slow
def test_a_model_whose_forward_never_returns_is_stopped_at_the_wall_clock_limit(tmp_path: Path) -> None:
    archive = tmp_path / "loop.pt"
    torch.jit.script(NeverReturns()).save(str(archive))
    data = tmp_path / "validation.npz"
    np.savez(data, x=np.zeros((4, 3), np.float32))
    config = make_config("export", {}, validation_data=data)
    with pytest.raises(PassError, match="The export pass took longer than 5 s and was stopped"):
        isolation.run_isolated("export", archive, tmp_path / "out", config, wall_seconds=5)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_without_the_sandbox_the_child_still_runs_the_pass(digits_cnn: SampleModel, tmp_path: Path) -> None:
    config = make_config("export", {}, validation_data=digits_cnn.validation)
    result = isolation.run_isolated("export", digits_cnn.torchscript, tmp_path / "out", config, wall_seconds=300,
                                    sandbox=False)
    assert result.artifact.is_file()


def test_only_passes_given_torchscript_need_the_child(digits_cnn: SampleModel) -> None:
    assert isolation.needs_isolation("export", digits_cnn.torchscript)
    assert isolation.needs_isolation("graph", digits_cnn.torchscript)
    assert not isolation.needs_isolation("graph", digits_cnn.onnx)
