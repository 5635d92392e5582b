"""Loaded runtimes: ONNX Runtime sessions (and TorchScript modules as the last fallback).

One per-process LRU keyed by the artifact's sha256 keeps what was loaded within a memory budget
(``MODELHUB_SERVING_MAX_RUNTIME_MB``; the estimate is the size of the model files). A file is
hashed when it is loaded and must match the sha256 recorded at upload: a tampered or truncated
file is a ``LoadError``, never a served model. Loading is thread-safe and happens once per file
even when many requests ask for it at the same moment; a request keeps the runtime object it got,
so an eviction or a promotion never pulls a session from under a running request.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from modelhub import artifacts
from predictions import metrics
from workers import ort

log = logging.getLogger(__name__)

ONNX = "onnxruntime"
TORCH = "torch"
# ONNX Runtime's type strings -> numpy element types.
ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int8)": np.int8, "tensor(int16)": np.int16, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


class LoadError(Exception):
    """A variant's runtime cannot be loaded; ``reason`` is a short label for metrics."""

    def __init__(self, message: str, reason: str = "load_error") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class VariantSpec:
    """What serving needs to know about a variant, without the database (kept in the routing table)."""

    id: int
    model: str
    version: int
    name: str
    sha256: str
    storage_key: str
    files: tuple[tuple[str, str, str], ...]  # (path relative to the model's root, storage key, sha256)
    runtime: str
    target: str
    size_bytes: int
    signature: dict[str, Any]
    batching: bool = False  # server-side batching on for this variant (``Variant.serving_batching``)
    session_options: tuple[tuple[str, Any], ...] = ()  # tuned by the job (``Variant.session_options``)

    @property
    def label(self) -> str:
        """``v<version>/<variant name>``, as responses, logs and metrics name a variant."""
        return f"v{self.version}/{self.name}"

    @classmethod
    def from_variant(cls, variant: Any) -> VariantSpec:
        """Build from a ``modelhub.models.Variant`` (its version and job profile are read)."""
        job = variant.job
        target = job.profile.target if job is not None and job.profile is not None else "cpu"
        files = tuple((f["path"], f["key"], f["sha256"]) for f in variant.files if f.get("key"))
        return cls(id=variant.pk, model=variant.version.model.name, version=variant.version.number,
                   name=variant.name, sha256=variant.sha256, storage_key=variant.storage_key, files=files,
                   runtime=variant.runtime, target=target, size_bytes=variant.size_bytes,
                   signature=variant.version.signature, batching=variant.serving_batching,
                   session_options=tuple(sorted((variant.session_options or {}).items())))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, for the Redis routing table."""
        return {**self.__dict__, "files": [list(f) for f in self.files],
                "session_options": [list(o) for o in self.session_options]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantSpec:
        """The spec ``to_dict`` wrote."""
        return cls(**{**data, "files": tuple(tuple(f) for f in data["files"]),
                      "session_options": tuple(tuple(o) for o in data.get("session_options", ()))})


class Runtime(ABC):
    """A loaded model: ``run(feeds)`` maps input arrays to named output arrays."""

    kind = ""
    batchable = False  # may one run take several requests' rows (``predictions.batching``)

    def __init__(self, spec: VariantSpec, input_types: dict[str, Any], input_shapes: dict[str, list[Any]],
                 output_names: list[str], memory_bytes: int, provider: str) -> None:
        self.spec = spec
        self.input_types = input_types
        self.input_shapes = input_shapes
        self.output_names = output_names
        self.memory_bytes = memory_bytes
        self.provider = provider

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for inputs by name (thread-safe)."""

    def _cast(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs in the element types this file expects (an fp16 variant may take float16)."""
        return {name: feeds[name].astype(dtype, copy=False) for name, dtype in self.input_types.items()}

    def synthetic_feeds(self) -> dict[str, np.ndarray]:
        """A batch of one of zeros (symbolic dimensions set to 1), for warming up."""
        return {name: np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in self.input_shapes[name]], dtype)
                for name, dtype in self.input_types.items()}


def _free_batch_axis(shape: list[Any]) -> bool:
    """True when a tensor's declared shape starts with a symbolic (or unknown) dimension."""
    return bool(shape) and not (isinstance(shape[0], int) and shape[0] > 0)


class OnnxRuntime(Runtime):
    """An ONNX Runtime session (made by ``workers.ort.session``)."""

    kind = ONNX

    def __init__(self, spec: VariantSpec, session: Any, memory_bytes: int) -> None:
        inputs = session.get_inputs()
        super().__init__(spec, {i.name: ORT_TYPES.get(i.type, np.float32) for i in inputs},
                         {i.name: list(i.shape) for i in inputs}, [o.name for o in session.get_outputs()],
                         memory_bytes, session.get_providers()[0])
        self.session = session
        # Requests can share a run only when every input and output has a free leading (batch)
        # dimension: a fixed batch dim or none at all means rows cannot be stacked and split back.
        self.batchable = all(_free_batch_axis(list(t.shape)) for t in [*inputs, *session.get_outputs()])

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, self._cast(feeds)), strict=True))


class TorchRuntime(Runtime):
    """A TorchScript module, typed by the version's declared signature."""

    kind = TORCH

    def __init__(self, spec: VariantSpec, module: Any, memory_bytes: int) -> None:
        signature = spec.signature or {"inputs": [], "outputs": []}
        super().__init__(spec, {t["name"]: np.dtype(t["dtype"]) for t in signature["inputs"]},
                         {t["name"]: list(t["shape"]) for t in signature["inputs"]},
                         [t["name"] for t in signature["outputs"]], memory_bytes, "torch-cpu")
        self.module = module

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in self._cast(feeds).values()]
        with torch.inference_mode():
            out = self.module(*tensors)
        outs = out if isinstance(out, list | tuple) else [out]
        return {name: t.detach().cpu().numpy() for name, t in zip(self.output_names, outs, strict=False)}


# --- loading ---------------------------------------------------------------------------------


def _verified_bytes(key: str, sha256: str, what: str) -> tuple[bytes, Path]:
    """The file's bytes, hashed once as read (from storage's disk or this node's cache of the bucket)."""
    try:
        return artifacts.read_verified(key, sha256)
    except artifacts.Corrupt:
        raise LoadError(f"{what} does not match its recorded sha256 (changed or corrupted in storage); refusing "
                        "to load it.", "hash_mismatch") from None
    except artifacts.StorageUnavailable:
        raise LoadError(f"{what} is not cached on this node and the artifact storage cannot be reached.",
                        "storage_unavailable") from None
    except (OSError, ValueError) as exc:
        raise LoadError(f"{what} is missing from storage ({exc.__class__.__name__}).", "missing") from None


def _verified_model(spec: VariantSpec) -> tuple[bytes, Path]:
    """The primary file's bytes, after checking every file of the variant against its sha256."""
    blob, path = _verified_bytes(spec.storage_key, spec.sha256, f"The model file of {spec.label}")
    for rel, key, sha in spec.files:
        if key != spec.storage_key:
            _verified_bytes(key, sha, f"The file {rel} of {spec.label}")
    return blob, path


def available_providers() -> list[str]:
    """The execution providers this host's onnxruntime offers."""
    return ort.available_providers()


def providers_for(target: str) -> list[str]:
    """CUDA when the host offers it and the variant's profile targets it; else CPU."""
    if target == "cuda" and "CUDAExecutionProvider" in available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _load_onnx(spec: VariantSpec) -> Runtime:
    blob, path = _verified_model(spec)
    # A single file is loaded from the bytes that were just verified; a model with external data
    # has to be loaded by path (its data files were verified above).
    source: bytes | Path = blob if len(spec.files) <= 1 else path
    try:
        # The job's tuned options win over the server's defaults: they were measured faster for this variant.
        options = ort.tuned(dict(spec.session_options), threads=settings.MODELHUB_SERVING_INTRA_OP_THREADS,
                            inter_threads=settings.MODELHUB_SERVING_INTER_OP_THREADS)
        session = ort.session(source, providers=providers_for(spec.target), **options)
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types for a bad file
        raise LoadError(f"ONNX Runtime could not load {spec.label}: {str(exc)[:300]}", "onnxruntime") from None
    return OnnxRuntime(spec, session, spec.size_bytes or len(blob))


def _load_torchscript(spec: VariantSpec) -> Runtime:
    if not settings.MODELHUB_SERVING_TORCHSCRIPT:
        raise LoadError(f"{spec.label} is TorchScript, which this server does not load "
                        "(MODELHUB_SERVING_TORCHSCRIPT=0).", "torchscript_disabled")
    import torch

    blob, _ = _verified_model(spec)
    try:
        module = torch.jit.load(io.BytesIO(blob), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise LoadError(f"torch could not load {spec.label}: {str(exc)[:300]}", "torch") from None
    module.eval()
    return TorchRuntime(spec, module, spec.size_bytes or len(blob))


def load(spec: VariantSpec) -> Runtime:
    """Verify and load one variant (no caching; see ``get``)."""
    started = time.perf_counter()
    try:
        runtime = _load_torchscript(spec) if spec.runtime == TORCH else _load_onnx(spec)
    except LoadError as exc:
        metrics.RUNTIME_LOAD_FAILURES.labels(exc.reason).inc()
        log.warning("could not load %s %s: %s", spec.model, spec.label, exc)
        raise
    metrics.RUNTIME_LOAD.labels(runtime.kind).observe(time.perf_counter() - started)
    return runtime


# --- the per-process LRU ---------------------------------------------------------------------


class RuntimeCache:
    """Loaded runtimes by sha256, least recently used evicted first beyond the memory budget."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, Runtime] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, spec: VariantSpec) -> Runtime:
        """The loaded runtime of ``spec``, loading it (once, whoever asks at the same time) if needed."""
        with self._lock:
            runtime = self._items.get(spec.sha256)
            if runtime is not None:
                self._items.move_to_end(spec.sha256)
                return runtime
            loading = self._loading.setdefault(spec.sha256, threading.Lock())
        with loading:
            with self._lock:
                runtime = self._items.get(spec.sha256)
            if runtime is not None:
                return runtime
            try:
                runtime = load(spec)
            finally:
                with self._lock:
                    self._loading.pop(spec.sha256, None)
            self._insert(runtime)
            return runtime

    def _insert(self, runtime: Runtime) -> None:
        budget = settings.MODELHUB_SERVING_MAX_RUNTIME_MB * 1024 * 1024
        with self._lock:
            self._items[runtime.spec.sha256] = runtime
            while len(self._items) > 1 and self.memory_bytes() > budget:
                sha, evicted = self._items.popitem(last=False)
                log.info("evicted runtime %s (%s) to stay within %s MB", evicted.spec.label, sha[:12],
                         settings.MODELHUB_SERVING_MAX_RUNTIME_MB)
            metrics.RUNTIMES_LOADED.set(len(self._items))
            metrics.RUNTIME_MEMORY.set(self.memory_bytes())

    def memory_bytes(self) -> int:
        """The estimated bytes of every runtime held."""
        return sum(r.memory_bytes for r in self._items.values())

    def loaded(self, sha256: str) -> bool:
        """True when the file with this sha256 is loaded in this process."""
        return sha256 in self._items

    def clear(self) -> None:
        """Forget every loaded runtime (requests holding one finish on it)."""
        with self._lock:
            self._items.clear()
            metrics.RUNTIMES_LOADED.set(0)
            metrics.RUNTIME_MEMORY.set(0)


RUNTIMES = RuntimeCache()


def get(spec: VariantSpec) -> Runtime:
    """The loaded runtime of a variant (from this process's LRU, or loaded and verified now)."""
    return RUNTIMES.get(spec)


def warm(spec: VariantSpec) -> Runtime:
    """Load a variant and run one synthetic batch through it, so that the first request finds it
    ready; ``LoadError`` when it cannot load or cannot run that batch.

    The routing table warms a route's new primary before it routes requests to it; readiness
    warms a production chain's first loadable link.
    """
    runtime = get(spec)
    try:
        runtime.run(runtime.synthetic_feeds())
    except Exception as exc:  # noqa: BLE001 - a model that cannot run a zero batch must not serve first
        raise LoadError(f"{spec.label} loaded but failed on a synthetic batch: {str(exc)[:300]}", "warm") from None
    return runtime
