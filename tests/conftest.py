"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.samples import SampleModel, build_sample


@pytest.fixture(scope="session")
def samples_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("samples")


@pytest.fixture(scope="session")
def quality_mlp(samples_root: Path) -> SampleModel:
    return build_sample("quality_mlp", samples_root)


@pytest.fixture(scope="session")
def digits_cnn(samples_root: Path) -> SampleModel:
    return build_sample("digits_cnn", samples_root)


@pytest.fixture(scope="session")
def tiny_transformer(samples_root: Path) -> SampleModel:
    return build_sample("tiny_transformer", samples_root)
