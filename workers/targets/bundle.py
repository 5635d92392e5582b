"""The JavaScript parts of a variant's deployment bundle (pure: no Django).

Beside the Python loader (``modelhub.bundles``), a bundle carries:

- for the browser: ``index.html`` (a static page that loads the model and predicts once),
  ``loader.mjs`` + ``tensors.mjs`` (the product's ES-module loader, ``static/modelhub/ort/``) and
  ``ort/`` (onnxruntime-web's wasm build: its module, its wasm glue and SIMD binary), so that the
  folder served by any static server predicts with nothing fetched from elsewhere;
- for Node: ``node/predict.mjs`` and ``node/package.json`` pinning onnxruntime-node to the version
  the variant was judged with (``npm ci`` then ``node predict.mjs``).

Both read the bundle's ``config.json`` and its model file.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_PAGES = ROOT / "static" / "modelhub" / "ort"
_ORT_WEB = ROOT / "node_modules" / "onnxruntime-web"
_ORT_WEB_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
RESERVED = frozenset({"index.html", "loader.mjs", "tensors.mjs", "ort", "node"})  # a model file may not take these


def pinned_version(package: str) -> str:
    """The exact version of ``package`` the project pins (its package.json dependencies)."""
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]
    if package not in pinned:
        raise KeyError(f"{package} is not pinned in package.json.")
    return pinned[package]


def node_package_json(model: str) -> str:
    """The Node part's package.json: private, an ES module, onnxruntime-node pinned exactly."""
    return json.dumps({"name": f"{model}-bundle".lower(), "private": True, "type": "module",
                       "description": "Predict with this modelhub bundle in Node (node predict.mjs).",
                       "dependencies": {"onnxruntime-node": pinned_version("onnxruntime-node")}}, indent=2) + "\n"


def js_files(model: str) -> dict[str, Path | str]:
    """The bundle's JavaScript files: name in the bundle → file on disk (or its text)."""
    missing = [name for name in _ORT_WEB_FILES if not (_ORT_WEB / "dist" / name).is_file()]
    if missing:
        raise FileNotFoundError(f"onnxruntime-web is not installed ({', '.join(missing)} missing); run `make install`.")
    files: dict[str, Path | str] = {"index.html": _PAGES / "bundle.html", "loader.mjs": _PAGES / "loader.mjs",
                                    "tensors.mjs": _PAGES / "tensors.mjs"}
    files.update({f"ort/{name}": _ORT_WEB / "dist" / name for name in _ORT_WEB_FILES})
    files["node/predict.mjs"] = ROOT / "workers" / "targets" / "js" / "predict.mjs"
    files["node/package.json"] = node_package_json(model)
    return files
