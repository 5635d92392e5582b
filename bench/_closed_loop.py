"""Closed-loop load and interleaved rounds, shared by bench/batching.py and bench/http_servers.py.

``closed_loop`` runs ``c`` client threads, each on its own keep-alive connection (TCP_NODELAY),
sending its next request as soon as the last answer came, for a fixed time. ``interleaved``
measures several arms (servers, models) at several concurrency levels in rounds whose order
rotates, so that drift of a shared host hits every arm alike; ``table`` prints p50 / p95 with the
project's intervals (``workers.evaluation.stats``), req/s, and errors / 503s, with ratios to the
first arm (p50 speed-up paired by round; req/s as the median of per-round ratios [min–max]).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _server import ROOT, Client


@dataclass
class Loop:
    """One closed-loop run: the times (ms) of the answered (200) calls, every status, seconds it ran."""

    times: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def rps(self) -> float:
        return sum(self.statuses.values()) / self.seconds if self.seconds else 0.0


def add_arguments(parser: argparse.ArgumentParser, *, workers: int, threads: int) -> None:
    """The options every closed-loop bench takes: samples, server size, rounds and their length."""
    parser.add_argument("--samples", type=Path, default=ROOT / "var" / "samples")
    parser.add_argument("--workers", type=int, default=workers)
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds of each closed loop")


def prepared(stack: Any, samples: Path) -> tuple[dict[str, Any], list[bytes]]:
    """Register the sample model on ``stack`` and make one JSON body per validation row."""
    import numpy as np
    import orjson

    print("preparing: sample model, INT8 variant, registration ...", file=sys.stderr)
    info = stack.prepare(samples)
    with np.load(info["validation"]) as data:
        rows = data["features"].astype(np.float32)
    return info, [orjson.dumps({"inputs": {"features": rows[i:i + 1]}}, option=orjson.OPT_SERIALIZE_NUMPY)
                  for i in range(len(rows))]


def closed_loop(port: int, token: str, model: str, bodies: list[bytes], clients: int, seconds: float) -> Loop:
    """``clients`` threads posting ``bodies`` in turn to ``model`` for ``seconds``."""
    loop, lock = Loop(), threading.Lock()
    connections = [Client(port, token) for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop = [0.0]

    def run(index: int) -> None:
        client, mine, statuses = connections[index], [], Counter()
        start.wait()
        number = index
        while time.monotonic() < stop[0]:
            began = time.perf_counter()
            try:
                status, _, _ = client.send(model, bodies[number % len(bodies)])
            except OSError:
                status = "error"
                client.close()
            statuses[status] += 1
            if status == 200:
                mine.append((time.perf_counter() - began) * 1000)
            number += clients
        with lock:
            loop.times.extend(mine)
            loop.statuses.update(statuses)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    stop[0] = time.monotonic() + seconds
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    loop.seconds = time.perf_counter() - began
    for client in connections:
        client.close()
    return loop


Arm = tuple[str, Callable[[int, float], Loop]]  # (name, run(clients, seconds))


def interleaved(arms: list[Arm], levels: tuple[int, ...], rounds: int, seconds: float) -> dict[tuple[str, int], list[Loop]]:
    """Every arm at every level, ``rounds`` times, the arms' order rotated each round."""
    runs: dict[tuple[str, int], list[Loop]] = {(name, c): [] for name, _ in arms for c in levels}
    for index in range(rounds):
        for c in levels:
            shift = index % len(arms)
            for name, run in arms[shift:] + arms[:shift]:
                runs[(name, c)].append(run(c, seconds))
    return runs


def _latency(loops: list[Loop], statistic: str) -> Any:
    from workers.evaluation import stats

    rounds = [loop.times for loop in loops if loop.times]
    return stats.estimate(rounds, statistic) if rounds else None


def _ratio_text(base: list[Loop], other: list[Loop]) -> str:
    from workers.evaluation import stats

    ratios = [o.rps / b.rps for b, o in zip(base, other, strict=True) if b.rps]
    rounds_b, rounds_o = [b.times for b in base], [o.times for o in other]
    p50 = stats.speedup(rounds_b, rounds_o, "p50") if all(rounds_b) and all(rounds_o) else None
    rps = f"{statistics.median(ratios):.2f}× [{min(ratios):.2f}–{max(ratios):.2f}]" if ratios else "—"
    shown = f"{p50.value:.2f}× [{p50.low:.2f}–{p50.high:.2f}] ({stats.claim(p50)})" if p50 else "—"
    return f"req/s {rps}; p50 speed-up {shown}"


def table(runs: dict[tuple[str, int], list[Loop]], arms: list[str], levels: tuple[int, ...]) -> list[str]:
    """Printable lines: one per (level, arm), then the ratio of each arm to the first."""
    lines = [f"{'c':>3}  {'arm':<24}{'p50 ms [95 %]':>24}{'p95 ms [95 %]':>24}{'req/s':>9}{'200':>8}{'503':>6}{'other':>6}"]
    for c in levels:
        for name in arms:
            loops = runs[(name, c)]
            p50, p95 = _latency(loops, "p50"), _latency(loops, "p95")
            statuses = sum((loop.statuses for loop in loops), Counter())
            cells = [f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}]" if e else "—" for e in (p50, p95)]
            rps = statistics.median(loop.rps for loop in loops)
            other = sum(v for k, v in statuses.items() if k not in (200, 503))
            lines.append(f"{c:>3}  {name:<24}{cells[0]:>24}{cells[1]:>24}{rps:>9.0f}{statuses[200]:>8}"
                         f"{statuses[503]:>6}{other:>6}")
        for name in arms[1:]:
            lines.append(f"{'':>3}  {name + ' / ' + arms[0]:<24} {_ratio_text(runs[(arms[0], c)], runs[(name, c)])}")
    return lines
