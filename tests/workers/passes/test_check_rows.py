"""Passes check their outputs on real validation rows when the job has them, and on synthetic inputs
in the model's domain only when it has none: a BERT-like model's outputs are always checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.workers import encoders
from workers.passes import _onnx_util as util
from workers.passes import base, graph, make_config, quantize_dynamic, quantize_static
from workers.passes.base import PassInputError


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small BERT-like encoder (ids, attention mask, token types), exported once for this module."""
    return encoders.bert_like_onnx(tmp_path_factory.mktemp("encoder") / "model.onnx")


@pytest.fixture(scope="module")
def validation(encoder: Path) -> Path:
    """Sentences as callers send them, padded to 32, with their attention mask."""
    path = encoder.parent / "validation.npz"
    np.savez(path, **encoders.padded(encoders.sentences(40), 32))
    return path


RUNS = {
    "graph": lambda src, dst, data: graph.run(src, dst, graph.Config(check_data=data)),
    "graph-transformer": lambda src, dst, data: graph.run(src, dst, graph.Config(level="transformer", check_data=data)),
    "quantize_dynamic": lambda src, dst, data: quantize_dynamic.run(src, dst, quantize_dynamic.Config(check_data=data)),
    "quantize_static": lambda src, dst, data: quantize_static.run(
        src, dst, quantize_static.Config(calibration_data=data, check_data=data)),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_bert_like_model_is_checked_on_validation_rows(name: str, encoder: Path, validation: Path,
                                                          tmp_path: Path) -> None:
    """G13: with a validation set, graph and INT8 passes check a BERT-like model's outputs on 8 real
    rows (never "Outputs not checked"), and the note says so."""
    result = RUNS[name](encoder, tmp_path, validation)
    assert "Outputs checked on 8 validation rows." in result.notes
    assert not any("not checked" in note for note in result.notes)
    assert result.metrics["max_abs_error"] is not None and np.isfinite(result.metrics["max_abs_error"])


@pytest.mark.parametrize("name", ["graph", "quantize_dynamic"])
def test_without_validation_rows_synthetic_ids_stay_in_the_models_range(name: str, encoder: Path,
                                                                        tmp_path: Path) -> None:
    """G13: without a validation set the synthetic token types are 0..1 and ids 0..99, so the BERT-like
    model runs on them and its outputs are checked rather than skipped."""
    result = RUNS[name](encoder, tmp_path, None)
    assert not any("not checked" in note for note in result.notes)
    assert result.metrics["max_abs_error"] is not None
    feeds = util.synthetic_inputs(util.signature_of(util.load_onnx_input(encoder, "test")), seed=4)
    assert feeds["token_type_ids"].max() <= 1 and feeds["input_ids"].max() < 100
    assert (feeds["attention_mask"] == 1).all()


def test_a_check_set_that_does_not_fit_the_model_is_refused_with_the_reason(encoder: Path, tmp_path: Path) -> None:
    """G15: validation rows lacking a model input stop the pass with a reason that names the input."""
    bad = tmp_path / "bad.npz"
    np.savez(bad, input_ids=np.ones((4, 8), np.int64))
    with pytest.raises(PassInputError, match="attention_mask"):
        graph.run(encoder, tmp_path / "out", graph.Config(check_data=bad))
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_the_check_rows_never_change_which_variant_a_config_makes(validation: Path) -> None:
    """D1: check_data is data, not an option: the config's JSON and its variant key are the same with
    and without it (a re-run finds the variant it made)."""
    for name in ("graph", "quantize_dynamic"):
        plain, checked = make_config(name, {}), make_config(name, {"check_data": str(validation)})
        assert checked.check_data == validation
        assert base.config_to_json(plain) == base.config_to_json(checked)
        assert base.config_hash(name, base.config_to_json(plain)) == base.config_hash(name, base.config_to_json(checked))
