"""Models and validation sets made in code for the fidelity tests: a small BERT-like encoder (ids,
attention mask, token types; real attention and LayerNorm), sentences padded to any length, and a
small opset-12 CNN (Conv + BatchNormalization + Relu). Nothing is downloaded. Pure: no Django.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

VOCAB, WIDTH, HEADS, LAYERS = 100, 32, 2, 2
PAD_ID = 0


def _encoder(torch: Any) -> Any:
    """A BERT-shaped encoder: embeddings + LayerNorm, self-attention with an additive mask, GELU FFN."""
    nn = torch.nn
    head = WIDTH // HEADS

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query, self.key, self.value = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)
            self.dense, self.norm1 = nn.Linear(WIDTH, WIDTH), nn.LayerNorm(WIDTH, eps=1e-12)
            self.up, self.down, self.norm2 = nn.Linear(WIDTH, 2 * WIDTH), nn.Linear(2 * WIDTH, WIDTH), nn.LayerNorm(WIDTH, eps=1e-12)

        def heads(self, x: Any) -> Any:
            return x.view(x.size(0), x.size(1), HEADS, head).permute(0, 2, 1, 3)

        def forward(self, x: Any, bias: Any) -> Any:
            q, k, v = self.heads(self.query(x)), self.heads(self.key(x)), self.heads(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / (head ** 0.5) + bias
            context = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).contiguous()
            x = self.norm1(x + self.dense(context.view(x.size(0), x.size(1), WIDTH)))
            return self.norm2(x + self.down(torch.nn.functional.gelu(self.up(x))))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words, self.types = nn.Embedding(VOCAB, WIDTH), nn.Embedding(2, WIDTH)
            self.positions = nn.Embedding(256, WIDTH)
            self.norm = nn.LayerNorm(WIDTH, eps=1e-12)
            self.layers = nn.ModuleList([Layer() for _ in range(LAYERS)])

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            positions = torch.arange(input_ids.size(1)).unsqueeze(0)
            x = self.norm(self.words(input_ids) + self.types(token_type_ids) + self.positions(positions))
            bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
            for layer in self.layers:
                x = layer(x, bias)
            weights = attention_mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * weights).sum(1) / weights.sum(1)
            return x, pooled

    return Encoder


def bert_like_onnx(path: Path, *, seed: int = 0) -> Path:
    """The encoder exported to ONNX (opset 17; batch and sequence symbolic), outputs ``tokens``
    [batch, seq, 32] (token-level) and ``pooled`` [batch, 32] (masked mean)."""
    import torch

    torch.manual_seed(seed)
    model = _encoder(torch)().eval()
    example = (torch.ones(2, 8, dtype=torch.int64), torch.ones(2, 8, dtype=torch.int64),
               torch.zeros(2, 8, dtype=torch.int64))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(path), dynamo=False, opset_version=17, input_names=names,
                          output_names=["tokens", "pooled"],
                          dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names},
                                        "tokens": {0: "batch", 1: "sequence"}, "pooled": {0: "batch"}})
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, 10)
    onnx.save_model(proto, str(path))
    return path


def sentences(count: int, *, seed: int = 0, shortest: int = 3, longest: int = 20) -> list[np.ndarray]:
    """``count`` token-id sequences of varied length (ids 1..VOCAB-1; 0 is padding)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(1, VOCAB, size=int(rng.integers(shortest, longest + 1))) for _ in range(count)]


def padded(rows: list[np.ndarray], length: int | None = None) -> dict[str, np.ndarray]:
    """The arrays a caller sends for ``rows`` padded (right) to ``length`` (default: the longest row):
    input_ids, attention_mask, token_type_ids."""
    length = length or max(len(r) for r in rows)
    ids = np.full((len(rows), length), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def cnn_opset12(path: Path, *, seed: int = 0, side: int = 16) -> Path:
    """A small CNN at opset 12 with a fixed input [1, 3, side, side]: two Conv + BatchNormalization +
    Relu blocks, then a 1x1 Conv to a one-channel probability map (Sigmoid), as detection heads are."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    nodes, previous, channels = [], "image", 3
    for i, width in enumerate((8, 16)):
        weights.update({
            f"w{i}": (rng.standard_normal((width, channels, 3, 3)) * 0.3).astype(np.float32),
            f"b{i}": (rng.standard_normal(width) * 0.1).astype(np.float32),
            f"scale{i}": (1 + rng.standard_normal(width) * 0.1).astype(np.float32),
            f"shift{i}": (rng.standard_normal(width) * 0.1).astype(np.float32),
            f"mean{i}": (rng.standard_normal(width) * 0.1).astype(np.float32),
            f"var{i}": (1 + rng.random(width)).astype(np.float32),
        })
        nodes += [
            helper.make_node("Conv", [previous, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
            helper.make_node("BatchNormalization", [f"c{i}", f"scale{i}", f"shift{i}", f"mean{i}", f"var{i}"],
                             [f"n{i}"], name=f"bn{i}"),
            helper.make_node("Relu", [f"n{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        previous, channels = f"r{i}", width
    weights["w_head"] = (rng.standard_normal((1, channels, 1, 1)) * 0.3).astype(np.float32)
    nodes += [helper.make_node("Conv", [previous, "w_head"], ["logits"], name="head"),
              helper.make_node("Sigmoid", ["logits"], ["probability"], name="sigmoid")]
    graph = helper.make_graph(nodes, "cnn12", [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 3, side, side])],
                              [helper.make_tensor_value_info("probability", onnx.TensorProto.FLOAT, [1, 1, side, side])],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def images(count: int, *, seed: int = 1, side: int = 16) -> np.ndarray:
    """``count`` smooth random images [count, 3, side, side] (float32), for calibration and checks."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((count, 3, side // 4, side // 4)).astype(np.float32)
    return np.repeat(np.repeat(base, 4, axis=2), 4, axis=3) + 0.1 * rng.standard_normal((count, 3, side, side)).astype(np.float32)


def perturbed(source: Path, target: Path, *, scale: float = 0.05, seed: int = 3) -> Path:
    """A copy of ``source`` whose float weight matrices carry relative noise of ``scale``: a lossy
    variant whose fidelity is known to be below 1 and the same wherever it is measured."""
    rng = np.random.default_rng(seed)
    model = onnx.load(str(source))
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.ndim == 2:
            noisy = array * (1 + scale * rng.standard_normal(array.shape).astype(np.float32))
            init.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), init.name))
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(target))
    return target
