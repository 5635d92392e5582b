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
- API requests/s at concurrency 8 (8 keep-alive connections) on cache misses (every body new)
  and on cache hits (the same 8 bodies again).

Targets: API p50 − raw p50 ≤ 1.0 ms; cache-hit req/s ≥ 3 × cache-miss req/s. The client runs on
the same machine as the server, so on a small host the two share its cores.
Bounded: request counts and a time cap per phase; every process started here is stopped.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# --- setup, run in a child process with the server's settings ------------------------------------


def setup(samples: Path) -> dict[str, Any]:
    """Register quality_mlp twice ("mlp", "mlp-cached"), promote an INT8 variant, make a token."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelhub.settings")
    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from modelhub.celery import app

    app.conf.task_always_eager = True  # intake runs here: there is no worker in this benchmark
    call_command("migrate", verbosity=0)
    from workers.samples import build_sample

    sample = build_sample("quality_mlp", samples)
    admin = User.objects.create_superuser("bench", password=secrets.token_urlsafe(16))
    int8, note = _int8(sample.onnx, Path(os.environ["MODELHUB_DATA_DIR"]) / "int8")
    out: dict[str, Any] = {"note": note, "validation": str(sample.validation)}
    models = []
    for name, cached in (("mlp", False), ("mlp-cached", True)):
        variant = _register(name, sample.onnx, int8, admin)
        models.append(variant.version.model)
        if cached:
            from predictions import cache

            cache.config_set(model=variant.version.model, cache_responses=True, cache_ttl_s=600)
        out["variant"], out["artifact"] = variant.name, str(_local(variant))
    from predictions import auth

    out["token"] = auth.token_create(name="bench", models=models, by=admin, rate_limit_per_minute=0)[1]
    return out


def _int8(onnx_path: Path, dst: Path) -> tuple[Path | None, str]:
    try:
        from workers.passes import quantize_dynamic
    except ImportError as exc:
        return None, f"quantize_dynamic unavailable ({exc}); the original is served"
    try:
        result = quantize_dynamic.run(onnx_path, dst, quantize_dynamic.Config())
    except Exception as exc:  # noqa: BLE001 - a bench reports what it could not do and goes on
        return None, f"quantize_dynamic failed ({exc}); the original is served"
    return Path(result.artifact), "INT8 variant from quantize_dynamic"


def _register(name: str, onnx_path: Path, int8: Path | None, admin: Any) -> Any:
    import io

    from modelhub import artifacts, services
    from modelhub.models import Variant
    from workers import formats

    model = services.model_create(name=name, owner=admin)
    version, _ = services.version_upload(model=model, stream=io.BytesIO(onnx_path.read_bytes()),
                                         filename="model.onnx", user=admin)
    version.refresh_from_db()
    original = version.variants.get(name=Variant.ORIGINAL)
    variant = original
    if int8 is not None:
        sha = formats.sha256_file(int8)
        key = artifacts.save_file(int8, f"variants/{sha}/model.onnx")
        size = int8.stat().st_size
        variant = Variant.objects.create(
            version=version, name="int8", parent=original, pass_name="quantize_dynamic", config={},
            config_hash=sha[:16], storage_key=key, sha256=sha, size_bytes=size,
            files=[{"path": "model.onnx", "key": key, "sha256": sha, "size": size}])
    services.deployment_promote(model=model, variant=variant, by=admin, force=True,
                                reason="bench/serving.py: no optimization job in this benchmark")
    return variant


def _local(variant: Any) -> Path:
    from modelhub import artifacts

    return artifacts.local_path(variant.storage_key)


# --- measurements ----------------------------------------------------------------------------------


def raw_p50(artifact: Path, row: Any, count: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(artifact), sess_options=options, providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: row}
    for _ in range(50):
        session.run(None, feeds)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


class Client:
    """One keep-alive HTTP connection posting prepared bodies."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def get(self, path: str) -> None:
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        response.read()

    def post(self, model: str, body: bytes) -> dict[str, Any]:
        self.connection.request("POST", f"/api/v1/models/{model}/predict", body=body, headers=self.headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
        return json.loads(data)


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
    return {"p50": statistics.median(times), "p95": _percentile(times, 95), "p99": _percentile(times, 99),
            "server_p50": statistics.median(server), "n": len(times)}


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
               expect_cached: bool) -> tuple[float, int, int]:
    """(requests/s, requests, answers whose "cached" flag was not the expected one)."""
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
                answer = client.post("mlp-cached", body)
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
    parser.add_argument("--setup", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup is not None:  # the child that prepares the database
        print(json.dumps(setup(args.setup)))
        return 0

    import numpy as np
    import orjson

    started: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix="modelhub-bench-serving-"))
    try:
        env = {**os.environ, "DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(60), "ALLOWED_HOSTS": "127.0.0.1",
               "SECURE_SSL_REDIRECT": "0", "MODELHUB_DATA_DIR": str(tmp), "LOG_LEVEL": "WARNING",
               "PYTHONPATH": str(ROOT)}
        env.pop("DATABASE_URL", None)
        if not env.get("REDIS_URL"):
            redis_port = _free_port()
            started.append(subprocess.Popen(
                [shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            _wait_for(redis_port)
            env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        args.samples.mkdir(parents=True, exist_ok=True)
        print("preparing: sample model, INT8 variant, registration (a first run builds the sample) ...",
              file=sys.stderr)
        prepared = subprocess.run([sys.executable, __file__, "--setup", str(args.samples)], env=env, cwd=ROOT,
                                  capture_output=True, text=True, timeout=900)
        if prepared.returncode != 0:
            print(prepared.stderr[-3000:], file=sys.stderr)
            return 1
        info = json.loads(prepared.stdout.strip().splitlines()[-1])

        with np.load(info["validation"]) as data:
            rows = data["features"].astype(np.float32)
        raw = raw_p50(Path(info["artifact"]), rows[:1], args.requests)

        port = _free_port()
        started.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "modelhub.wsgi:application", "--bind", f"127.0.0.1:{port}",
             "--workers", str(args.workers), "--threads", str(args.threads), "--worker-class", "gthread",
             "--keep-alive", "30", "--log-level", "warning"],
            env={**env, "MODELHUB_PLANE": "serving"}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(tmp / "gunicorn.log").open("wb")))
        _wait_for(port)
        for _ in range(args.workers * 4):  # each worker loads its runtime on its first request
            Client(port, info["token"]).post("mlp", orjson.dumps({"inputs": {"features": rows[:1]}},
                                                                 option=orjson.OPT_SERIALIZE_NUMPY))

        bodies = [orjson.dumps({"inputs": {"features": rows[i:i + 1]}}, option=orjson.OPT_SERIALIZE_NUMPY)
                  for i in range(len(rows))]
        lat = latency(port, info["token"], bodies, args.requests, args.seconds)
        floor = floor_p50(port, min(args.requests, 1000))

        rng = np.random.default_rng(1)
        fresh = [[orjson.dumps({"inputs": {"features": rng.random((1, rows.shape[1]), dtype=np.float32)}},
                               option=orjson.OPT_SERIALIZE_NUMPY) for _ in range(args.per_thread)] for _ in range(8)]
        miss_rps, miss_n, miss_wrong = throughput(port, info["token"], fresh, args.seconds, expect_cached=False)
        repeated = [[bodies[t]] * args.per_thread for t in range(8)]
        for t in range(8):
            Client(port, info["token"]).post("mlp-cached", bodies[t])  # fill the cache
        hit_rps, hit_n, hit_wrong = throughput(port, info["token"], repeated, args.seconds, expect_cached=True)

        overhead = lat["p50"] - raw
        print(f"\nmodelhub serving benchmark — quality_mlp, variant {info['variant']!r} ({info['note']})")
        print(f"gunicorn gthread {args.workers} workers x {args.threads} threads, serving plane, DEBUG=0, Redis, SQLite; "
              f"{os.cpu_count()} CPU(s) shared by client and server\n")
        print(f"{'measure':<44}{'value':>12}")
        table = [
            ("raw ONNX Runtime p50, in-process (ms)", f"{raw:.3f}"),
            (f"API p50, concurrency 1 (ms, n={lat['n']})", f"{lat['p50']:.3f}"),
            ("API p95, concurrency 1 (ms)", f"{lat['p95']:.3f}"),
            ("API p99, concurrency 1 (ms)", f"{lat['p99']:.3f}"),
            ("  server_ms p50 (inside the view)", f"{lat['server_p50']:.3f}"),
            ("  GET /healthz p50 (HTTP + Django floor, ms)", f"{floor:.3f}"),
            ("API p50 - raw p50 (ms)  [target <= 1.0]", f"{overhead:.3f}"),
            (f"req/s, concurrency 8, cache miss (n={miss_n})", f"{miss_rps:.0f}"),
            (f"req/s, concurrency 8, cache hit (n={hit_n})", f"{hit_rps:.0f}"),
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
        for process in reversed(started):
            if process.poll() is None:
                process.terminate()  # gunicorn's master stops its workers on SIGTERM
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
