"""The sandbox a child enters before loading a model: no network, read-only file system, no secrets.

Each test starts a fresh Python child that enters the sandbox first and then probes it, reporting
one JSON line; the same probe without entering it is the control that shows the probe can succeed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from workers.samples import SampleModel

ROOT = Path(__file__).resolve().parents[2]
PRELUDE = """
import ctypes, errno, json, os, socket, struct, sys
from pathlib import Path
from workers import sandbox

if sys.argv[1] == "enter":
    sandbox.enter([Path(p) for p in sys.argv[2:]])

def attempt(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
"""


def _child(code: str, cwd: Path, *writable: Path, enter: bool = True) -> Any:
    """Run PRELUDE + ``code`` in a fresh child (cwd ``cwd``); the object it printed as its last line."""
    argv = [sys.executable, "-B", "-c", PRELUDE + code, "enter" if enter else "control", str(cwd), *map(str, writable)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "HOME": str(cwd)}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    path = tmp_path / "scratch"
    path.mkdir()
    return path


CONNECT = """
def connect():
    with socket.create_connection(("127.0.0.1", PORT), timeout=5):
        pass
print(json.dumps(attempt(connect)))
"""


def _connect_from_child(scratch: Path, *, enter: bool) -> tuple[str, bool]:
    """(what the child's connect gave, whether the listener saw a connection)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        code = CONNECT.replace("PORT", str(listener.getsockname()[1]))
        outcome = _child(code, scratch, enter=enter)
        try:
            listener.accept()[0].close()
            seen = True
        except TimeoutError:
            seen = False
    return outcome, seen


def test_a_sandboxed_child_cannot_reach_a_port_listening_on_the_parents_loopback(scratch: Path) -> None:
    assert _connect_from_child(scratch, enter=False) == ("ok", True)  # control: the probe does connect
    assert _connect_from_child(scratch, enter=True) == ("ENETUNREACH", False)


def test_a_sandboxed_child_cannot_connect_to_a_unix_socket_on_the_file_system(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "service.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen(1)
        code = f"""
def connect():
    with socket.socket(socket.AF_UNIX) as s:
        s.connect({str(path)!r})
print(json.dumps(attempt(connect)))
"""
        assert _child(code, scratch, enter=False) == "ok"
        assert _child(code, scratch) == "EPERM"


def test_a_sandboxed_child_writes_inside_its_writable_directories_only(tmp_path: Path, scratch: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code = f"""
def write(path):
    return attempt(lambda: Path(path).write_text("x"))
print(json.dumps({{"cwd": write("relative.txt"), "out": write({str(out / "model.onnx")!r}),
                  "outside": write({str(tmp_path / "outside.txt")!r}), "tmp": write("/tmp/modelhub-sandbox-probe"),
                  "devnull": attempt(lambda: open("/dev/null", "w").write("x")),
                  "stderr": attempt(lambda: print("still on stderr", file=sys.stderr, flush=True))}}))
"""
    report = _child(code, scratch, out)
    assert report == {"cwd": "ok", "out": "ok", "outside": "EROFS", "tmp": "EROFS", "devnull": "ok", "stderr": "ok"}
    assert (scratch / "relative.txt").read_text() == "x" and (out / "model.onnx").read_text() == "x"
    assert not (tmp_path / "outside.txt").exists()


def test_a_sandboxed_child_cannot_read_another_processs_environment(scratch: Path) -> None:
    secret = "postgres://modelhub:hunter2@db/modelhub"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                              env={"DATABASE_URL": secret, "PATH": os.environ.get("PATH", "")})
    try:
        code = f"""
print(json.dumps({{"environ": attempt(lambda: Path("/proc/{holder.pid}/environ").read_bytes()),
                  "proc": sorted(os.listdir("/proc")), "own": attempt(lambda: Path("/proc/self/status").read_text()),
                  "env": sorted(os.environ)}}))
"""
        assert _child(code, scratch, enter=False)["environ"] == "ok"  # control: same uid, so readable
        report = _child(code, scratch)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert report["environ"] == "ENOENT"
    assert report["own"] == "ok"
    pids = [name for name in report["proc"] if name.isdigit()]
    assert len(pids) == 1 and sorted(report["proc"]) == sorted([*pids, "cpuinfo", "meminfo", "self", "thread-self"])
    assert "DATABASE_URL" not in report["env"]


UNDO = """
libc = ctypes.CDLL(None, use_errno=True)

def writable_again():
    attr = ctypes.create_string_buffer(struct.pack("=QQQQ", 0, 1, 0, 0), 32)  # attr_clr = MOUNT_ATTR_RDONLY
    if libc.syscall(ctypes.c_long(442), ctypes.c_int(-100), b"/", ctypes.c_uint(0x8000), attr, ctypes.c_size_t(32)):
        raise OSError(ctypes.get_errno(), "mount_setattr")

first = attempt(writable_again)
nested = libc.unshare(0x10000000 | 0x00020000)  # a user and mount namespace of its own
print(json.dumps({"first": first, "nested": nested, "nested_undo": attempt(writable_again),
                  "write": attempt(lambda: Path(sys.argv[2]).parent.joinpath("escaped").write_text("x"))}))
"""


def test_code_inside_the_sandbox_cannot_make_the_file_system_writable_again(tmp_path: Path, scratch: Path) -> None:
    report = _child(UNDO, scratch)
    assert report["first"] == "EPERM"  # no capabilities left
    assert report["nested_undo"] == "EPERM"  # a nested namespace gets the mounts locked read-only
    assert report["write"] == "EROFS"
    assert not (tmp_path / "escaped").exists()


def test_entering_with_a_thread_running_fails_with_a_reason_a_person_can_act_on(scratch: Path) -> None:
    code = """
import threading
threading.Thread(target=__import__("time").sleep, args=(5,), daemon=True).start()
try:
    sandbox.enter([Path.cwd()])
    print(json.dumps("entered"))
except sandbox.SandboxError as exc:
    print(json.dumps(str(exc)))
"""
    message = _child(code, scratch, enter=False)
    assert "before any thread starts" in message and "import numpy, torch and onnxruntime only after" in message


def test_a_missing_writable_directory_is_named(tmp_path: Path, scratch: Path) -> None:
    code = f"""
try:
    sandbox.enter([Path({str(tmp_path / "missing")!r})])
except sandbox.SandboxError as exc:
    print(json.dumps(str(exc)))
"""
    assert "missing does not exist" in _child(code, scratch, enter=False)


@pytest.mark.slow
def test_numpy_torch_and_onnxruntime_work_inside_the_sandbox(scratch: Path) -> None:
    code = """
import numpy as np
import onnxruntime
import torch
print(json.dumps({"torch": float(torch.nn.Linear(3, 1)(torch.ones(1, 3)).shape[0]),
                  "numpy": float(np.ones(3).sum()), "ort": bool(onnxruntime.get_available_providers())}))
"""
    assert _child(code, scratch) == {"torch": 1.0, "numpy": 3.0, "ort": True}



@pytest.mark.slow
def test_an_intake_where_the_sandbox_cannot_be_entered_fails_with_the_reason_unless_it_is_off(
        scratch: Path, quality_mlp: SampleModel) -> None:
    """A worker on a host that refuses the sandbox, played by a worker already inside one (whose /proc
    is read-only, so its child cannot write its id maps): "required" refuses, "off" inspects."""
    code = f"""
from workers import formats

def inspect(sandboxed):
    try:
        return formats.inspect_in_subprocess(Path({str(quality_mlp.onnx)!r}), max_bytes=64 << 20,
                                             sandbox=sandboxed).format
    except formats.FormatError as exc:
        return str(exc)

print(json.dumps({{"required": inspect(True), "off": inspect(False)}}))
"""
    report = _child(code, scratch)
    assert report["off"] == "onnx"
    assert report["required"].startswith("The model was not inspected: Cannot enter the sandbox: writing the id maps")
    assert "MODELHUB_SANDBOX=off" in report["required"]
