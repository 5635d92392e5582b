"""Starting, hearing back from and stopping the engine's child processes (pure: stdlib only).

The intake (``workers.intake_child``) and a pass (``workers.pass_child``), both sandboxed
(``workers.sandbox``), and the benchmark (``workers.evaluation.bench_child``) each run a model,
which may be hostile or crash the runtime, in a fresh Python child.
This module is the one place that says how such a child runs:

- its environment is built from nothing (``scrubbed_env``, ``measuring_env``): what Python and
  the runtime need, never the worker's own settings (DATABASE_URL, REDIS_URL, SECRET_KEY, AWS_*);
- it runs in a session of its own, so that at a timeout, on an error or when the caller is
  interrupted its whole process group is killed (``kill_group``): nothing it started outlives it;
- it answers on a result channel (``sandbox.result_channel`` in the child) with one JSON object
  per line (``report`` there, ``read_result`` / ``last_result`` here); anything else it prints
  goes to stderr, which the parent keeps in a file (a chatty library must never fill a pipe);
- an end by a signal is told by ``CrashWords``: which signal means a limit, and its label.

Each caller keeps its own words for what went wrong (a FormatError, PassError or BenchError).
Nothing here may start a thread: the one-shot children import it before entering the sandbox.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

from workers.errors import EngineError

MAX_RESULT_BYTES = 16 << 20  # a one-shot child's stdout beyond this is no result of ours
STDERR_TAIL_BYTES = 4000
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# The measuring child keeps what running Python and onnxruntime (CUDA included) needs.
MEASURING_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "LD_LIBRARY_PATH", "OPENBLAS_CORETYPE",
                 "OPENBLAS_L2_SIZE", "CUDA_VISIBLE_DEVICES", "VIRTUAL_ENV")


class ChildTimeout(EngineError):
    """A child gave no result within ``seconds`` and was killed with its process group; the caller
    says, in its own words, what took too long."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"The child process took longer than {seconds:.0f} s and was stopped.")
        self.seconds = seconds


class Finished(NamedTuple):
    """How a one-shot child ended: its exit status (negative: the signal), stdout, stderr's tail."""

    returncode: int
    stdout: bytes
    stderr_tail: str


# --- the environment ----------------------------------------------------------------------------


def scrubbed_env(home: str) -> dict[str, str]:
    """A one-shot child's environment: only what Python needs, ``home`` (its scratch directory) as
    HOME, one OpenMP thread, and this process's import path, so that it imports the same code."""
    search_path = [entry or os.getcwd() for entry in sys.path]
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(search_path)),
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
    }


def measuring_env(threads: int, root: Path) -> dict[str, str]:
    """The measuring child's environment: the kept variables the worker has, every thread pool at
    ``threads``, and ``root`` (the checkout) as the import path, whatever the caller's cwd."""
    env = {name: os.environ[name] for name in MEASURING_ENV if name in os.environ}
    env.update({name: str(threads) for name in THREAD_ENV})
    env["PYTHONPATH"] = str(root)
    return env


# --- the result protocol ------------------------------------------------------------------------


def report(channel: IO[str], payload: dict[str, Any], *, default: Callable[[Any], Any] | None = None) -> None:
    """Write one result (a JSON object on one line) to a child's result channel."""
    channel.write(json.dumps(payload, default=default) + "\n")
    channel.flush()


def read_result(line: str | bytes) -> dict[str, Any] | None:
    """The JSON object of one result line; None for anything else (empty, garbage, not an object)."""
    try:
        payload = json.loads(line)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def last_result(stdout: bytes) -> dict[str, Any] | None:
    """The result on the last line a one-shot child wrote to its result channel (None if none)."""
    lines = stdout.strip().splitlines()
    if not lines or len(stdout) > MAX_RESULT_BYTES:
        return None
    return read_result(lines[-1])


# --- how a child ended --------------------------------------------------------------------------


def signal_name(number: int, unknown: str = "unknown signal") -> str:
    """The name of a signal number (``SIGSEGV``), or ``unknown``."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return unknown


class CrashWords(NamedTuple):
    """How one caller words a child killed by a signal. Each template is filled with ``label``
    ("signal 11: SIGSEGV"), ``number``, ``name`` and the caller's own fields (its limits)."""

    crashed: str  # any other signal: what the child ran brought it down
    killed: str | None = None  # SIGKILL: most likely a limit (the OOM killer, RLIMIT_CPU's hard limit)
    cpu: str | None = None  # SIGXCPU: its CPU-time limit
    unknown: str = "unknown signal"  # the name of a signal Python has no name for

    def message(self, number: int, **fields: Any) -> str:
        """The sentence for a child ended by signal ``number``."""
        template = {signal.SIGKILL: self.killed, signal.SIGXCPU: self.cpu}.get(number) or self.crashed
        name = signal_name(number, self.unknown)
        return template.format(label=f"signal {number}: {name}", number=number, name=name, **fields)


def kill_group(pid: int) -> None:
    """SIGKILL a child's whole process group; its group id is its pid until it is reaped."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --- a one-shot child ---------------------------------------------------------------------------


def run(command: list[str], scratch: str, wall: float) -> Finished:
    """Run a one-shot child (``python -m workers.<child> ...``) in its own session, with
    ``scrubbed_env`` and ``scratch`` as cwd and HOME, and return how it ended.

    The child is killed with its whole process group when it runs past ``wall`` seconds
    (ChildTimeout) or when this process is interrupted meanwhile (e.g. by Celery's soft time
    limit), so that no child outlives its caller.
    """
    stderr_path = Path(scratch) / "stderr.log"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
            env=scrubbed_env(scratch), cwd=scratch, start_new_session=True, close_fds=True,
        )
        try:
            stdout, _ = process.communicate(timeout=wall)
        except subprocess.TimeoutExpired:
            _stop(process)
            raise ChildTimeout(wall) from None
        except BaseException:
            _stop(process)
            raise
    return Finished(process.returncode, stdout, _tail(stderr_path))


def _stop(process: subprocess.Popen[bytes]) -> None:
    kill_group(process.pid)  # not reaped yet, so its group id is still its own
    process.communicate()


def _tail(path: Path) -> str:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - STDERR_TAIL_BYTES))
        return handle.read().decode("utf-8", "replace")


# --- a persistent child -------------------------------------------------------------------------


class Conversation:
    """A persistent child that answers request lines with result lines, in a session of its own;
    its stderr goes to a temporary file."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str], cwd: Path) -> None:
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # noqa: S603
                                        stderr=self.stderr, text=True, env=env, cwd=cwd, start_new_session=True)

    def send(self, request: dict[str, Any]) -> None:
        """Write one request line; a child that is gone is noticed when reading its answer."""
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next result line's object (None when the line is none); when no line comes within
        ``timeout`` seconds the child is closed and ChildTimeout raised."""
        ready, _, _ = select.select([self.process.stdout], [], [], max(timeout, 0))
        if not ready:
            self.close()
            raise ChildTimeout(timeout)
        return read_result(self.process.stdout.readline())

    def exit_status(self, timeout: float = 5) -> int | None:
        """The child's exit status once it has ended, None while it still runs after ``timeout`` s."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stderr_tail(self) -> str:
        """The last 4 KB the child wrote to stderr ("" once closed)."""
        try:
            self.stderr.seek(0)
            return self.stderr.read()[-STDERR_TAIL_BYTES:]
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        """Kill the child's whole process group (threads or helpers it started go with it)."""
        if self.process.poll() is None:
            kill_group(self.process.pid)
        self.process.wait(timeout=10)
        self.stderr.close()
