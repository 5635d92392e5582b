"""The HTTP server as a dependency choice: gunicorn (gthread) against granian (WSGI) for the serving plane.

    python bench/http_servers.py [--samples DIR] [--workers 2] [--threads 16] [--rounds 3] [--seconds 2]

Both servers run the same app (``modelhub.wsgi:application``, serving plane, DEBUG=0, Redis,
SQLite) on loopback with the same workers and threads (gunicorn ``--threads``, granian
``--blocking-threads``), serve the same promoted INT8 quality MLP ("mlp", cache off), and get
the same client (``bench/_closed_loop.py``: keep-alive, TCP_NODELAY, one JSON row per request)
at c=1, 8 and 32 in interleaved rounds. Printed: p50 / p95 with 95 % intervals, req/s, 200 / 503 /
other, and granian / gunicorn ratios. Then robustness, each server on its own under c=8 load:

- graceful reload: SIGHUP to the server's main process mid-load; requests that failed;
- worker restart: SIGKILL of one worker mid-load; failed requests, and whether the worker count
  is back and the server answers afterwards;
- admission still bounded: c=96 against MAX_ACTIVE=2 and MAX_QUEUED=4 per process; 503s (with
  Retry-After) must appear, nothing else may fail, and the slowest answer stays bounded.

On a small shared host the client shares cores with the server: read the ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _closed_loop import Loop, add_arguments, closed_loop, interleaved, prepared, table  # noqa: E402 - bench/ is a folder of scripts
from _server import Client, Stack  # noqa: E402

LEVELS = (1, 8, 32)


def _children(pid: int) -> list[int]:
    """The direct child processes of ``pid`` (Linux /proc)."""
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(child) for child in found]


def _workers(process: subprocess.Popen) -> list[int]:
    """The worker processes of a server: the direct children of its main process."""
    return _children(process.pid)


def _under_load(port: int, token: str, bodies: list[bytes], action: Callable[[], object], seconds: float = 5.0) -> Loop:
    """A c=8 closed loop for ``seconds`` with ``action`` done one second in."""
    timer = threading.Timer(1.0, action)
    timer.start()
    try:
        return closed_loop(port, token, "mlp", bodies, 8, seconds)
    finally:
        timer.cancel()


def _failed(loop: Loop) -> str:
    bad = {k: v for k, v in loop.statuses.items() if k != 200}
    return f"{sum(loop.statuses.values())} requests, not 200: {bad or 'none'}"


def robustness(stack: Stack, name: str, start: Callable[[], int], token: str, bodies: list[bytes]) -> list[str]:
    """Reload, worker kill and bounded admission for one server (each started fresh)."""
    lines = [f"{name}:"]
    port = start()
    process = stack.started[-1]
    Client(port, token).post("mlp", bodies[0])
    reload = _under_load(port, token, bodies, lambda: os.kill(process.pid, signal.SIGHUP))
    lines.append(f"  graceful reload (SIGHUP mid-load): {_failed(reload)}")
    before = _workers(process)
    killed = _under_load(port, token, bodies, lambda: os.kill(before[0], signal.SIGKILL) if before else None)
    time.sleep(3)
    after = _workers(process)
    try:
        Client(port, token).post("mlp", bodies[0])
        answers = "answers"
    except (OSError, RuntimeError) as exc:
        answers = f"does not answer ({exc.__class__.__name__})"
    lines.append(f"  worker SIGKILL mid-load: {_failed(killed)}; workers {len(before)} -> {len(after)} after 3 s; "
                 f"then {answers}")
    stack.env.update(MODELHUB_SERVING_MAX_ACTIVE="2", MODELHUB_SERVING_MAX_QUEUED="4")
    try:
        bounded_port = start()
    finally:
        stack.env.update(MODELHUB_SERVING_MAX_ACTIVE="4", MODELHUB_SERVING_MAX_QUEUED="32")
    for _ in range(8):
        Client(bounded_port, token).post("mlp", bodies[0])
    burst = closed_loop(bounded_port, token, "mlp", bodies, 96, 3.0)
    slowest = max(burst.times) if burst.times else float("nan")
    lines.append(f"  admission at c=96 (MAX_ACTIVE=2, MAX_QUEUED=4): {_failed(burst)}; slowest answer {slowest:.1f} ms")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, workers=2, threads=16)
    args = parser.parse_args()


    stack = Stack(prefix="modelhub-bench-http-")
    try:
        stack.start_redis()
        info, bodies = prepared(stack, args.samples)
        servers = {"gunicorn gthread": lambda: stack.start_gunicorn(workers=args.workers, threads=args.threads),
                   "granian wsgi": lambda: stack.start_granian(workers=args.workers, threads=args.threads)}
        ports = {name: start() for name, start in servers.items()}
        for port in ports.values():
            for _ in range(args.workers * 8):
                Client(port, info["token"]).post("mlp", bodies[0])  # load and warm each worker's runtime
        arms = [(name, lambda c, s, port=port: closed_loop(port, info["token"], "mlp", bodies, c, s))
                for name, port in ports.items()]
        runs = interleaved(arms, LEVELS, args.rounds, args.seconds)
        print(f"\nHTTP servers — modelhub serving plane, quality_mlp {info['variant']!r}, {args.workers} workers x "
              f"{args.threads} threads each; {args.rounds} interleaved rounds of {args.seconds:g} s per level and "
              f"server; {os.cpu_count()} CPU(s) shared by client and servers\n")
        print("\n".join(table(runs, list(ports), LEVELS)))
        print("\nrobustness (c=8 load unless said)")
        for name, start in servers.items():
            print("\n".join(robustness(stack, name, start, info["token"], bodies)))
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
