"""Server-side batching off vs on, side by side: the INT8 quality MLP over HTTP at c=1, 8 and 32.

    python bench/batching.py [--samples DIR] [--workers 1] [--threads 48] [--max-active 32]
                             [--rounds 3] [--seconds 2] [--window-ms 2] [--max-rows 32]

One gunicorn (gthread) serving plane serves the same INT8 file under two model names: "mlp"
(batching off, the default) and "mlp-batched" (``Variant.serving_batching`` on). Every round
runs each concurrency level against both, in an order rotated from round to round, with the same
client (one keep-alive connection per thread, TCP_NODELAY, one JSON row per request). Printed per
level: p50 / p95 with their 95 % intervals (``workers.evaluation.stats``), req/s and statuses,
then on / off: the req/s ratio (median of per-round ratios, [min–max]) and the p50 speed-up
paired by round. Requests meet only inside one process and only as many as admission lets work
at once, hence one worker and ``--max-active`` ≥ the batch you hope for. On a small shared host
the client threads compete with the server for the same cores: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _closed_loop import add_arguments, closed_loop, interleaved, prepared, table  # noqa: E402 - bench/ is a folder of scripts
from _server import Client, Stack  # noqa: E402

LEVELS = (1, 8, 32)


def _mean_batch(port: int, token: str) -> float:
    """Requests per joined run so far, from the serving plane's /metrics (one worker: its own numbers)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    text = response.read().decode()
    if response.status != 200:
        print(f"/metrics answered {response.status}: {text[:200]}", file=sys.stderr)
    # Summed over the label: "mlp" and "mlp-batched" share one file, so one loaded runtime, whose
    # spec (and so the label) names the model that loaded it first.
    values: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{")[0]
        if name in ("modelhub_batch_size_count", "modelhub_batch_size_sum"):
            values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    count = values.get("modelhub_batch_size_count", 0.0)
    return values.get("modelhub_batch_size_sum", 0.0) / count if count else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, workers=1, threads=48)
    parser.add_argument("--max-active", type=int, default=32)
    parser.add_argument("--window-ms", type=int, default=2)
    parser.add_argument("--max-rows", type=int, default=32)
    args = parser.parse_args()


    stack = Stack(prefix="modelhub-bench-batching-")
    try:
        stack.start_redis()
        metrics_token = secrets.token_urlsafe(24)
        stack.env.update(MODELHUB_METRICS_TOKEN=metrics_token, MODELHUB_SERVING_MAX_ACTIVE=str(args.max_active), MODELHUB_SERVING_MAX_QUEUED="64",
                         MODELHUB_SERVING_BATCHING_WINDOW_MS=str(args.window_ms),
                         MODELHUB_SERVING_BATCHING_MAX_ROWS=str(args.max_rows))
        info, bodies = prepared(stack, args.samples)
        port = stack.start_gunicorn(workers=args.workers, threads=args.threads)
        for model in ("mlp", "mlp-batched"):
            for _ in range(args.workers * 4):
                Client(port, info["token"]).post(model, bodies[0])  # load and warm each worker's runtime

        arms = [(name, lambda c, s, model=model: closed_loop(port, info["token"], model, bodies, c, s))
                for name, model in (("batching off", "mlp"), ("batching on", "mlp-batched"))]
        runs = interleaved(arms, LEVELS, args.rounds, args.seconds)
        print(f"\nserver-side batching — quality_mlp, variant {info['variant']!r} ({info['note']})")
        print(f"gunicorn gthread {args.workers} worker(s) x {args.threads} threads, MAX_ACTIVE={args.max_active}, "
              f"window {args.window_ms} ms, max {args.max_rows} rows; {args.rounds} interleaved rounds of "
              f"{args.seconds:g} s per level and arm; {os.cpu_count()} CPU(s) shared by client and server\n")
        print("\n".join(table(runs, [name for name, _ in arms], LEVELS)))
        print(f"\nmean requests per batched run (modelhub_batch_size, all levels): {_mean_batch(port, metrics_token):.2f}")
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
