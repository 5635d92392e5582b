"""Serving benchmark: raw ONNX Runtime against the predict API over HTTP, side by side.

    python bench/serving.py [--samples DIR] [--workers 2] [--threads 4] [--requests 2000] [--seconds 15]

Starts everything it needs on loopback and stops it afterwards: a redis-server (unless REDIS_URL
is set), a temporary data directory with a fresh SQLite database, and gunicorn (gthread) with
production-like settings (DEBUG=0, SECRET_KEY / ALLOWED_HOSTS given, SECURE_SSL_REDIRECT=0).
It registers the quality_mlp sample through modelhub.services, makes an INT8 variant with
workers.passes.quantize_dynamic (the original when that pass is missing or refuses), promotes it
(forced: no optimization job runs here) under two model names — "mlp" without the response cache,
"mlp-cached" with it — and measures:

- raw ONNX Runtime p50 of the promoted file in this process (batch 1, 1 intra-op thread);
- API p50 / p95 / p99 at concurrency 1 over one HTTP keep-alive connection (http.client),
  with server_ms (time inside the view) and GET /healthz p50 (the floor: HTTP, gunicorn, Django
  middleware and the client, with no view work) beside it;
- the same POSTs to a bare WSGI app (bench/_bare.py) under the same gunicorn settings: what
  HTTP, gunicorn and the client cost on this host right now, so that modelhub's own share
  (API − bare − raw) can be read apart from the host's noise;
- API requests/s at concurrency 8 (8 keep-alive connections) on cache misses (every body new)
  and on cache hits (the same 8 bodies again).

Targets: API p50 − raw p50 ≤ 1.0 ms; cache-hit req/s ≥ 3 × cache-miss req/s. The client runs on
the same machine as the server, so on a small host the two share its cores.
Bounded: request counts and a time cap per phase; every process started here is stopped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import ROOT, Client, Stack, percentile  # noqa: E402 - bench/ is a folder of scripts

# --- measurements ----------------------------------------------------------------------------------


def raw_p50(artifact: Path, row: Any, count: int) -> float:
    """Median ms of one batch-1 run of the file in this process, on a session made as serving makes it."""
    from workers import ort

    session = ort.session(artifact, threads=1, inter_threads=1)
    feeds = {session.get_inputs()[0].name: row}
    for _ in range(50):
        session.run(None, feeds)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def latency(port: int, token: str, bodies: list[bytes], count: int, cap_s: float) -> dict[str, float]:
    client = Client(port, token)
    for body in bodies[:50]:
        client.post("mlp", body)
    times, server = [], []
    deadline = time.monotonic() + cap_s
    for i in range(count):
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        answer = client.post("mlp", bodies[i % len(bodies)])
        times.append((time.perf_counter() - started) * 1000)
        server.append(answer["server_ms"])
    return {"p50": statistics.median(times), "p95": percentile(times, 95), "p99": percentile(times, 99),
            "server_p50": statistics.median(server), "n": len(times)}


def bare_p50(port: int, bodies: list[bytes], count: int) -> float:
    """p50 of the same POSTs to a bare WSGI app under the same gunicorn: the host's HTTP floor right now."""
    client = Client(port, "")
    for body in bodies[:50]:
        client.send("mlp", body)
    times = []
    for i in range(count):
        started = time.perf_counter()
        client.send("mlp", bodies[i % len(bodies)])
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def floor_p50(port: int, count: int) -> float:
    """p50 of GET /healthz over keep-alive: what HTTP + gunicorn + Django cost before any view work."""
    client = Client(port, "")
    for _ in range(50):
        client.get("/healthz")
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.get("/healthz")
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def throughput(port: int, token: str, bodies_per_thread: list[list[bytes]], cap_s: float,
               expect_cached: bool, model: str = "mlp-cached") -> tuple[float, int, int]:
    """(requests/s, requests, answers whose "cached" flag was not the expected one) of one client
    thread per body list, each on its own keep-alive connection, posting to ``model``."""
    counts = [0] * len(bodies_per_thread)
    wrong = [0] * len(bodies_per_thread)
    errors: list[str] = []
    start = threading.Barrier(len(bodies_per_thread) + 1)
    deadline = [0.0]

    def run(index: int) -> None:
        client = Client(port, token)
        start.wait()
        try:
            for body in bodies_per_thread[index]:
                if time.monotonic() > deadline[0]:
                    break
                answer = client.post(model, body)
                counts[index] += 1
                wrong[index] += answer["cached"] != expect_cached
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies_per_thread))]
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + cap_s
    started = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join(timeout=cap_s + 30)
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} client thread(s) failed: {errors[0]}")
    return sum(counts) / elapsed, sum(counts), sum(wrong)


# --- orchestration ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=ROOT / "var" / "samples")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--requests", type=int, default=2000, help="requests of the concurrency-1 phase")
    parser.add_argument("--per-thread", type=int, default=1500, help="cap of requests per client thread at c=8")
    parser.add_argument("--seconds", type=float, default=15.0, help="time cap of each phase")
    args = parser.parse_args()

    import numpy as np
    import orjson

    stack = Stack(prefix="modelhub-bench-serving-")
    try:
        stack.start_redis()
        print("preparing: sample model, INT8 variant, registration (a first run builds the sample) ...",
              file=sys.stderr)
        try:
            info = stack.prepare(args.samples)
        except RuntimeError as exc:
            print(str(exc)[-3000:], file=sys.stderr)
            return 1

        with np.load(info["validation"]) as data:
            rows = data["features"].astype(np.float32)
        raw = raw_p50(Path(info["artifact"]), rows[:1], args.requests)

        port = stack.start_gunicorn(workers=args.workers, threads=args.threads)
        for _ in range(args.workers * 4):  # each worker loads its runtime on its first request
            Client(port, info["token"]).post("mlp", orjson.dumps({"inputs": {"features": rows[:1]}},
                                                                 option=orjson.OPT_SERIALIZE_NUMPY))

        bodies = [orjson.dumps({"inputs": {"features": rows[i:i + 1]}}, option=orjson.OPT_SERIALIZE_NUMPY)
                  for i in range(len(rows))]
        lat = latency(port, info["token"], bodies, args.requests, args.seconds)
        floor = floor_p50(port, min(args.requests, 1000))
        bare = bare_p50(stack.start_gunicorn(workers=args.workers, threads=args.threads, app="_bare:application"),
                        bodies, min(args.requests, 1000))

        rng = np.random.default_rng(1)
        fresh = [[orjson.dumps({"inputs": {"features": rng.random((1, rows.shape[1]), dtype=np.float32)}},
                               option=orjson.OPT_SERIALIZE_NUMPY) for _ in range(args.per_thread)] for _ in range(8)]
        off_rps, off_n, _ = throughput(port, info["token"], fresh, args.seconds, expect_cached=False, model="mlp")
        miss_rps, miss_n, miss_wrong = throughput(port, info["token"], fresh, args.seconds, expect_cached=False)
        repeated = [[bodies[t]] * args.per_thread for t in range(8)]
        for t in range(8):
            Client(port, info["token"]).post("mlp-cached", bodies[t])  # fill the cache
        hit_rps, hit_n, hit_wrong = throughput(port, info["token"], repeated, args.seconds, expect_cached=True)

        overhead = lat["p50"] - raw
        print(f"\nmodelhub serving benchmark — quality_mlp, variant {info['variant']!r} ({info['note']})")
        print(f"gunicorn gthread {args.workers} workers x {args.threads} threads, serving plane, DEBUG=0, Redis, SQLite; "
              f"{os.cpu_count()} CPU(s) shared by client and server; client: http.client keep-alive, TCP_NODELAY")
        print(f"bodies: one JSON row of {rows.shape[1]} float32 ({len(bodies[0])} bytes); c=1 phases post to 'mlp' "
              "(cache off); c=8 phases post fresh rows (cache off: 'mlp'; cache on, all misses: 'mlp-cached') "
              "and 8 repeated rows (cache on, all hits)\n")
        print(f"{'measure':<44}{'value':>12}")
        table = [
            ("raw ONNX Runtime p50, in-process (ms)", f"{raw:.3f}"),
            (f"API p50, concurrency 1 (ms, n={lat['n']})", f"{lat['p50']:.3f}"),
            ("API p95, concurrency 1 (ms)", f"{lat['p95']:.3f}"),
            ("API p99, concurrency 1 (ms)", f"{lat['p99']:.3f}"),
            ("  server_ms p50 (inside the view)", f"{lat['server_p50']:.3f}"),
            ("  GET /healthz p50 (HTTP + Django floor, ms)", f"{floor:.3f}"),
            ("  bare WSGI app p50, same POSTs (host floor)", f"{bare:.3f}"),
            ("API p50 - raw p50 (ms)  [target <= 1.0]", f"{overhead:.3f}"),
            ("  of which modelhub's own (API - bare - raw)", f"{overhead - bare:.3f}"),
            (f"req/s, c=8, cache off (n={off_n})", f"{off_rps:.0f}"),
            (f"req/s, c=8, cache on, miss (n={miss_n})", f"{miss_rps:.0f}"),
            (f"req/s, c=8, cache on, hit (n={hit_n})", f"{hit_rps:.0f}"),
            ("hit / miss  [target >= 3.0]", f"{hit_rps / miss_rps:.2f}"),
        ]
        for name, value in table:
            print(f"{name:<44}{value:>12}")
        if miss_wrong or hit_wrong:
            print(f"\nwarning: {miss_wrong} miss-phase answers were cached, {hit_wrong} hit-phase answers were not")
        print(f"\noverhead target {'met' if overhead <= 1.0 else 'NOT met'}; "
              f"cache target {'met' if hit_rps >= 3 * miss_rps else 'NOT met'}")
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
