"""Session options measured for one model, and the session builder honouring stored ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.workers.search.test_search import WIDTH, _mlp
from workers import ort
from workers.evaluation import session_tuning, stats


def test_tuning_keeps_the_default_unless_a_setting_is_faster_beyond_noise(tmp_path: Path) -> None:
    """(D26) Every setting is compared with the default, paired by round; only a FASTER claim replaces it."""
    model = _mlp(tmp_path / "model.onnx")
    np.savez(tmp_path / "rows.npz", x=np.ones((4, WIDTH), np.float32))
    tuned = session_tuning.tune(model, batch_size=2, threads=2, data=tmp_path / "rows.npz", time_budget_s=1.0)
    assert tuned.default == session_tuning.Setting(2, 1, "sequential")
    assert set(tuned.speedups) == {s.label for s in session_tuning.candidates(2)[1:]}
    claims = {label: stats.claim(stats.Estimate.from_dict(r)) for label, r in tuned.speedups.items()}
    if tuned.chosen == tuned.default:
        assert stats.FASTER not in claims.values() and "kept the default" in tuned.describe()
    else:
        assert claims[tuned.chosen.label] == stats.FASTER and "faster than" in tuned.describe()
    assert set(tuned.to_dict()["chosen"]) == {"intra_op_threads", "inter_op_threads", "execution_mode"}


def test_stored_session_options_reach_the_session_and_missing_ones_fall_back(tmp_path: Path) -> None:
    """(D26) The serving plane's builder applies a variant's tuned options; an empty dict means the server's."""
    import onnxruntime

    model = _mlp(tmp_path / "model.onnx")
    stored = {"intra_op_threads": 1, "inter_op_threads": 2, "execution_mode": "parallel"}
    options = ort.session(model, **ort.tuned(stored, threads=4, inter_threads=1)).get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 2)
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_PARALLEL
    assert ort.tuned({}, threads=3, inter_threads=1) == {"threads": 3, "inter_threads": 1,
                                                         "execution_mode": "sequential"}
    with pytest.raises(ValueError, match="execution mode"):
        ort.session(model, execution_mode="sideways")
