"""Validation data as callers send it: sequences padded to any length, their real positions told by
the model's attention mask or a ``lengths`` array, and fidelity computed over real tokens only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.workers import encoders
from tests.workers.evaluation.reports import bench_report
from workers import ort
from workers.evaluation import accuracy, readiness
from workers.formats import FormatError, check_dataset, signature_from_onnx
from workers.formats.datasets import real_positions
from workers.passes import quantize_dynamic

MAX_BYTES = 16 << 20


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small BERT-like encoder, exported once for this module."""
    return encoders.bert_like_onnx(tmp_path_factory.mktemp("encoder") / "model.onnx")


@pytest.fixture(scope="module")
def lossy(encoder: Path) -> Path:
    """A variant of the encoder with noisy weights: fidelity below 1, in the same way at any padding."""
    return encoders.perturbed(encoder, encoder.parent / "lossy.onnx")


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _verdict(report: accuracy.AccuracyReport, bound: float) -> readiness.Verdict:
    spec = readiness.ProfileSpec(min_accuracy=bound, accuracy_metric="cosine_min")
    return readiness.verdict(spec, bench=bench_report(p95=5.0), accuracy=report)


def test_padded_to_128_and_padded_to_the_longest_sentence_give_the_same_verdict(encoder: Path, lossy: Path,
                                                                                 tmp_path: Path) -> None:
    """G1: the same sentences padded to 128 and to their longest row get the same fidelity (cosine per
    real token) and so the same verdict; counted over every position, padding would have moved it."""
    rows = encoders.sentences(24)
    long = _npz(tmp_path / "pad128.npz", **encoders.padded(rows, 128))
    short = _npz(tmp_path / "padmax.npz", **encoders.padded(rows))
    reports = [accuracy.run_reference(encoder, data).compare(lossy) for data in (long, short)]

    assert all(r.real_positions_only and r.task == "embedding" for r in reports)
    for metric in ("cosine_min", "cosine_mean", "max_abs_error", "rel_l2"):
        assert reports[0].value(metric) == pytest.approx(reports[1].value(metric), rel=1e-4, abs=1e-5)
    for bound in (reports[0].value("cosine_min") - 1e-3, reports[0].value("cosine_min") + 1e-3):
        assert _verdict(reports[0], bound).passed == _verdict(reports[1], bound).passed
    everywhere = [accuracy.compare_outputs(ort.session(encoder).run(None, feeds), ort.session(lossy).run(None, feeds),
                                           task="embedding") for feeds in (encoders.padded(rows, 128), encoders.padded(rows))]
    assert abs(everywhere[0].value("rel_l2") - everywhere[1].value("rel_l2")) > 1e-4


def test_a_pooled_output_is_compared_as_it_is(encoder: Path, lossy: Path) -> None:
    """G1: a [batch, hidden] output (the masked mean) is compared row by row, the mask notwithstanding."""
    feeds = encoders.padded(encoders.sentences(8), 40)
    reference, candidate = ort.session(encoder).run(None, feeds), ort.session(lossy).run(None, feeds)
    mask = feeds["attention_mask"].astype(bool)
    pooled = accuracy.compare_outputs(reference[1:], candidate[1:], task="embedding", mask=mask)
    assert not pooled.real_positions_only and pooled.samples == 8
    assert pooled.metrics == accuracy.compare_outputs(reference[1:], candidate[1:], task="embedding").metrics


def test_a_lengths_array_marks_the_real_tokens_of_a_model_without_a_mask_input(tmp_path: Path) -> None:
    """G1: ``lengths`` tells the real positions when the model takes no attention mask: the padding of
    a token-level output is never compared, whatever it holds."""
    lengths = np.array([3, 5, 2])
    reference = np.random.default_rng(0).standard_normal((3, 6, 4))
    candidate = reference.copy()
    candidate[0, 4:], candidate[2, 2:] = -reference[0, 4:], 0.0  # garbage only where rows are padding
    mask = real_positions({"input_ids": np.zeros((3, 6), np.int64), "lengths": lengths}, ["input_ids"])
    assert mask.sum(axis=1).tolist() == [3, 5, 2]
    report = accuracy.compare_outputs([reference], [candidate], task="embedding", mask=mask)
    assert report.value("cosine_min") == pytest.approx(1.0) and report.value("max_abs_error") == 0.0
    assert accuracy.compare_outputs([reference], [candidate], task="embedding").value("cosine_min") < 0.9


def test_a_dataset_with_lengths_is_accepted_and_says_padding_is_not_compared(tiny_transformer, tmp_path: Path) -> None:
    """G15: an .npz of ids padded to any length plus ``lengths`` passes the dataset check, with a note."""
    ids = np.random.default_rng(1).integers(1, 500, size=(6, 16))
    path = _npz(tmp_path / "v.npz", input_ids=ids, lengths=np.array([16, 3, 9, 1, 12, 7]))
    info = check_dataset(path, signature_from_onnx(tiny_transformer.onnx), max_bytes=MAX_BYTES)
    assert info.sample_count == 6 and "lengths" in info.arrays
    assert any("padding is never compared" in note for note in info.notes)


@pytest.mark.parametrize(("arrays", "reason"), [
    ({"lengths": np.array([4, 30, 2, 2])}, "must lie in 1..20"),
    ({"lengths": np.array([4, 3, 2, 0])}, "must lie in 1..20"),
    ({"lengths": np.array([4, 3, 2])}, "disagree on the number of samples"),
    ({"lengths": np.array([[4], [3], [2], [2]])}, "one number per sample"),
    ({"lengths": np.array([4.0, 3.0, 2.0, 2.0])}, "takes integers"),
    ({"lengths": np.array([4, 3, 2, 5])}, "disagrees with attention mask"),
    ({"attention_mask": np.full((4, 20), 2)}, "values other than 0 and 1"),
    ({"attention_mask": np.zeros((4, 20), np.int64)}, "marks no real token in row 0"),
])
def test_lengths_or_a_mask_that_cannot_be_right_are_refused_with_the_reason(encoder: Path, tmp_path: Path,
                                                                            arrays: dict, reason: str) -> None:
    """G15: lengths beyond the padding, a count per sample that is off, a mask that is not 0/1 or marks
    no token, lengths that disagree with the mask: each refused by the dataset check, saying which."""
    feeds = {**encoders.padded([np.arange(1, 5), np.arange(1, 4), np.arange(1, 3), np.arange(1, 3)], 20), **arrays}
    with pytest.raises(FormatError, match=reason):
        check_dataset(_npz(tmp_path / "bad.npz", **feeds), signature_from_onnx(encoder), max_bytes=MAX_BYTES)


def test_dynamic_int8_is_judged_at_the_profile_batch_and_the_report_says_which(encoder: Path, tmp_path: Path) -> None:
    """G1: a dynamic INT8 variant (activation scales per call) is evaluated at the batch latency is judged
    at; float models, whose rows do not depend on their batch mates, run 64 rows a call; both say so."""
    int8 = quantize_dynamic.run(encoder, tmp_path / "int8", quantize_dynamic.Config()).artifact
    data = _npz(tmp_path / "v.npz", **encoders.padded(encoders.sentences(40), 32))
    run = accuracy.run_reference(encoder, data, batch=4)
    at_four, alone = run.compare(int8), accuracy.run_reference(encoder, data, batch=1).compare(int8)

    assert (at_four.batch_size, alone.batch_size, run.itself().batch_size) == (4, 1, 64)
    assert at_four.to_dict()["batch_size"] == 4
    assert accuracy.AccuracyReport.from_dict(at_four.to_dict()).batch_size == 4
    assert at_four.value("cosine_mean") != alone.value("cosine_mean")  # the batch moves dynamic INT8's figures
