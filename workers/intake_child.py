"""The sandboxed child of ``formats.inspect_in_subprocess`` (pure: no Django).

``python -m workers.intake_child PATH --max-bytes N --memory-mb M --cpu-seconds S [--workdir DIR] [--no-sandbox]
[--dataset-signature JSON --purpose P --max-unpacked-bytes U]``
first enters the sandbox (``workers.sandbox``: no network, read-only file system except its cwd
and ``--workdir``), then limits itself (address space, CPU time, file size, no core dumps), runs
``formats.inspect_model`` (or, with ``--dataset-signature``, ``formats.check_dataset``) and
reports one result (``workers.child``: a JSON line) to the stdout it was started with. Anything the model itself prints goes to stderr, so a model cannot forge the
result. ``workers.formats`` (and with it numpy, onnxruntime, torch) is imported only once the
sandbox is entered: entering needs a process with a single thread.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from workers import child, sandbox


def _test_hook(name: str) -> None:
    """Misbehaviours the test-suite asks for; reachable only through inspect_in_subprocess(_test_hook=...)."""
    if name == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif name == "sleep":
        time.sleep(3600)
    elif name == "spin":
        while True:
            pass
    elif name == "memory":
        blocks = []
        while True:
            blocks.append(bytearray(64 << 20))
    elif name == "forge":
        print(json.dumps({"ok": True, "inspection": {"forged": True}}), flush=True)
    elif name == "env":
        from workers import formats

        raise formats.FormatError("env: " + ",".join(sorted(os.environ)))


def _inspect(args: argparse.Namespace) -> dict[str, Any]:
    from workers import formats
    from workers.formats import torchscript

    torchscript._SANDBOXED = True
    try:
        if args.test_hook:
            _test_hook(args.test_hook)
        if args.dataset_signature is not None:
            return _check_dataset(args)
        workdir = Path(args.workdir) if args.workdir else None
        inspection = formats.inspect_model(Path(args.path), max_bytes=args.max_bytes, workdir=workdir,
                                           max_output_elements=args.max_output_elements)
        return {"ok": True, "inspection": inspection.to_dict()}
    except formats.FormatError as exc:
        return {"ok": False, "kind": "format", "message": str(exc)}
    except MemoryError:
        return {"ok": False, "kind": "memory", "message": "out of memory"}
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
        return {"ok": False, "kind": "internal", "message": f"{type(exc).__name__}: {exc}"[:500]}


def _check_dataset(args: argparse.Namespace) -> dict[str, Any]:
    """Dataset mode: the .npz checked (declared sizes first, then unpacked) here, under this child's
    memory limit, so a dataset that inflates never costs the web process anything."""
    from workers import formats

    signature = formats.Signature.from_dict(json.loads(args.dataset_signature))
    info = formats.check_dataset(Path(args.path), signature, max_bytes=args.max_bytes, purpose=args.purpose,
                                 max_unpacked_bytes=args.max_unpacked_bytes)
    return {"ok": True, "dataset": info.to_dict()}


def main(argv: list[str] | None = None) -> int:
    """Run the child (see the module docstring); the exit status is 0 whenever a result was written."""
    parser = argparse.ArgumentParser(prog="workers.intake_child")
    parser.add_argument("path")
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--memory-mb", type=int, default=2048)
    parser.add_argument("--cpu-seconds", type=int, default=120)
    parser.add_argument("--workdir")
    parser.add_argument("--no-sandbox", action="store_true", help="resource limits only (MODELHUB_SANDBOX=off)")
    parser.add_argument("--dataset-signature", help="check PATH as a dataset for this signature (JSON)")
    parser.add_argument("--purpose", default="validation")
    parser.add_argument("--max-unpacked-bytes", type=int)
    parser.add_argument("--max-output-elements", type=int)
    parser.add_argument("--test-hook")  # checked against formats.sandboxed._TEST_HOOKS by inspect_in_subprocess
    args = parser.parse_args(argv)
    result = sandbox.result_channel()
    payload = sandbox.enter_or_refusal([Path.cwd()] + ([Path(args.workdir)] if args.workdir else []), enabled=not args.no_sandbox)
    if payload is None:
        # Extraction writes at most max_bytes; stderr logs share the margin.
        sandbox.limit(memory_mb=args.memory_mb, cpu_seconds=args.cpu_seconds, file_bytes=args.max_bytes + (64 << 20))
        faulthandler.enable()
        payload = _inspect(args)
    with result:
        child.report(result, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
