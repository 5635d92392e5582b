"""Load test of the predict API: a fixed-rate open-loop run with a promotion in the middle.

    python bench/load.py [--requests 20000] [--concurrency 32] [--rate 400] [--seconds 120]
                         [--hit-share 0.5] [--workers 2] [--threads 4] [--samples DIR]

Starts the same loopback stack as bench/serving.py (redis-server, a fresh SQLite database,
gunicorn gthread with DEBUG=0 on the serving plane; "mlp" uncached and "mlp-cached" with the
response cache, both serving an INT8 variant) and sends ``--requests`` requests on a fixed
schedule: request i is due at start + i / rate, whatever happened to earlier ones. ``--concurrency``
keep-alive connections take the next due request as soon as they are free. About ``--hit-share``
of the requests repeat one of a few bodies on "mlp-cached" (cache hits); the rest send a fresh
random body to "mlp" (cache misses). When the middle request is due, the original fp32 variant of
"mlp" is promoted (forced, with a reason) by ``manage.py shell`` in the server's environment.

Latency is corrected for coordinated omission: it runs from the request's due time, not from
when a connection got round to sending it, so a stalled server is charged for the requests it
kept waiting. The uncorrected figures (from the actual send) are printed beside them.

Exit status 1 on any 5xx answer, any transport error or a failed promotion. Bounded: the request
count and the wall-clock cap ``--seconds``; every process started here is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import ROOT, Client, Stack, percentile  # noqa: E402 - bench/ is a folder of scripts

HIT_BODIES = 16  # distinct bodies repeated on "mlp-cached"; all are cached during the warm-up

PROMOTE = """
from django.contrib.auth.models import User
from modelhub import services
from modelhub.models import RegisteredModel, Variant
model = RegisteredModel.objects.get(name="mlp")
variant = Variant.objects.get(version__model=model, name={variant!r})
services.deployment_promote(model=model, variant=variant, by=User.objects.get(username={admin!r}),
                            force=True, reason="bench/load.py: promotion under load")
print("promoted", variant.name)
"""


@dataclass
class Plan:
    """What to send: how many requests, how fast, over how many connections, within how long."""

    requests: int = 20_000
    concurrency: int = 32
    rate: float = 400.0
    seconds: float = 120.0
    hit_share: float = 0.5
    seed: int = 1


@dataclass
class Promotion:
    """The promotion in the middle of the run: which variant, when it returned, how it went."""

    variant: str
    due_index: int
    done_at: float | None = None
    ok: bool = False
    output: str = ""


@dataclass
class Record:
    """One request: its schedule, its timings (perf_counter seconds) and what came back."""

    model: str
    due: float
    started: float = 0.0
    finished: float = 0.0
    status: int = 0
    variant: str = ""
    cached: bool = False
    retry_after: bool = False
    error: str = ""


@dataclass
class Report:
    """Everything the table prints, computed from the records of one run."""

    plan: Plan
    sent: int
    elapsed_s: float
    statuses: Counter = field(default_factory=Counter)
    transport_errors: int = 0
    first_error: str = ""
    corrected: dict[str, float] = field(default_factory=dict)
    uncorrected: dict[str, float] = field(default_factory=dict)
    cache_hits: int = 0
    hit_requests: int = 0
    old_variant: str = ""
    new_variant: str = ""
    variants: Counter = field(default_factory=Counter)
    after_new: int = 0
    after_old: int = 0
    last_old_ms: float = 0.0
    promotion_ok: bool = False
    promotion_s: float = 0.0
    shed: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def server_errors(self) -> int:
        """Answers with a 5xx status."""
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def failed(self) -> bool:
        """True when the run must exit non-zero: a 5xx, a transport error or a failed promotion."""
        return bool(self.server_errors or self.transport_errors or not self.promotion_ok)


# --- the open-loop run -----------------------------------------------------------------------------


class OpenLoop:
    """Send planned requests on a fixed schedule over ``concurrency`` keep-alive connections."""

    def __init__(self, port: int, token: str, plan: Plan, bodies: list[tuple[str, bytes]],
                 promote: Any) -> None:
        self.port, self.token, self.plan, self.bodies = port, token, plan, bodies
        self.promote_fn = promote
        self.records: list[Record | None] = [None] * len(bodies)
        self.next = 0
        self.lock = threading.Lock()
        self.start = 0.0
        self.deadline = 0.0
        self.promoter: threading.Thread | None = None

    def run(self) -> float:
        """Send everything due before the cap; the elapsed wall time in seconds."""
        threads = [threading.Thread(target=self._connection, daemon=True) for _ in range(self.plan.concurrency)]
        self.start = time.perf_counter() + 0.05  # every thread is up before the first request is due
        self.deadline = self.start + self.plan.seconds
        for thread in threads:
            thread.start()
        for thread in threads:
            # a request in flight at the cap may still take the client timeout (30 s) to fail
            thread.join(timeout=max(0.0, self.deadline - time.perf_counter()) + 35)
        elapsed = time.perf_counter() - self.start
        if self.promoter is not None:
            self.promoter.join(timeout=max(0.0, self.deadline - time.perf_counter()) + 5)
        return elapsed

    def _take(self) -> int | None:
        with self.lock:
            index = self.next
            self.next += 1
        if index >= len(self.bodies) or self.start + index / self.plan.rate > self.deadline:
            return None
        return index

    def _connection(self) -> None:
        client = Client(self.port, self.token)
        while (index := self._take()) is not None:
            model, body = self.bodies[index]
            record = Record(model=model, due=self.start + index / self.plan.rate)
            self.records[index] = record
            if index == len(self.bodies) // 2:
                self.promoter = threading.Thread(target=self.promote_fn, daemon=True)
                self.promoter.start()
            delay = record.due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            record.started = time.perf_counter()
            try:
                status, headers, data = client.send(model, body)
            except Exception as exc:  # noqa: BLE001 - counted and reported; the connection is reopened
                record.finished, record.error = time.perf_counter(), repr(exc)
                client.close()
                client = Client(self.port, self.token)
                continue
            record.finished = time.perf_counter()
            self._read(record, status, headers.get("Retry-After"), data)
        client.close()

    @staticmethod
    def _read(record: Record, status: int, retry_after: str | None, data: bytes) -> None:
        record.status, record.retry_after = status, retry_after is not None
        if status == 200:
            answer = json.loads(data)
            record.variant, record.cached = answer.get("variant", ""), bool(answer.get("cached"))


def make_bodies(rows: Any, plan: Plan) -> list[tuple[str, bytes]]:
    """The planned (model, body) pairs: repeated bodies on "mlp-cached", fresh random ones on "mlp"."""
    import numpy as np
    import orjson

    rng = np.random.default_rng(plan.seed)
    option = orjson.OPT_SERIALIZE_NUMPY
    repeated = [orjson.dumps({"inputs": {"features": rows[i:i + 1]}}, option=option) for i in range(HIT_BODIES)]
    bodies = []
    for i in range(plan.requests):
        if rng.random() < plan.hit_share:
            bodies.append(("mlp-cached", repeated[i % HIT_BODIES]))
        else:
            fresh = rng.random((1, rows.shape[1]), dtype=np.float32)
            bodies.append(("mlp", orjson.dumps({"inputs": {"features": fresh}}, option=option)))
    return bodies


def warm(port: int, token: str, bodies: list[tuple[str, bytes]], workers: int) -> None:
    """Load the runtimes in every worker and fill the cache with the repeated bodies."""
    client = Client(port, token)
    for model, body in bodies[: workers * 8]:
        client.post(model, body)
    seen = {body for model, body in bodies if model == "mlp-cached"}
    for body in seen:
        client.post("mlp-cached", body)
    client.close()


# --- the report ------------------------------------------------------------------------------------


def summarize(plan: Plan, records: list[Record | None], elapsed: float, promotion: Promotion,
              old_variant: str) -> Report:
    """Count statuses, cache hits and variants; corrected and uncorrected latency percentiles."""
    done = [r for r in records if r is not None]
    report = Report(plan=plan, sent=len(done), elapsed_s=elapsed, old_variant=old_variant,
                    new_variant=promotion.variant, promotion_ok=promotion.ok)
    errors = [r for r in done if r.error]
    report.transport_errors = len(errors)
    report.first_error = errors[0].error if errors else ""
    answered = [r for r in done if not r.error]
    report.statuses = Counter(r.status for r in answered)
    hits = [r for r in answered if r.model == "mlp-cached"]
    report.hit_requests, report.cache_hits = len(hits), sum(r.cached for r in hits)
    report.variants = Counter(r.variant for r in answered if r.model == "mlp" and r.status == 200)
    if promotion.done_at is not None:
        report.promotion_s = promotion.done_at - min((r.due for r in done), default=promotion.done_at)
        after = [r for r in answered if r.model == "mlp" and r.status == 200 and r.started > promotion.done_at]
        report.after_new = sum(r.variant == promotion.variant for r in after)
        old = [r.started for r in after if r.variant != promotion.variant]
        report.after_old = len(old)
        # routes refresh on a generation check at most once a second per process: a short tail is by design
        report.last_old_ms = (max(old) - promotion.done_at) * 1000 if old else 0.0
    for status in (429, 503):
        shed = [r for r in answered if r.status == status]
        report.shed[status] = (len(shed), sum(r.retry_after for r in shed))
    report.corrected = _percentiles([(r.finished - r.due) * 1000 for r in done])
    report.uncorrected = _percentiles([(r.finished - r.started) * 1000 for r in done])
    return report


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"p50": percentile(values, 50), "p90": percentile(values, 90), "p99": percentile(values, 99),
            "p99.9": percentile(values, 99.9), "max": max(values)}


def render(report: Report, header: str = "") -> str:
    """The report as a two-column table."""
    plan, c, u = report.plan, report.corrected, report.uncorrected
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(report.statuses.items())) or "none"
    rows = [
        ("requests planned / sent", f"{plan.requests} / {report.sent}"),
        ("target rate (req/s)", f"{plan.rate:.0f}"),
        ("achieved rate (req/s)", f"{report.sent / report.elapsed_s:.1f}" if report.elapsed_s else "-"),
        ("status counts", statuses),
        ("5xx answers", str(report.server_errors)),
        ("transport errors", str(report.transport_errors)),
        ("429 (with Retry-After)", "{} ({})".format(*report.shed.get(429, (0, 0)))),
        ("503 (with Retry-After)", "{} ({})".format(*report.shed.get(503, (0, 0)))),
        ("cache hits / requests on mlp-cached", f"{report.cache_hits} / {report.hit_requests}"),
    ]
    for name in ("p50", "p90", "p99", "p99.9", "max"):
        beside = f"   (uncorrected {u[name]:.2f})" if name in ("p50", "p99") and u else ""
        rows.append((f"latency {name}, corrected (ms)", f"{c.get(name, float('nan')):.2f}{beside}"))
    rows += [
        ("promotion", f"{report.old_variant} -> {report.new_variant}: "
                      f"{'done' if report.promotion_ok else 'FAILED'} at +{report.promotion_s:.1f} s"),
        ("mlp answers by variant", ", ".join(f"{v}: {n}" for v, n in sorted(report.variants.items()))),
        ("mlp answers after it: new / old variant", f"{report.after_new} / {report.after_old}"),
        ("  last old-variant answer sent after (ms)", f"{report.last_old_ms:.0f}"),
    ]
    lines = [header] if header else []
    lines += [f"{name:<42}{value}" for name, value in rows]
    if report.first_error:
        lines.append(f"first transport error: {report.first_error}")
    return "\n".join(lines)


# --- orchestration ---------------------------------------------------------------------------------


def run(plan: Plan, *, samples: Path, workers: int = 2, threads: int = 4, setup_timeout: float = 900,
        private_redis: bool = False) -> tuple[Report, dict[str, Any]]:
    """Start the stack, run ``plan`` against it with one promotion in the middle, stop everything."""
    import numpy as np

    with Stack(prefix="modelhub-bench-load-") as stack:
        stack.start_redis(reuse_env=not private_redis)
        info = stack.prepare(samples, timeout=setup_timeout)
        with np.load(info["validation"]) as data:
            rows = data["features"].astype(np.float32)
        port = stack.start_gunicorn(workers=workers, threads=threads)
        bodies = make_bodies(rows, plan)
        warm(port, info["token"], bodies, workers)
        new = "original" if info["variant"] != "original" else "int8"
        promotion = Promotion(variant=new, due_index=plan.requests // 2)

        def promote() -> None:
            done = stack.manage_shell(PROMOTE.format(variant=new, admin=info["admin"]),
                                      timeout=max(30.0, plan.seconds))
            promotion.done_at = time.perf_counter()
            promotion.ok = done.returncode == 0
            promotion.output = (done.stdout + done.stderr)[-2000:]

        loop = OpenLoop(port, info["token"], plan, bodies, promote)
        elapsed = loop.run()
        report = summarize(plan, loop.records, elapsed, promotion, info["variant"])
        info["promotion_output"] = promotion.output
        info["pids"] = [process.pid for process in stack.started]
    return report, info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=Plan.requests)
    parser.add_argument("--concurrency", type=int, default=Plan.concurrency)
    parser.add_argument("--rate", type=float, default=Plan.rate, help="target requests per second")
    parser.add_argument("--seconds", type=float, default=Plan.seconds, help="wall-clock cap of the run")
    parser.add_argument("--hit-share", type=float, default=Plan.hit_share, help="share of cache-hit requests")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--samples", type=Path, default=ROOT / "var" / "samples")
    args = parser.parse_args()
    plan = Plan(requests=args.requests, concurrency=args.concurrency, rate=args.rate, seconds=args.seconds,
                hit_share=args.hit_share)
    print("preparing: sample model, INT8 variant, registration (a first run builds the sample) ...",
          file=sys.stderr)
    report, info = run(plan, samples=args.samples, workers=args.workers, threads=args.threads)
    header = (f"\nmodelhub load test — open loop, {plan.concurrency} connections, {info['note']}\n"
              f"gunicorn gthread {args.workers} workers x {args.threads} threads, serving plane, DEBUG=0, Redis, "
              f"SQLite; {os.cpu_count()} CPU(s) shared by client and server\n")
    print(render(report, header))
    if not report.promotion_ok:
        print(f"\npromotion failed:\n{info['promotion_output']}", file=sys.stderr)
    print(f"\nresult: {'FAIL' if report.failed else 'ok'}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
