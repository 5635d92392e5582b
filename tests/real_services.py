"""Real services for tests: a private redis-server, a private PostgreSQL server, a private S3-protocol server (moto), loopback ports, the
test database as a URL, a switch of this process's Celery broker, and a real `celery worker` process.

Shared by the whole suite (fixtures live in the conftest files); nothing here is a fake.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUEUES = ("optimize", "benchmark", "default")
BENCH = ROOT / "bench"


def bench_module(script: str) -> ModuleType:
    """Import a bench/ script (bench/ is a folder of scripts, not a package) as ``bench_<script>``."""
    spec = importlib.util.spec_from_file_location(f"bench_{script}", BENCH / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


_NET = bench_module("_server")  # the bench scripts' stack already has the loopback port helpers
free_port = _NET.free_port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Return once something accepts connections on 127.0.0.1:port; fail after ``timeout`` s."""
    _NET.wait_for(port, timeout)


def require(found: bool, what: str) -> None:
    """Skip a test whose service is not installed here; in CI (CI set), where it must be, fail instead."""
    if not found:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"needs {what}")


def database_url() -> str:
    """The test database as a URL a worker process can open."""
    from django.db import connection

    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    host, port = params["HOST"] or "127.0.0.1", params["PORT"] or 5432
    return f"postgres://{params['USER']}:{params['PASSWORD']}@{host}:{port}/{params['NAME']}"


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (a worker's pool children)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(line) for line in out.split()]


class ServerProcess:
    """A server process a test starts and stops (``process`` is None while it is stopped)."""

    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


class RedisServer(ServerProcess):
    """A redis-server of this test only (loopback, no persistence) that the test may stop and restart."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        require(binary is not None, "redis-server")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def queued(self, queue: str | None = None) -> int:
        """Messages waiting in one queue (or in all of modelhub's queues)."""
        client = self.client()
        return sum(client.llen(name) for name in ([queue] if queue else QUEUES))


class PostgresServer:
    """A PostgreSQL 15 cluster of this test only: loopback, trust authentication, its own data directory.

    ``start`` / ``stop`` / ``restart`` act on this cluster alone (never on a shared one). initdb
    refuses to run as root, so under root the server runs as the ``postgres`` user, in a temporary
    directory that user owns. fsync is off for speed: a stop, even ``immediate``, ends the server's
    processes, not the machine, so a committed transaction's WAL, written at commit, is still in the
    OS's cache and replayed at the next start (synchronous_commit stays on: without it, the last
    commits before a crash are lost by design).
    """

    BIN = Path("/usr/lib/postgresql/15/bin")
    USER = "modelhub"
    DATABASE = "modelhub"

    def __init__(self) -> None:
        require(all((self.BIN / name).is_file() for name in ("initdb", "pg_ctl", "createdb", "postgres")),
                f"the PostgreSQL 15 server binaries (initdb, pg_ctl, postgres) in {self.BIN}")
        self.owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="modelhub-pg-"))
        if self.owner is not None:
            os.chown(self.root, self.owner.pw_uid, self.owner.pw_gid)
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = free_port()
        self.url = f"postgres://{self.USER}@127.0.0.1:{self.port}/{self.DATABASE}"
        self._initialized = False

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.BIN / args[0]), *args[1:]]
        if self.owner is not None:
            command = ["runuser", "-u", self.owner.pw_name, "--", *command]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}\n{tail}")

    def _initialize(self) -> None:
        self._run("initdb", "-D", str(self.data), "--auth=trust", f"--username={self.USER}", "--encoding=UTF8",
                  "--locale=C", "--no-sync", timeout=120)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                       "fsync = off\nfull_page_writes = off\nmax_connections = 50\n")

    def start(self) -> None:
        """Start the server (the first time: create the cluster and its database); return once it accepts."""
        if not self._initialized:
            self._initialize()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start", timeout=90)
        if not self._initialized:
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.USER, self.DATABASE)
            self._initialized = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends sessions cleanly, ``immediate`` kills them as a crash would."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", timeout=90)

    def restart(self, mode: str = "fast") -> None:
        """Stop the server (see ``stop``) and start it again on the same port and data."""
        self.stop(mode)
        self.start()

    def close(self) -> None:
        """Stop the server and remove its files."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class S3Server(ServerProcess):
    """moto's standalone S3-protocol server (``python -m moto.server``, an HTTP server speaking the
    S3 REST protocol, buckets in its memory) of this test only, on a loopback port, with one bucket.

    ``stop`` loses the bucket's objects (moto keeps them in memory): to make the bucket unreachable
    while keeping its objects, point a process at ``dead_endpoint`` (a loopback port nobody listens on).
    """

    BUCKET = "modelhub-test"
    KEY, SECRET, REGION = "test-access-key", "test-secret-key", "us-east-1"

    def __init__(self, workdir: Path) -> None:
        require(importlib.util.find_spec("moto") is not None, "moto[server] (pip install -r requirements.txt)")
        self.workdir, self.port = workdir, free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.dead_endpoint = f"http://127.0.0.1:{free_port()}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and create the bucket; return once it answers."""
        with (self.workdir / "s3.log").open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                            stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, timeout=30)
        self.client().create_bucket(Bucket=self.BUCKET)

    def client(self) -> Any:
        """A boto3 S3 client of this server, for the test's own reads and damage."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.KEY,
                            aws_secret_access_key=self.SECRET, region_name=self.REGION)

    def env(self, prefix: str, *, endpoint: str | None = None) -> dict[str, str]:
        """The environment that points a modelhub process at ``s3://bucket/prefix`` on this server."""
        return {"MODELHUB_STORAGE_URL": f"s3://{self.BUCKET}/{prefix}", "MODELHUB_S3_ENDPOINT_URL": endpoint or self.endpoint,
                "AWS_ACCESS_KEY_ID": self.KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET, "AWS_DEFAULT_REGION": self.REGION}

    def storage(self, prefix: str, *, endpoint: str | None = None) -> dict[str, Any]:
        """The STORAGES["default"] entry of the same (for this process's settings)."""
        from modelhub.env import storage_from_url

        entry = storage_from_url(f"s3://{self.BUCKET}/{prefix}", endpoint_url=endpoint or self.endpoint,
                                 region=self.REGION)
        entry["OPTIONS"].update(access_key=self.KEY, secret_key=self.SECRET)
        return entry

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under ``prefix``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.BUCKET, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Send this process's tasks to ``url`` instead of running them eagerly."""
    from modelhub import queue
    from modelhub.celery import app

    previous = app.conf.broker_url
    app.conf.broker_url = url
    _forget_connections(app)
    try:
        with queue.eager(False):
            yield
    finally:
        app.conf.broker_url = previous
        _forget_connections(app)


def _forget_connections(app: Any) -> None:
    """Drop pooled connections to the previous broker: app.close() keeps the producer pool."""
    app.close()
    app.amqp._producer_pool = None


@contextmanager
def running_worker(redis_url: str, data: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery worker` (prefork, one child) on every queue, with extra environment variables."""
    full = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url(), "DEBUG": "1",
            "MODELHUB_DATA_DIR": str(data), "MODELHUB_BENCH_BUDGET_MS": "200", "MODELHUB_BENCH_PROCESSES": "1", **env}
    with (data / "worker.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "modelhub", "worker", "-Q", ",".join(QUEUES), "--concurrency", "1",
             "--pool", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"],
            cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop_worker(process)


def stop_worker(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, log: Path | None = None) -> Any:
    """Poll ``predicate`` every 0.1 s until it is truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")


def process_alive(pid: int) -> bool:
    """Whether a process with this id still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
