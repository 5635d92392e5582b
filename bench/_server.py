"""A modelhub serving stack on loopback, shared by the serving and load benchmarks.

    python bench/_server.py SAMPLES_DIR    (the setup child: prints one JSON line)

``Stack`` starts a redis-server, prepares a temporary data directory with a fresh SQLite database,
or the empty database it is given (the quality_mlp sample registered as "mlp" without the response
cache and "mlp-cached" with it, an INT8 variant promoted on both, a predict token), starts
gunicorn (gthread) with production-like settings (DEBUG=0, SECRET_KEY / ALLOWED_HOSTS given,
SECURE_SSL_REDIRECT=0), runs ``manage.py`` commands in the same environment, and stops every
process it started.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int, timeout: float = 30.0) -> None:
    """Return once something accepts connections on 127.0.0.1:``port``; raise after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# --- setup, run in a child process with the server's settings ------------------------------------

_HELD: list[Any] = []  # context managers kept open for the life of the setup child


def setup(samples: Path) -> dict[str, Any]:
    """Register quality_mlp three times ("mlp", "mlp-cached", "mlp-batched" with batching on), promote an INT8 variant, make a token."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelhub.settings")
    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from modelhub import queue

    # intake runs here: there is no worker in this benchmark. The block is held open on purpose (a
    # context manager that is garbage-collected at once would close and switch eager back off).
    _HELD.append(queue.eager())
    _HELD[-1].__enter__()
    call_command("migrate", verbosity=0)
    from workers.samples import build_sample

    sample = build_sample("quality_mlp", samples)
    admin = User.objects.create_superuser("bench", password=secrets.token_urlsafe(16))
    int8, note = _int8(sample.onnx, Path(os.environ["MODELHUB_DATA_DIR"]) / "int8")
    out: dict[str, Any] = {"note": note, "validation": str(sample.validation), "admin": admin.username}
    models = []
    for name, cached in (("mlp", False), ("mlp-cached", True), ("mlp-batched", False)):
        variant = _register(name, sample.onnx, int8, admin)
        if name == "mlp-batched":  # bench/batching.py: forced on here, no benchmark judges it
            from modelhub.models import Variant

            Variant.objects.filter(pk=variant.pk).update(serving_batching=True)
        models.append(variant.version.model)
        if cached:
            from predictions import services

            services.config_set(model=variant.version.model, cache_responses=True, cache_ttl_s=600)
        out["variant"], out["artifact"] = variant.name, str(_local(variant))
    from predictions import services

    out["token"] = services.token_create(name="bench", models=models, by=admin, rate_limit_per_minute=0)[1]
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
                                reason="bench: no optimization job in this benchmark")
    return variant


def _local(variant: Any) -> Path:
    from modelhub import artifacts

    return artifacts.local_path(variant.storage_key, variant.sha256)


# --- client ----------------------------------------------------------------------------------------


class NoDelayConnection(http.client.HTTPConnection):
    """An HTTP connection with TCP_NODELAY on every socket it opens (reconnects included).

    http.client sends the headers and the body in separate writes: without TCP_NODELAY, Nagle's
    algorithm holds the body until the server's delayed ACK, and some requests stall ~40 ms.
    """

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Client:
    """One keep-alive HTTP connection posting prepared bodies."""

    def __init__(self, port: int, token: str, timeout: float = 30.0) -> None:
        self.connection = NoDelayConnection("127.0.0.1", port, timeout=timeout)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def get(self, path: str) -> None:
        """GET ``path`` and drop the answer."""
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        response.read()

    def send(self, model: str, body: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
        """POST ``body`` to the model's predict route; (status, headers, body) whatever the status."""
        self.connection.request("POST", f"/api/v1/models/{model}/predict", body=body, headers=self.headers)
        response = self.connection.getresponse()
        return response.status, response.headers, response.read()

    def post(self, model: str, body: bytes) -> dict[str, Any]:
        """POST ``body`` and return the decoded answer; raise on any status but 200."""
        status, _, data = self.send(model, body)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:300]!r}")
        return json.loads(data)

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        self.connection.close()


# --- the stack -------------------------------------------------------------------------------------


class Stack:
    """redis-server, a prepared database and gunicorn on loopback; ``stop`` ends all of them."""

    def __init__(self, prefix: str = "modelhub-bench-", database_url: str | None = None) -> None:
        """``database_url``: an empty database to prepare and serve from (default: a fresh SQLite file)."""
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.started: list[subprocess.Popen] = []
        self.env = {**os.environ, "DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(60),
                    "ALLOWED_HOSTS": "127.0.0.1", "SECURE_SSL_REDIRECT": "0", "MODELHUB_DATA_DIR": str(self.tmp),
                    "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
        self.env.pop("DATABASE_URL", None)
        if database_url:
            self.env["DATABASE_URL"] = database_url

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def start_redis(self, *, reuse_env: bool = True) -> str:
        """Start a private redis-server unless ``reuse_env`` and REDIS_URL is set; return its URL."""
        if reuse_env and self.env.get("REDIS_URL"):
            return self.env["REDIS_URL"]
        port = free_port()
        self.started.append(subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(port)
        self.env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        return self.env["REDIS_URL"]

    def prepare(self, samples: Path, timeout: float = 900) -> dict[str, Any]:
        """Run ``setup`` in a child with the server's environment; its JSON answer."""
        samples.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(samples)], env=self.env,
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"setup failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def start_gunicorn(self, *, workers: int, threads: int, plane: str = "serving",
                       app: str = "modelhub.wsgi:application") -> int:
        """Start gunicorn (gthread) serving ``app`` (modelhub for ``plane`` by default); the port it listens on."""
        port = free_port()
        extra = [] if app.startswith("modelhub.") else ["--pythonpath", str(ROOT / "bench")]
        log = (self.tmp / f"gunicorn-{port}.log").open("wb")
        self.started.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), app, *extra, "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads), "--worker-class",
             "gthread", "--keep-alive", "30", "--log-level", "warning"],
            env={**self.env, "MODELHUB_PLANE": plane}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log))
        log.close()  # the child holds its own descriptor
        wait_for(port)
        return port

    def start_granian(self, *, workers: int, threads: int, plane: str = "serving",
                      app: str = "modelhub.wsgi:application") -> int:
        """Start granian (WSGI interface, ``threads`` blocking threads per worker, failed workers
        respawned) serving ``app``; the port it listens on."""
        port = free_port()
        log = (self.tmp / f"granian-{port}.log").open("wb")
        self.started.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port",
             str(port), "--workers", str(workers), "--blocking-threads", str(threads), "--respawn-failed-workers",
             "--respawn-interval", "0.5", "--log-level", "warning", "--no-ws", app],
            env={**self.env, "MODELHUB_PLANE": plane}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log))
        log.close()
        wait_for(port)
        return port

    def manage_shell(self, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``manage.py shell -c code`` with the server's environment."""
        return subprocess.run([sys.executable, str(ROOT / "manage.py"), "shell", "-c", code], env=self.env,
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        """Stop every process started here, newest first, and remove the data directory."""
        for process in reversed(self.started):
            if process.poll() is None:
                process.terminate()  # gunicorn's master stops its workers on SIGTERM
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        self.started.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(setup(Path(sys.argv[1]))))
