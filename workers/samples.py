"""Sample models made in code (no downloads): the demo and the tests use them.

- ``quality_mlp``: the seed's quality predictor, 2056 -> 1024 -> 512 -> 256 -> 1, sigmoid,
  trained on a synthetic fingerprint task (regression in [0, 1]).
- ``digits_cnn``: a small CNN trained on scikit-learn's bundled 8x8 digits (classification).
- ``tiny_transformer``: a two-layer transformer encoder over token ids (embedding output).

Each is written as TorchScript (``model.pt``) and ONNX (``model.onnx``, dynamic batch axis),
with ``validation.npz`` and ``calibration.npz`` whose arrays are named after the model inputs
(plus ``labels`` where the task has them). Pure: no Django.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_NAMES = ("quality_mlp", "digits_cnn", "tiny_transformer")
_FORMAT_VERSION = 2  # bump to rebuild cached samples when their recipe changes


@dataclass(frozen=True)
class SampleModel:
    """Files of one sample model on disk."""

    name: str
    task: str
    directory: Path

    @property
    def torchscript(self) -> Path:
        return self.directory / "model.pt"

    @property
    def onnx(self) -> Path:
        return self.directory / "model.onnx"

    @property
    def validation(self) -> Path:
        return self.directory / "validation.npz"

    @property
    def calibration(self) -> Path:
        return self.directory / "calibration.npz"

    @property
    def info(self) -> dict[str, Any]:
        return json.loads((self.directory / "info.json").read_text())


def _torch() -> Any:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return torch


def _train(model: Any, x: Any, y: Any, loss_fn: Any, *, epochs: int, lr: float, batch: int) -> None:
    torch = _torch()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            optimizer.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            optimizer.step()
    model.eval()


def _named(model: Any, input_name: str) -> Any:
    """Wrap a model so that its forward argument, and so the TorchScript input, carries the name
    the datasets use (nn.Sequential would call it ``input``)."""
    nn = _torch().nn

    class Features(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, features: Any) -> Any:
            return self.inner(features)

    class Image(Features):
        def forward(self, image: Any) -> Any:
            return self.inner(image)

    wrappers = {"features": Features, "image": Image}
    return wrappers[input_name]().eval() if input_name in wrappers else model


def _export(model: Any, example: Any, input_name: str, output_name: str, directory: Path) -> None:
    """Write TorchScript (traced) and ONNX (opset 17, dynamic batch) of an eval-mode model."""
    import onnx

    torch = _torch()
    model = _named(model, input_name)
    # The TorchScript-based exporter is chosen on purpose (one self-contained opset-17 file).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example)
        traced.save(str(directory / "model.pt"))
        onnx_path = directory / "model.onnx"
        torch.onnx.export(
            model,
            (example,),
            str(onnx_path),
            dynamo=False,
            opset_version=17,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        )
    proto = onnx.load(str(onnx_path))
    proto.ir_version = min(proto.ir_version, 10)
    onnx.save_model(proto, str(onnx_path))


def _quality_mlp(directory: Path) -> str:
    torch = _torch()
    nn = torch.nn
    rng = np.random.default_rng(0)

    def features(n: int) -> np.ndarray:
        bits = (rng.random((n, 2048)) < 0.08).astype(np.float32)
        descriptors = rng.normal(size=(n, 8)).astype(np.float32)
        return np.concatenate([bits, descriptors], axis=1)

    weights = rng.normal(scale=0.4, size=2056).astype(np.float32) * (rng.random(2056) < 0.05)

    def target(x: np.ndarray) -> np.ndarray:
        z = x @ weights + 0.5 * np.tanh(x[:, -8:].sum(axis=1))
        return (1 / (1 + np.exp(-z))).astype(np.float32)[:, None]

    x_train, x_val, x_cal = features(4096), features(512), features(256)
    model = nn.Sequential(
        nn.Linear(2056, 1024), nn.ReLU(),
        nn.Linear(1024, 512), nn.ReLU(),
        nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, 1), nn.Sigmoid(),
    )
    _train(model, torch.from_numpy(x_train), torch.from_numpy(target(x_train)), nn.MSELoss(),
           epochs=6, lr=1e-3, batch=128)
    _export(model, torch.from_numpy(x_val[:2]), "features", "quality", directory)
    np.savez(directory / "validation.npz", features=x_val, labels=target(x_val))
    np.savez(directory / "calibration.npz", features=x_cal)
    return "regression"


def _digits_cnn(directory: Path) -> str:
    from sklearn.datasets import load_digits

    torch = _torch()
    nn = torch.nn
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(images))
    train, held_out = order[:1297], order[1297:]
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )
    _train(model, torch.from_numpy(images[train]), torch.from_numpy(labels[train]),
           nn.CrossEntropyLoss(), epochs=25, lr=3e-3, batch=64)
    _export(model, torch.from_numpy(images[held_out[:2]]), "image", "logits", directory)
    np.savez(directory / "validation.npz", image=images[held_out], labels=labels[held_out])
    np.savez(directory / "calibration.npz", image=images[train[:256]])
    # The training split is kept so that distillation has data a student may learn from.
    np.savez(directory / "train.npz", image=images[train], labels=labels[train])
    return "classification"


def attention_block(width: int, heads: int, ff_width: int) -> Any:
    """One post-norm transformer encoder block: multi-head self-attention, LayerNorm, GELU
    feed-forward. Written out: torch's fused encoder layer does not export to ONNX."""
    import torch

    nn = torch.nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(width, 3 * width)
            self.proj = nn.Linear(width, width)
            self.norm1 = nn.LayerNorm(width)
            self.ff = nn.Sequential(nn.Linear(width, ff_width), nn.GELU(), nn.Linear(ff_width, width))
            self.norm2 = nn.LayerNorm(width)

        def forward(self, x: Any) -> Any:
            b, t, _ = x.shape
            q, k, v = self.qkv(x).reshape(b, t, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
            attn = torch.softmax(q @ k.transpose(-2, -1) / (width // heads) ** 0.5, dim=-1)
            x = self.norm1(x + self.proj((attn @ v).transpose(1, 2).reshape(b, t, width)))
            return self.norm2(x + self.ff(x))

    return Block()


def _tiny_transformer(directory: Path) -> str:
    torch = _torch()
    nn = torch.nn
    vocab, width, heads, seq = 512, 64, 4, 16

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, width)
            self.position = nn.Parameter(torch.randn(1, seq, width) * 0.02)
            self.blocks = nn.Sequential(*(attention_block(width, heads, 2 * width) for _ in range(2)))

        def forward(self, input_ids: Any) -> Any:
            x = self.blocks(self.embed(input_ids) + self.position)
            pooled = x.mean(dim=1)
            return pooled / pooled.norm(dim=-1, keepdim=True)

    model = Encoder().eval()
    rng = np.random.default_rng(0)
    val = rng.integers(0, vocab, size=(256, seq), dtype=np.int64)
    cal = rng.integers(0, vocab, size=(128, seq), dtype=np.int64)
    _export(model, torch.from_numpy(val[:2]), "input_ids", "embedding", directory)
    np.savez(directory / "validation.npz", input_ids=val)
    np.savez(directory / "calibration.npz", input_ids=cal)
    return "embedding"


_BUILDERS: dict[str, Callable[[Path], str]] = {
    "quality_mlp": _quality_mlp,
    "digits_cnn": _digits_cnn,
    "tiny_transformer": _tiny_transformer,
}


def build_sample(name: str, root: Path) -> SampleModel:
    """Build one sample model under ``root / name`` (reused when already built)."""
    directory = root / name
    info_path = directory / "info.json"
    if info_path.exists() and json.loads(info_path.read_text()).get("format") == _FORMAT_VERSION:
        return SampleModel(name=name, task=json.loads(info_path.read_text())["task"], directory=directory)
    directory.mkdir(parents=True, exist_ok=True)
    task = _BUILDERS[name](directory)
    info_path.write_text(json.dumps({"name": name, "task": task, "format": _FORMAT_VERSION}))
    return SampleModel(name=name, task=task, directory=directory)


def build_samples(root: Path) -> list[SampleModel]:
    """Build (or reuse) every sample model under ``root``."""
    return [build_sample(name, root) for name in SAMPLE_NAMES]
