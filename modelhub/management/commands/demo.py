"""``manage.py demo``: the whole lifecycle on the sample models, printed as it goes.

Builds the sample models, registers them with datasets and a readiness profile each (which
governs their production alias), runs the default optimization plan with a progress bar, prints
the variants of that one judgment with 95 % intervals, ties, verdicts and advice, promotes the
best passing variant through the gate, and asks the prediction API for an answer.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test import Client
from tqdm import tqdm

from modelhub import job_runner, queue, selectors, services
from modelhub.models import ModelVersion, OptimizationJob, ReadinessProfile, RegisteredModel
from workers.samples import SampleModel, build_sample

# name, sample, file to upload, profile limits
DEMO_MODELS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("quality-mlp", "quality_mlp", "onnx",
     {"max_size_mb": 5.0, "max_p95_ms": 50.0, "accuracy_metric": "mae", "max_accuracy_drop": 0.02}),
    ("digits-cnn", "digits_cnn", "torchscript",
     {"max_size_mb": 0.2, "max_p95_ms": 50.0, "accuracy_metric": "agreement", "max_accuracy_drop": 0.02}),
    ("tiny-transformer", "tiny_transformer", "onnx",
     {"max_p95_ms": 50.0, "accuracy_metric": "cosine_min", "max_accuracy_drop": 0.05}),
]
DEMO_BENCH = {"time_budget_s": 0.5, "batch_sizes": [1, 8]}


def _interval(estimate: dict[str, Any], width: int = 24) -> str:
    """'0.412 [0.405, 0.420]' or 'few calls (300)' for a percentile that rests on too few."""
    if not estimate:
        return f"{'—':<{width}}"
    if not estimate.get("enough", True):
        return f"{'few calls (' + str(estimate['calls']) + ')':<{width}}"
    text = f"{estimate['value']:.3f}" + (f" [{estimate['low']:.3f}, {estimate['high']:.3f}]" if width > 12 else "")
    return f"{text:<{width}}"


class Command(BaseCommand):
    help = "Run the whole model lifecycle on the built-in sample models (local default settings)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--only", choices=[m[0] for m in DEMO_MODELS], help="run one sample model only")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("The demo creates a user with a known password; run it with DEBUG=1 only.")
        user = self._user()
        root = Path(settings.DATA_DIR) / "samples"
        for name, sample_name, upload, limits in DEMO_MODELS:
            if options["only"] and options["only"] != name:
                continue
            self.stdout.write(self.style.MIGRATE_HEADING(f"\n== {name} =="))
            sample = build_sample(sample_name, root)
            version = self._register(user, name, sample, upload, limits)
            job = self._optimize(user, version, ReadinessProfile.objects.get(name=f"{name}-profile"))
            self._report(job)
            self._predict(user, name, sample)
        self.stdout.write(self.style.SUCCESS("\nDemo done. Admin: python manage.py runserver, then "
                                             "http://localhost:8000/admin/ (user demo, password demo)."))

    def _user(self) -> Any:
        users = get_user_model().objects
        user = users.filter(username="demo").first()
        if user is None:
            user = users.create_superuser("demo", "demo@localhost", "demo")
            self.stdout.write("created superuser demo (password: demo)")
        return user

    def _register(self, user: Any, name: str, sample: SampleModel, upload: str, limits: dict[str, Any]) -> ModelVersion:
        model = RegisteredModel.objects.filter(name=name).first() or services.model_create(
            name=name, owner=user, task=sample.task, description=f"Sample {sample.name} built by the demo.")
        profile, _ = ReadinessProfile.objects.get_or_create(name=f"{name}-profile", defaults=limits)
        services.governing_profile_set(model=model, profile=profile, by=user, reason="demo setup")
        path = sample.onnx if upload == "onnx" else sample.torchscript
        with path.open("rb") as handle:
            version, created = services.version_upload(model=model, stream=handle, filename=path.name, user=user)
        version.refresh_from_db()
        if version.status != ModelVersion.Status.READY:
            raise CommandError(f"{name}: upload refused: {version.status_reason}")
        self.stdout.write(f"{'registered' if created else 'found'} {name} v{version.number} ({version.format}, "
                          f"{version.size_bytes / 1e6:.2f} MB, inputs {[i['name'] for i in version.signature['inputs']]})")
        datasets = {"validation": sample.validation, "calibration": sample.calibration,
                    "training": sample.directory / "train.npz"}
        for purpose, file in datasets.items():
            if file.exists() and version.dataset(purpose) is None:
                with file.open("rb") as handle:
                    services.dataset_upload(version=version, purpose=purpose, stream=handle, filename=file.name,
                                            user=user)
        return version

    def _optimize(self, user: Any, version: ModelVersion, profile: ReadinessProfile) -> OptimizationJob:
        local = queue.is_eager()
        with queue.eager(False):  # queue it, then run it here in a thread so the bar can move
            job = services.optimization_request(version=version, user=user, profile=profile, auto_promote=True,
                                                bench=DEMO_BENCH)
        runner = None
        if local:
            runner = threading.Thread(target=job_runner.job_run, kwargs={"job_id": job.pk, "worker": "demo"})
            runner.start()
        with tqdm(total=100, desc=f"job {job.pk}", unit="%", bar_format="{l_bar}{bar}| {n:.0f}% {postfix}") as bar:
            while True:
                job.refresh_from_db()
                bar.n = job.progress
                bar.set_postfix_str(job.current_step[:40])
                if job.is_finished:
                    break
                time.sleep(0.3)
        if runner is not None:
            runner.join()
        if job.status != OptimizationJob.Status.SUCCEEDED:
            raise CommandError(f"job {job.pk} {job.status}: {job.error}")
        return job

    def _report(self, job: OptimizationJob) -> None:
        rows = selectors.variant_rows(version=job.version, job=job)
        result = job.result
        ranking = result.get("ranking", {})
        stat, batch = ranking.get("statistic", "p50"), ranking.get("batch_size", 1)
        self.stdout.write(f"job {job.pk}, profile {job.profile.name if job.profile else '(none)'}: latency in ms at "
                          f"batch {batch}, 95 % intervals, calls per percentile; ranked by {stat}")
        self.stdout.write(f"{'variant':<18}{'size MB':>8}  {'p50 ms [95 % interval]':<24}{'p95 ms [95 % interval]':<24}"
                          f"{'p99 ms':<12}{'samples/s':>10} {'mem MB':>7}  verdict")
        for row in rows:
            if row["p50_ms"] is None:
                status = row["status_reason"][:60] if row["status"] == "FAILED" else "not measured in this job"
                self.stdout.write(f"{row['name']:<18}{row['size_bytes'] / 1e6:>8.2f}  {status}")
                continue
            verdict = "PASS" if row["passed"] else "not judged" if row["passed"] is None else \
                "FAIL: " + "; ".join(row["verdict"].get("failures", []))[:70]
            figures = "".join(_interval(row["intervals"].get(name, {})) for name in ("p50", "p95"))
            self.stdout.write(f"{row['name']:<18}{row['size_bytes'] / 1e6:>8.2f}  {figures}"
                              f"{_interval(row['intervals'].get('p99', {}), 12)}{row['throughput']:>10.0f} "
                              f"{row['peak_memory_mb']:>7.1f}  {verdict}")
        batches = sorted({row["throughput_batch"] for row in rows if row["throughput_batch"]})
        self.stdout.write(f"(samples/s at batch {', '.join(map(str, batches)) or '?'}; "
                          f"job wall time {result.get('wall_s')} s)")
        tied = ranking.get("ties", {}).get(result.get("best") or "", [])
        self.stdout.write(f"best: {result.get('best')}" + (f"  (tied on {stat} with {', '.join(tied)})" if tied else ""))
        for line in result.get("advice", []):
            self.stdout.write(f"  advice: {line}")
        production = selectors.deployment_variant(model=job.version.model)
        self.stdout.write(f"production: {production.label if production else 'none (no variant passed)'}")

    def _predict(self, user: Any, name: str, sample: SampleModel) -> None:
        model = RegisteredModel.objects.get(name=name)
        if selectors.deployment_variant(model=model) is None:
            return
        with np.load(sample.validation, allow_pickle=False) as data:
            inputs = {key: data[key][:2].tolist() for key in data.files if key != "labels"}
        client = Client()
        client.force_login(user)
        started = time.perf_counter()
        response = client.post(f"/api/v1/models/{name}/predict", {"inputs": inputs}, content_type="application/json")
        elapsed = (time.perf_counter() - started) * 1000
        body = response.json()
        if response.status_code != 200:
            self.stdout.write(self.style.ERROR(f"predict answered {response.status_code}: {body}"))
            return
        outputs = {k: np.asarray(v).round(4).tolist() if np.asarray(v).size <= 20 else f"array{np.asarray(v).shape}"
                   for k, v in body["outputs"].items()}
        self.stdout.write(f"POST /api/v1/models/{name}/predict -> {response.status_code} in {elapsed:.1f} ms: "
                          f"variant {body.get('variant')}, outputs {outputs}")
