"""A deterministic split of the validation rows: the search selects on one part, the verdict is given on the other.

Rows alternate (even rows select, odd rows are held out), so a dataset sorted by class or length is
split evenly. Too few rows to split (fewer than ``MIN_ROWS``) use every row for both, and say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_ROWS = 16


@dataclass(frozen=True)
class Split:
    """The two datasets written, their row counts and a sentence naming the rows."""

    selection: Path
    holdout: Path
    selection_rows: int
    holdout_rows: int
    total_rows: int
    held_out: bool

    def describe(self) -> str:
        """Which rows the verdict used, in words."""
        if not self.held_out:
            return f"all {self.total_rows} validation rows (too few to hold any out: fewer than {MIN_ROWS})"
        return (f"the {self.holdout_rows} held-out validation rows (odd rows of {self.total_rows}); "
                f"the search selected on the other {self.selection_rows}")

    def to_dict(self) -> dict[str, object]:
        """The split as stored with the judgment."""
        return {"selection_rows": self.selection_rows, "holdout_rows": self.holdout_rows,
                "total_rows": self.total_rows, "held_out": self.held_out, "rows": self.describe()}


def indices(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(selection, held-out) row indices of a dataset of ``rows`` rows."""
    every = np.arange(rows)
    if rows < MIN_ROWS:
        return every, every
    return every[0::2], every[1::2]


def _rows(arrays: dict[str, np.ndarray]) -> int:
    return min((len(a) for a in arrays.values() if np.ndim(a)), default=0)


def _subset(arrays: dict[str, np.ndarray], rows: int, picked: np.ndarray) -> dict[str, np.ndarray]:
    # Arrays with a row per sample (inputs, labels, lengths, masks) are cut; any other array is kept whole.
    return {name: a[picked] if np.ndim(a) and len(a) == rows else a for name, a in arrays.items()}


def write_splits(dataset: Path, directory: Path) -> Split:
    """Write ``selection.npz`` and ``holdout.npz`` into ``directory`` from the .npz ``dataset``."""
    from workers.formats import read_npz

    arrays = read_npz(dataset)
    rows = _rows(arrays)
    selection, holdout = indices(rows)
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "selection.npz", directory / "holdout.npz"
    for path, picked in zip(paths, (selection, holdout), strict=True):
        np.savez(path, **_subset(arrays, rows, picked))
    return Split(paths[0], paths[1], len(selection), len(holdout), rows, held_out=rows >= MIN_ROWS)
