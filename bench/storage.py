"""Storage benchmark: a serving node's cold start from a bucket, and the node cache's hit path
against the local disk, side by side in one run.

    python bench/storage.py [--samples DIR] [--starts 3] [--rounds 30] [--calls 10]

Starts what it needs on loopback and stops it afterwards: moto's standalone S3-protocol server
(``python -m moto.server``), a redis-server, a temporary registry (SQLite) prepared by
bench/_server.py's setup with every byte in the bucket, and gunicorn serving processes.

- cold start: a serving process on an empty data directory (empty cache) → its first answer,
  against a process started the same way on a directory whose cache is already filled (the
  difference is the fetch from the bucket and its sha256 check), alternating, ``--starts`` each;
- cache hit: ``artifacts.read_verified`` of the promoted model (the bytes serving loads, hashed as
  read) from the local disk (FileSystemStorage) and from a warm node cache over the bucket, in
  interleaved rounds (order alternating), compared with workers/evaluation/stats.py: p50 with its
  95 % interval and the paired ratio. Goal: "same speed (within noise)".
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import ROOT, Client, Stack, free_port, wait_for  # noqa: E402 - bench/ is a folder of scripts

BUCKET = "modelhub-bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def start_s3(stack: Stack) -> str:
    """moto's S3 server on a loopback port (stopped with the stack), with the bucket; its endpoint."""
    port = free_port()
    stack.started.append(subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_for(port)
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint, **_boto(CREDENTIALS)).create_bucket(Bucket=BUCKET)
    return endpoint


def _boto(env: dict[str, str]) -> dict[str, str]:
    return {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
            "region_name": env["AWS_DEFAULT_REGION"]}


def first_answer_s(stack: Stack, data: Path, token: str, body: bytes, timeout: float = 120) -> float:
    """Seconds from starting a serving process on ``data`` to its first 200 answer."""
    port = free_port()
    env = {**stack.env, "MODELHUB_PLANE": "serving", "MODELHUB_DATA_DIR": str(data),
           "DATABASE_URL": f"sqlite:///{stack.tmp / 'modelhub.sqlite3'}"}
    started = time.perf_counter()
    process = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "modelhub.wsgi:application", "--bind",
                                f"127.0.0.1:{port}", "--workers", "1", "--threads", "2", "--worker-class", "gthread"],
                               env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(port, timeout)
        client = Client(port, token)
        while True:
            status, _, reply = client.send("mlp", body)
            if status == 200:
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"no answer after {timeout} s: HTTP {status} {reply[:300]!r}")
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=20)


def cold_starts(stack: Stack, info: dict[str, Any], starts: int) -> dict[str, list[float]]:
    """Alternate: an empty node (fresh directory) and a node whose cache the previous start filled."""
    import numpy as np
    import orjson

    with np.load(info["validation"]) as data:
        body = orjson.dumps({"inputs": {"features": data["features"][:1].astype(np.float32)}},
                            option=orjson.OPT_SERIALIZE_NUMPY)
    times: dict[str, list[float]] = {"empty cache": [], "warm cache": []}
    for attempt in range(starts):
        node = Path(tempfile.mkdtemp(prefix=f"node-{attempt}-", dir=stack.tmp))
        times["empty cache"].append(first_answer_s(stack, node, info["token"], body))
        times["warm cache"].append(first_answer_s(stack, node, info["token"], body))
    return times


def hit_rounds(stack: Stack, endpoint: str, info: dict[str, Any], rounds: int, calls: int) -> dict[str, list[list[float]]]:
    """Interleaved rounds of read_verified: local disk against a warm node cache over the bucket (ms)."""
    os.environ.update(stack.env, DJANGO_SETTINGS_MODULE="modelhub.settings", MODELHUB_DATA_DIR=str(stack.tmp / "hits"))
    for name in ("MODELHUB_STORAGE_URL", "MODELHUB_S3_ENDPOINT_URL"):
        os.environ.pop(name, None)
    import django

    django.setup()
    from django.test import override_settings

    from modelhub import artifacts
    from modelhub.env import storage_from_url

    remote = storage_from_url(f"s3://{BUCKET}/bench", endpoint_url=endpoint, region="us-east-1")
    artifact = Path(info["artifact"])  # the setup's cached copy: its path below entries/ is its key
    key = artifact.relative_to(stack.tmp / "cache" / "entries").as_posix()
    local_dir = stack.tmp / "hits" / "local"
    (local_dir / key).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(artifact, local_dir / key)
    local = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(local_dir)}}
    sides = {"local disk": local, "node cache": remote}
    out: dict[str, list[list[float]]] = {name: [] for name in sides}
    for index in range(rounds + 1):  # round 0 warms both (and fills the cache); it is not kept
        order = list(sides) if index % 2 else list(sides)[::-1]
        for name in order:
            with override_settings(STORAGES={"default": sides[name]}):
                times = []
                for _ in range(calls):
                    started = time.perf_counter()
                    artifacts.read_verified(key, info["sha256"])
                    times.append((time.perf_counter() - started) * 1000)
            if index:
                out[name].append(times)
    return out


def report(starts: dict[str, list[float]], hits: dict[str, list[list[float]]]) -> None:
    """Print the cold-start medians and the hit-path statistics."""
    from workers.evaluation import stats

    print("cold start (process start → first answer), median of", len(starts["empty cache"]), "starts each:")
    for name, values in starts.items():
        print(f"  {name:12s} {statistics.median(values):6.2f} s   (all: {', '.join(f'{v:.2f}' for v in values)})")
    fetch = statistics.median(a - b for a, b in zip(starts["empty cache"], starts["warm cache"], strict=True))
    print(f"  fetch from the bucket + sha256 check on a cold node: {fetch:+.2f} s (median of paired differences)")
    print("cache-hit path (artifacts.read_verified of the promoted model, bytes hashed as read):")
    for name, rounds in hits.items():
        print(f"  {name:12s} {stats.describe(stats.estimate(rounds, 'p50'))}")
    ratio = stats.speedup(hits["local disk"], hits["node cache"], "p50")
    print(f"  node cache vs local disk: {ratio.value:.3f}x [{ratio.low:.3f}, {ratio.high:.3f}] → {stats.claim(ratio)}")


def main() -> None:
    """Run both measurements on one freshly prepared stack."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=ROOT / "var" / "bench-samples")
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    with Stack(prefix="modelhub-bench-storage-") as stack:
        endpoint = start_s3(stack)
        stack.env.update(CREDENTIALS, MODELHUB_STORAGE_URL=f"s3://{BUCKET}/bench", MODELHUB_S3_ENDPOINT_URL=endpoint)
        info = stack.prepare(args.samples)  # before Redis: the setup's intake then runs in its own process
        stack.start_redis()
        from workers import formats

        info["sha256"] = formats.sha256_file(Path(info["artifact"]))
        starts = cold_starts(stack, info, args.starts)
        hits = hit_rounds(stack, endpoint, info, args.rounds, args.calls)
        report(starts, hits)


if __name__ == "__main__":
    main()
