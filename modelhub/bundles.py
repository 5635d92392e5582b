"""Deployment bundle of a variant: a zip a person can run with only onnxruntime and numpy.

The zip is assembled on the node that answers the download (config.json carries the variant's
latest measurements, so there is no stored bundle to hand out by a presigned URL), from the
node's checked copy of the model, into a temporary file that is streamed back: a large model is
never held in memory, and the bucket stays private to the servers (a presigned URL would be a
bearer credential outside the role check, and needs the bucket reachable from the client).
"""

from __future__ import annotations

import importlib.metadata
import json
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Any

from django.http import FileResponse

from modelhub import artifacts
from modelhub.errors import Invalid, Unavailable
from modelhub.models import Variant
from workers.targets import bundle as js_bundle

PREDICT_PY = '''"""Minimal loader of this bundle: needs only onnxruntime and numpy.

    python predict.py inputs.npz      # arrays named after the model inputs
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).parent


def load(threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # The model file keeps its own name: its external data files are found by relative names beside it.
    model_file = json.loads((HERE / "config.json").read_text()).get("model_file", "model.onnx")
    return ort.InferenceSession(str(HERE / model_file), options, providers=["CPUExecutionProvider"])


def predict(session: ort.InferenceSession, inputs: dict) -> dict:
    signature = json.loads((HERE / "config.json").read_text())["signature"]
    feed = {spec["name"]: np.asarray(inputs[spec["name"]], dtype=spec["dtype"]) for spec in signature["inputs"]}
    names = [out.name for out in session.get_outputs()]
    return dict(zip(names, session.run(None, feed)))


if __name__ == "__main__":
    with np.load(sys.argv[1], allow_pickle=False) as data:
        outputs = predict(load(), {name: data[name] for name in data.files})
    for name, value in outputs.items():
        print(name, value.shape, value.ravel()[:8])
'''


RESERVED = {"config.json", "predict.py", "README.md"}  # the bundle's own files


def _lineage(variant: Variant) -> list[dict[str, Any]]:
    chain = []
    node: Variant | None = variant
    while node is not None:
        chain.append({"name": node.name, "pass": node.pass_name, "config": node.config, "sha256": node.sha256})
        node = node.parent
    return chain


def _files(variant: Variant) -> list[tuple[str, str, str | None]]:
    """(name in the bundle, storage key, sha256) of every file of the variant, the primary first.
    Names are the relative ones the model's external data references use; a stored name that is
    absolute or climbs out (never written by the intake) is refused rather than written."""
    entries = [e for e in variant.files or [] if e.get("key")] or [{"path": "model.onnx", "key": variant.storage_key}]
    entries.sort(key=lambda entry: entry["key"] != variant.storage_key)
    files = []
    for entry in entries:
        name = PurePosixPath(entry.get("path") or PurePosixPath(entry["key"]).name)
        if name.is_absolute() or ".." in name.parts or str(name) in RESERVED or name.parts[0] in js_bundle.RESERVED:
            raise Invalid(f"Variant {variant.label} has a file named {str(name)!r}; it cannot be bundled.")
        sha = variant.sha256 if entry["key"] == variant.storage_key else entry.get("sha256")
        files.append((str(name), entry["key"], sha or None))
    return files


def _report(report: dict[str, Any]) -> dict[str, Any]:
    """The stored benchmark report with the model's file name, not the server path it was measured at."""
    if report.get("model"):
        return {**report, "model": PurePosixPath(str(report["model"]).replace("\\", "/")).name}
    return report


def _config(variant: Variant, model_file: str = "model.onnx") -> dict[str, Any]:
    result = variant.latest_result()
    return {
        "model": variant.version.model.name, "version": variant.version.number, "variant": variant.name,
        "sha256": variant.sha256, "model_file": model_file, "signature": variant.version.signature,
        "lineage": _lineage(variant),
        "metrics": _report(result.report) if result else {}, "accuracy": result.accuracy if result else {},
        "verdict": result.verdict if result else {},
        "runtime": {"onnxruntime": importlib.metadata.version("onnxruntime")},
        "session_options": variant.session_options or {},  # measured for this variant by its job
    }


def _write_js(archive: zipfile.ZipFile, model: str) -> None:
    """The browser and Node parts of the bundle (``workers.targets.bundle``)."""
    for name, source in js_bundle.js_files(model).items():
        if isinstance(source, Path):
            archive.write(source, name)
        else:
            archive.writestr(name, source)


def bundle_file(variant: Variant) -> IO[bytes]:
    """The zip archive of a READY ONNX variant (every file of the model under its own relative name,
    external data included, config.json, predict.py, README.md) in a temporary file, rewound; it
    disappears when closed."""
    if variant.status != Variant.Status.READY or variant.format != "onnx":
        raise Invalid(f"Variant {variant.label} is not a READY ONNX model; only those can be bundled.")
    files = _files(variant)
    config = _config(variant, files[0][0])
    readme = (f"# {config['model']} v{config['version']} / {variant.name}\n\n"
              "Run: `pip install onnxruntime numpy && python predict.py inputs.npz`.\n"
              "Browser: serve this folder statically and open index.html (loader.mjs, onnxruntime-web in ort/).\n"
              "Node: `cd node && npm ci && node predict.mjs [inputs.json]`.\n"
              "config.json holds the signature, the measured metrics, the verdict and the lineage.\n")
    out = tempfile.TemporaryFile(dir=artifacts.work_dir())
    try:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, key, sha in files:  # each checked: never bundle damaged bytes
                archive.write(artifacts.local_path(key, sha), name)
            archive.writestr("config.json", json.dumps(config, indent=2, default=str))
            archive.writestr("predict.py", PREDICT_PY)
            _write_js(archive, config["model"])
            archive.writestr("README.md", readme)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


def bundle_bytes(variant: Variant) -> bytes:
    """The bundle's bytes (for callers that want them whole; downloads stream ``bundle_file``)."""
    with bundle_file(variant) as handle:
        return handle.read()


def bundle_response(variant: Variant) -> FileResponse:
    """The bundle as a download (never rendered inline by a browser)."""
    name = f"{variant.version.model.name}-v{variant.version.number}-{variant.name}.zip"
    try:
        handle = bundle_file(variant)
    except (artifacts.Corrupt, FileNotFoundError):
        raise Invalid(f"The stored file of variant {variant.label} is missing or does not match its sha256; "
                      "it cannot be bundled.") from None
    except artifacts.StorageUnavailable as exc:
        raise Unavailable(f"{exc} Try the download again shortly.") from None
    response = FileResponse(handle, as_attachment=True, filename=name, content_type="application/zip")
    response["X-Content-Type-Options"] = "nosniff"
    return response
