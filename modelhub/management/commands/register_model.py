"""``manage.py register_model NAME FILE [--dataset F] [--calibration F] [--profile P]``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from modelhub import services
from modelhub.errors import ServiceError
from modelhub.models import ModelVersion, ReadinessProfile, RegisteredModel


class _ProgressReader:
    """A file wrapper that advances a progress bar as the upload is streamed."""

    def __init__(self, handle: Any, bar: tqdm) -> None:
        self.handle, self.bar = handle, bar

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.bar.update(len(chunk))
        return chunk


class Command(BaseCommand):
    help = "Register a model file (ONNX or TorchScript) as a new version, with optional datasets."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("file", type=Path)
        parser.add_argument("--dataset", type=Path, help="validation .npz")
        parser.add_argument("--calibration", type=Path, help="calibration .npz")
        parser.add_argument("--training", type=Path, help="training .npz (distillation)")
        parser.add_argument("--profile", help="readiness profile name to optimize against")
        parser.add_argument("--optimize", action="store_true", help="queue the default optimization plan")
        parser.add_argument("--user", default=None, help="acting user (default: the first superuser)")
        parser.add_argument("--task", default="auto")

    def handle(self, *args: Any, **options: Any) -> None:
        user = self._user(options["user"])
        try:
            version = self._register(user, options)
            for purpose in ("dataset", "calibration", "training"):
                if options[purpose]:
                    self._dataset(version, "validation" if purpose == "dataset" else purpose, options[purpose], user)
            if options["optimize"] or options["profile"]:
                profile = ReadinessProfile.objects.filter(name=options["profile"]).first() if options["profile"] else None
                if options["profile"] and profile is None:
                    raise CommandError(f"No readiness profile named {options['profile']!r}.")
                job = services.optimization_request(version=version, user=user, profile=profile)
                job.refresh_from_db()
                self.stdout.write(f"job {job.pk}: {job.status} {job.error}")
        except ServiceError as exc:
            raise CommandError(exc.message) from None

    def _user(self, username: str | None) -> Any:
        users = get_user_model().objects
        user = users.filter(username=username).first() if username else users.filter(is_superuser=True).first()
        if user is None:
            raise CommandError("No acting user: create a superuser first or pass --user.")
        return user

    def _register(self, user: Any, options: dict[str, Any]) -> ModelVersion:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path} is not a file.")
        model = RegisteredModel.objects.filter(name=options["name"]).first()
        if model is None:
            model = services.model_create(name=options["name"], owner=user, task=options["task"])
        else:
            services.ensure_visible(user=user, model=model)
        with path.open("rb") as handle, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                             desc=f"upload {path.name}", disable=None) as bar:
            version, created = services.version_upload(model=model, stream=_ProgressReader(handle, bar),
                                                       filename=path.name, user=user)
        version.refresh_from_db()
        if version.status == ModelVersion.Status.FAILED:
            raise CommandError(f"{model.name} v{version.number} refused: {version.status_reason}")
        word = "registered" if created else "already registered as"
        self.stdout.write(f"{word} {model.name} v{version.number} ({version.status}, {version.format})")
        return version

    def _dataset(self, version: ModelVersion, purpose: str, path: Path, user: Any) -> None:
        if version.dataset(purpose):
            self.stdout.write(f"  {purpose} dataset already present")
            return
        with path.open("rb") as handle:
            dataset = services.dataset_upload(version=version, purpose=purpose, stream=handle, filename=path.name,
                                              user=user)
        self.stdout.write(f"  {purpose} dataset: {dataset.sample_count} samples")

