"""``inspect_model``: the whole check of an upload in this process (pure: no Django).

Its size, its format (``sniff``), then the ONNX path (parse, IR version, opsets, operators,
external data, the checker, a session), an archive (extracted, then that path) or TorchScript
(only ever in the intake's sandboxed child). Meant for a worker, and for uploads only through
``inspect_in_subprocess``: a hostile model may crash the loaders.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from workers.formats.archives import extract_archive
from workers.formats.common import FormatError, mb, regular_size, sha256_file
from workers.formats.inspection import FileEntry, Inspection
from workers.formats.limits import runtime_limits
from workers.formats.onnx_checks import (
    PROTOBUF_LIMIT,
    check_external_data,
    check_ir_version,
    check_no_extra_files,
    check_operators,
    check_opsets,
    check_output_bound,
    parse_onnx,
    prove_it_loads,
    run_checker,
)
from workers.formats.signature import signature_from_onnx_model
from workers.formats.sniffing import sniff
from workers.formats.torchscript import inspect_torchscript


def inspect_model(path: Path, *, max_bytes: int, workdir: Path | None = None,
                  max_output_elements: int | None = None) -> Inspection:
    """Fully check an uploaded model and return its Inspection; FormatError says why not.

    Meant for a worker, and for uploads only through inspect_in_subprocess (a hostile model may
    crash the loaders). ``workdir``: an empty directory the caller owns; an archive is extracted
    there (otherwise into a temporary directory that is removed afterwards). ``max_output_elements``:
    the serving answer cap an ONNX model's declared outputs must fit (``check_output_bound``).
    """
    path = Path(path)
    size = regular_size(path, "The model file")
    if size > max_bytes:
        raise FormatError(f"The model file is {mb(size)}, over the upload limit of {mb(max_bytes)}.")
    kind = sniff(path, path.name)
    if kind == "onnx":
        return _inspect_onnx(path, root=path.parent, max_bytes=max_bytes, exclusive=False, max_out=max_output_elements)
    if kind == "torchscript":
        return inspect_torchscript(path, max_bytes=max_bytes)
    if workdir is not None:
        return _inspect_archive(path, Path(workdir), max_bytes=max_bytes, keep=True, max_out=max_output_elements)
    with tempfile.TemporaryDirectory(prefix="modelhub-archive-") as tmp:
        return _inspect_archive(path, Path(tmp) / "model", max_bytes=max_bytes, keep=False, max_out=max_output_elements)


def _inspect_archive(path: Path, dest: Path, *, max_bytes: int, keep: bool, max_out: int | None) -> Inspection:
    model_path = extract_archive(path, dest, max_bytes=max_bytes)
    inspection = _inspect_onnx(model_path, root=dest, max_bytes=max_bytes, exclusive=True, max_out=max_out)
    inspection.format = "archive"
    inspection.notes.append(f"Extracted from a .zip of {len(inspection.files)} file(s); sha256 is the .onnx's.")
    if not keep:
        inspection.root = None
    return inspection


def _inspect_onnx(model_path: Path, *, root: Path, max_bytes: int, exclusive: bool, max_out: int | None) -> Inspection:
    size = model_path.stat().st_size
    if size > PROTOBUF_LIMIT:
        raise FormatError(
            f"The .onnx file is {mb(size)}; one protobuf cannot exceed 2 GB. Save the weights as external "
            "data (onnx.save_model(..., save_as_external_data=True)) and upload a .zip of the .onnx and its data files."
        )
    model = parse_onnx(model_path)
    limits = runtime_limits()
    check_ir_version(model, limits)
    check_opsets(model, limits)
    domains = check_operators(model)
    external = check_external_data(model, model_path.parent.resolve(), max_bytes=max_bytes)
    data_files = {target.resolve() for target in external.values()} - {model_path.resolve()}
    paths = [model_path, *sorted(data_files)]
    total = sum(p.stat().st_size for p in paths)
    if total > max_bytes:
        raise FormatError(f"The model and its external data are {mb(total)}, over the limit of {mb(max_bytes)}.")
    if exclusive:
        check_no_extra_files(root, paths)
    run_checker(model_path)
    bound_notes = check_output_bound(model, max_out) if max_out is not None else []
    prove_it_loads(model_path)
    files = _file_entries(root, paths)
    default_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return Inspection(
        format="onnx",
        signature=signature_from_onnx_model(model),
        sha256=files[0].sha256,
        total_size=total,
        files=files,
        ir_version=int(model.ir_version),
        opset=default_opset,
        op_domains=domains,
        primary=files[0].path,
        root=str(root),
        producer=" ".join(p for p in (model.producer_name, model.producer_version) if p),
        notes=([f"{len(external)} tensor(s) stored as external data."] if external else []) + bound_notes,
    )


def _file_entries(root: Path, paths: list[Path]) -> list[FileEntry]:
    base = root.resolve()
    return [
        FileEntry(p.resolve().relative_to(base).as_posix(), sha256_file(p), p.stat().st_size) for p in paths
    ]
