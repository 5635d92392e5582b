"""Burst test: ten times the capacity of the predict API, offered for a few seconds.

    python bench/burst.py [--factor 10] [--seconds 10] [--concurrency 32] [--layers 1000] [--batch 16]
                          [--max-active 1] [--max-queued 16] [--queue-wait-ms 100]

Starts redis-server and one gunicorn worker (gthread, 32 threads, serving plane, DEBUG=0) on
loopback over a fresh SQLite database, and registers "heavy", a generated ONNX model whose run
takes milliseconds (``--layers`` MatMul+Tanh layers of width 256, ``--batch`` rows per request),
so that capacity is set by model work rather than by the client. Admission is configured with
``--max-active`` / ``--max-queued`` / ``--queue-wait-ms`` (MODELHUB_SERVING_* settings).

1. Capacity: two connections in a closed loop for a few seconds; answered requests per second
   and the latency of a request at capacity.
2. Burst: ``--factor`` × that rate offered on a fixed schedule (open loop, bench/load.py's
   machinery) over ``--concurrency`` connections for ``--seconds``. What must hold: every answer
   is 200 or 503 with Retry-After (or 429), no other 5xx, no transport error; the worker's memory
   stays bounded; admitted requests keep a latency near queue wait + service time.
3. Recovery: right after the burst, requests at a normal pace are all answered.

Exit status 1 when a requirement of step 2 or 3 fails. Bounded: time caps on every phase; every
process started here is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import Client, Stack, percentile  # noqa: E402 - bench/ is a folder of scripts
from load import OpenLoop, Plan  # noqa: E402

WIDTH = 256

REGISTER = """
import io, json
from django.contrib.auth.models import User
from django.core.management import call_command
from modelhub import queue, services
from predictions import services as serving
EAGER = queue.eager()  # intake runs here: there is no worker in this benchmark (held open: a
EAGER.__enter__()  # context manager collected at once would switch eager mode back off)
call_command("migrate", verbosity=0)
admin = User.objects.create_superuser("burst", password=None)
model = services.model_create(name="heavy", owner=admin)
with open({path!r}, "rb") as handle:
    version, _ = services.version_upload(model=model, stream=io.BytesIO(handle.read()), filename="model.onnx",
                                         user=admin)
version.refresh_from_db()
services.deployment_promote(model=model, variant=version.variants.get(name="original"), by=admin, force=True,
                            reason="bench/burst.py: no optimization job in this benchmark")
print(json.dumps({{"token": serving.token_create(name="burst", models=[model], by=admin, rate_limit_per_minute=0)[1]}}))
"""


@dataclass
class Burst:
    """How hard and how long to push, and the admission settings of the server."""

    factor: float = 10.0
    seconds: float = 10.0
    concurrency: int = 32
    layers: int = 1000
    batch: int = 16
    max_active: int = 1
    max_queued: int = 16
    queue_wait_ms: int = 100
    capacity_seconds: float = 4.0


@dataclass
class Outcome:
    """What one run measured."""

    burst: Burst
    capacity_rps: float = 0.0
    capacity_p50_ms: float = 0.0
    capacity_p99_ms: float = 0.0
    offered_rps: float = 0.0
    sent: int = 0
    elapsed_s: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    refused_without_retry_after: int = 0
    transport_errors: int = 0
    first_error: str = ""
    admitted_ms: dict[str, float] = field(default_factory=dict)
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    recovery: Counter = field(default_factory=Counter)
    pids: list[int] = field(default_factory=list)

    @property
    def slo_ms(self) -> float:
        """What an admitted request may take: the longest queue wait plus a request's time at capacity."""
        return self.burst.queue_wait_ms + self.capacity_p99_ms

    @property
    def failures(self) -> list[str]:
        """The requirements this run broke (empty when it held)."""
        found = []
        unexpected = {s: n for s, n in self.statuses.items() if s not in (200, 429, 503)}
        if unexpected:
            found.append(f"answers other than 200/429/503: {unexpected}")
        if self.refused_without_retry_after:
            found.append(f"{self.refused_without_retry_after} refusals without Retry-After")
        if self.transport_errors:
            found.append(f"{self.transport_errors} transport errors (first: {self.first_error})")
        if not self.statuses[200]:
            found.append("no request was admitted during the burst")
        if set(self.recovery) != {200}:
            found.append(f"after the burst: {dict(self.recovery)}")
        return found


def heavy_model(path: Path, layers: int) -> Path:
    """x float32 [batch, 256] -> y: ``layers`` × (MatMul by one shared 256×256 weight, Tanh)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32), "w")
    nodes, previous = [], "x"
    for i in range(layers):
        nodes += [helper.make_node("MatMul", [previous, "w"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [f"h{i}"])]
        previous = f"h{i}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(nodes, "heavy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
                              initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _worker_pid(master: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise RuntimeError("gunicorn started no worker")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssPeak:
    """Samples a process's resident memory every 50 ms in a thread; ``peak`` after ``stop``."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb(self.pid))
            self._stop.wait(0.05)


def capacity(port: int, token: str, body: bytes, seconds: float) -> tuple[float, list[float]]:
    """Two connections in a closed loop for ``seconds``: (answered requests/s, latencies in ms)."""
    times: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        client = Client(port, token)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            status, _, _ = client.send("heavy", body)
            if status == 200:
                with lock:
                    times.append((time.perf_counter() - started) * 1000)
        client.close()

    threads = [threading.Thread(target=loop) for _ in range(2)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 35)
    return len(times) / (time.perf_counter() - began), times


def recovery(port: int, token: str, body: bytes, count: int = 20) -> Counter:
    """``count`` requests one after another, 20 ms apart: their statuses."""
    client = Client(port, token)
    statuses: Counter = Counter()
    for _ in range(count):
        statuses[client.send("heavy", body)[0]] += 1
        time.sleep(0.02)
    client.close()
    return statuses


def run(burst: Burst, *, private_redis: bool = True) -> Outcome:
    """Start the stack, measure capacity, push ``burst.factor`` × capacity, check recovery, stop everything."""
    import numpy as np
    import orjson

    outcome = Outcome(burst=burst)
    with Stack(prefix="modelhub-bench-burst-") as stack:
        stack.start_redis(reuse_env=not private_redis)
        stack.env.update({"MODELHUB_SERVING_MAX_ACTIVE": str(burst.max_active),
                          "MODELHUB_SERVING_MAX_QUEUED": str(burst.max_queued),
                          "MODELHUB_SERVING_QUEUE_WAIT_MS": str(burst.queue_wait_ms)})
        path = heavy_model(stack.tmp / "heavy.onnx", burst.layers)
        done = stack.manage_shell(REGISTER.format(path=str(path)), timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"registration failed:\n{done.stderr[-3000:]}")
        token = json.loads(done.stdout.strip().splitlines()[-1])["token"]
        port = stack.start_gunicorn(workers=1, threads=burst.concurrency)
        outcome.pids = [process.pid for process in stack.started]
        worker = _worker_pid(stack.started[-1].pid)
        rows = np.random.default_rng(1).random((burst.batch, WIDTH), dtype=np.float32)
        body = orjson.dumps({"inputs": {"x": rows}}, option=orjson.OPT_SERIALIZE_NUMPY)
        recovery(port, token, body, count=5)  # load and warm the runtime

        outcome.capacity_rps, at_capacity = capacity(port, token, body, burst.capacity_seconds)
        outcome.capacity_p50_ms = statistics.median(at_capacity)
        outcome.capacity_p99_ms = percentile(at_capacity, 99)
        outcome.offered_rps = burst.factor * outcome.capacity_rps
        plan = Plan(requests=int(outcome.offered_rps * burst.seconds), concurrency=burst.concurrency,
                    rate=outcome.offered_rps, seconds=burst.seconds)
        loop = OpenLoop(port, token, plan, [("heavy", body)] * plan.requests, promote=lambda: None)
        outcome.rss_before_mb = _rss_mb(worker)
        with RssPeak(worker) as rss:
            outcome.elapsed_s = loop.run()
        outcome.rss_peak_mb = rss.peak
        _count(outcome, [record for record in loop.records if record is not None])
        outcome.recovery = recovery(port, token, body)
    return outcome


def _count(outcome: Outcome, records: list[Any]) -> None:
    outcome.sent = len(records)
    errors = [r for r in records if r.error]
    outcome.transport_errors, outcome.first_error = len(errors), errors[0].error if errors else ""
    answered = [r for r in records if not r.error]
    outcome.statuses = Counter(r.status for r in answered)
    outcome.refused_without_retry_after = sum(r.status in (429, 503) and not r.retry_after for r in answered)
    admitted = [(r.finished - r.started) * 1000 for r in answered if r.status == 200]
    if admitted:
        outcome.admitted_ms = {"p50": percentile(admitted, 50), "p99": percentile(admitted, 99), "max": max(admitted)}


def render(outcome: Outcome) -> str:
    """The outcome as a two-column table."""
    burst, admitted = outcome.burst, outcome.admitted_ms
    refused = outcome.statuses[503] + outcome.statuses[429]
    rows = [
        ("capacity: answered req/s (2 connections)", f"{outcome.capacity_rps:.1f}"),
        ("  latency at capacity p50 / p99 (ms)", f"{outcome.capacity_p50_ms:.1f} / {outcome.capacity_p99_ms:.1f}"),
        (f"burst offered ({burst.factor:.0f}x capacity, req/s)", f"{outcome.offered_rps:.0f}"),
        ("burst achieved send rate (req/s)", f"{outcome.sent / outcome.elapsed_s:.0f}" if outcome.elapsed_s else "-"),
        ("status counts", ", ".join(f"{s}: {n}" for s, n in sorted(outcome.statuses.items())) or "none"),
        ("refused (429/503) / without Retry-After", f"{refused} / {outcome.refused_without_retry_after}"),
        ("admitted req/s during the burst", f"{outcome.statuses[200] / outcome.elapsed_s:.1f}"
         if outcome.elapsed_s else "-"),
        ("transport errors", str(outcome.transport_errors)),
        ("admitted latency p50 / p99 / max (ms)",
         f"{admitted['p50']:.1f} / {admitted['p99']:.1f} / {admitted['max']:.1f}" if admitted else "-"),
        ("  SLO: queue wait + p99 at capacity (ms)", f"{outcome.slo_ms:.1f}"),
        ("worker RSS before / peak (MB)", f"{outcome.rss_before_mb:.0f} / {outcome.rss_peak_mb:.0f}"),
        ("after the burst (statuses)", ", ".join(f"{s}: {n}" for s, n in sorted(outcome.recovery.items()))),
    ]
    return "\n".join(f"{name:<44}{value}" for name, value in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Burst()
    for name in ("factor", "seconds", "concurrency", "layers", "batch", "max_active", "max_queued", "queue_wait_ms"):
        default = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args()
    burst = Burst(**{name: getattr(args, name) for name in vars(args)})
    outcome = run(burst)
    print(f"\nmodelhub burst test — gunicorn gthread 1 worker x {burst.concurrency} threads, serving plane, DEBUG=0; "
          f"admission {burst.max_active} active, {burst.max_queued} queued, {burst.queue_wait_ms} ms wait; "
          f"{os.cpu_count()} CPU(s) shared by client and server\n")
    print(render(outcome))
    admitted_p99 = outcome.admitted_ms.get("p99", 0.0)
    print(f"\nadmitted p99 {'within' if admitted_p99 <= outcome.slo_ms else 'OVER'} the SLO")
    for failure in outcome.failures:
        print(f"FAIL: {failure}")
    print(f"result: {'FAIL' if outcome.failures else 'ok'}")
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    sys.exit(main())
