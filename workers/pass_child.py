"""The sandboxed child of ``workers.isolation.run_isolated`` (pure: no Django).

``python -m workers.pass_child NAME SRC DST --config JSON --memory-mb M --cpu-seconds S [--no-sandbox]``
first enters the sandbox (``workers.sandbox``: no network, read-only file system except its cwd
and ``DST``; ``SRC`` and the config's datasets stay readable), then limits itself, runs the pass's
``run(SRC, DST, config)`` and reports one result (``workers.child``: a JSON line) to the stdout it
was started with: the PassResult, or the error. Anything the model prints goes to stderr. The
passes (and numpy, torch, onnxruntime) are imported only once the sandbox is entered: entering
needs a single thread.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import sys
from pathlib import Path
from typing import Any

from workers import child, sandbox

MAX_OUTPUT_BYTES = 4 << 30  # a pass writes one ONNX file of at most 2 GB, plus its temporary copy


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from workers.passes import base, get_pass, make_config

    try:
        spec = json.loads(args.config)
        config = make_config(args.name, spec["options"], **{k: Path(v) for k, v in spec["data"].items()})
        result = get_pass(args.name).run(Path(args.src), Path(args.dst), config)
        return {"ok": True, "result": result.to_dict()}
    except base.PassError as exc:
        return {"ok": False, "kind": type(exc).__name__, "message": str(exc)}
    except MemoryError:
        return {"ok": False, "kind": "memory", "message": "out of memory"}
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
        return {"ok": False, "kind": "internal", "message": f"{type(exc).__name__}: {exc}"[:500]}


def _plain(value: Any) -> Any:
    """numpy scalars as numbers (metrics hold them), anything else unknown as text."""
    return value.item() if hasattr(value, "item") else str(value)


def main(argv: list[str] | None = None) -> int:
    """Run one pass (see the module docstring); the exit status is 0 whenever a result was written."""
    parser = argparse.ArgumentParser(prog="workers.pass_child")
    parser.add_argument("name")
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--config", required=True, help='{"options": {...}, "data": {field: path}}')
    parser.add_argument("--memory-mb", type=int, default=8192)
    parser.add_argument("--cpu-seconds", type=int, default=3600)
    parser.add_argument("--no-sandbox", action="store_true", help="resource limits only (MODELHUB_SANDBOX=off)")
    args = parser.parse_args(argv)
    result = sandbox.result_channel()
    payload = sandbox.enter_or_refusal([Path.cwd(), Path(args.dst)], enabled=not args.no_sandbox)
    if payload is None:
        sandbox.limit(memory_mb=args.memory_mb, cpu_seconds=args.cpu_seconds, file_bytes=MAX_OUTPUT_BYTES)
        faulthandler.enable()
        payload = _run(args)
    with result:
        child.report(result, payload, default=_plain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
