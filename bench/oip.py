"""Open Inference Protocol benchmark: predict JSON against OIP JSON and OIP binary, interleaved.

    python bench/oip.py [--samples DIR] [--rounds 6] [--per-round 300]

Starts the serving stack of ``bench/_server.py`` (redis-server, SQLite, gunicorn gthread, DEBUG=0,
the quality_mlp sample's INT8 variant promoted as "mlp"), then sends one row (batch 1) over one
keep-alive connection per form at concurrency 1, in rounds: each round sends ``--per-round``
requests of every form, the order of the forms rotated from round to round, so that the host's
drift falls on all of them alike. Prints the pooled p50 / p95 per request and the median of the
per-round p50s, with server_ms (time inside the view) beside them.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import ROOT, Client, Stack, percentile  # noqa: E402 - bench/ is a folder of scripts


def _connect(port: int, token: str) -> Client:
    """A keep-alive client with TCP_NODELAY (without it http.client's small writes can stall ~40 ms)."""
    client = Client(port, token)
    client.connection.connect()
    client.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def _post(client: Client, path: str, body: bytes, headers: dict[str, str]) -> tuple[bytes, Any]:
    client.connection.request("POST", path, body=body, headers={**client.headers, **headers})
    response = client.connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path}: HTTP {response.status}: {data[:300]!r}")
    return data, response.headers


def _forms(rows: Any) -> dict[str, tuple[str, bytes, dict[str, str], Callable[[bytes, Any], float]]]:
    """(path, body, headers, server_ms of an answer) of each form, for one row."""
    import orjson

    row = rows[:1]
    predict = orjson.dumps({"inputs": {"features": row}}, option=orjson.OPT_SERIALIZE_NUMPY)
    tensor = {"name": "features", "shape": list(row.shape), "datatype": "FP32"}
    oip_json = orjson.dumps({"inputs": [{**tensor, "data": row.reshape(-1)}], "outputs": [{"name": "quality"}]},
                            option=orjson.OPT_SERIALIZE_NUMPY)
    header = orjson.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": row.nbytes}}],
                           "outputs": [{"name": "quality", "parameters": {"binary_data": True}}]})

    def oip_ms(data: bytes, headers: Any) -> float:
        length = headers.get("Inference-Header-Content-Length")
        return json.loads(data[: int(length)] if length else data)["parameters"]["server_ms"]

    return {
        "predict JSON": ("/api/v1/models/mlp/predict", predict, {}, lambda data, _: json.loads(data)["server_ms"]),
        "OIP JSON": ("/v2/models/mlp/infer", oip_json, {}, oip_ms),
        "OIP binary": ("/v2/models/mlp/infer", header + row.tobytes(),
                       {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
                       oip_ms),
    }


def measure(port: int, token: str, rows: Any, rounds: int, per_round: int) -> dict[str, dict[str, list[float]]]:
    """Per form: every request's client ms, its server ms, and each round's p50."""
    forms = _forms(rows)
    clients = {name: _connect(port, token) for name in forms}
    for name, (path, body, headers, _) in forms.items():
        for _ in range(50):
            _post(clients[name], path, body, headers)
    found: dict[str, dict[str, list[float]]] = {name: {"ms": [], "server": [], "rounds": []} for name in forms}
    names = list(forms)
    for index in range(rounds):
        for name in names[index % len(names):] + names[: index % len(names)]:
            path, body, headers, server_ms = forms[name]
            times = []
            for _ in range(per_round):
                started = time.perf_counter()
                data, answer_headers = _post(clients[name], path, body, headers)
                times.append((time.perf_counter() - started) * 1000)
                found[name]["server"].append(server_ms(data, answer_headers))
            found[name]["ms"] += times
            found[name]["rounds"].append(statistics.median(times))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=ROOT / "var" / "samples")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=300)
    args = parser.parse_args()

    import numpy as np

    with Stack(prefix="modelhub-bench-oip-") as stack:
        stack.start_redis()
        print("preparing: sample model, INT8 variant, registration ...", file=sys.stderr)
        info = stack.prepare(args.samples)
        with np.load(info["validation"]) as data:
            rows = data["features"].astype(np.float32)
        port = stack.start_gunicorn(workers=1, threads=4)
        found = measure(port, info["token"], rows, args.rounds, args.per_round)
    print(f"\nOpen Inference Protocol vs predict — quality_mlp, variant {info['variant']!r}, batch 1, c=1, "
          f"gunicorn gthread 1 worker x 4 threads, {args.rounds} interleaved rounds x {args.per_round} requests\n")
    print(f"{'form':<16}{'p50 ms':>10}{'p95 ms':>10}{'round p50s (median)':>22}{'server_ms p50':>16}")
    for name, values in found.items():
        print(f"{name:<16}{statistics.median(values['ms']):>10.3f}{percentile(values['ms'], 95):>10.3f}"
              f"{statistics.median(values['rounds']):>22.3f}{statistics.median(values['server']):>16.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
