"""App config of the model registry."""

import os
import sys
from collections.abc import Mapping

from django.apps import AppConfig


class ModelhubConfig(AppConfig):
    """The registry: models, versions, variants, jobs, deployments."""

    name = "modelhub"
    verbose_name = "Model registry"

    def ready(self) -> None:
        from modelhub import metrics, tasks  # noqa: F401 - registers the Celery tasks (run eagerly by default)

        metrics.register()
        if _serving_runserver(sys.argv, os.environ):
            from modelhub import queue

            if queue.runs_off_request(queue.OPTIMIZE):  # the local default: no broker, no beat
                queue.local_runner_reconcile()


def _serving_runserver(argv: list[str], environ: Mapping[str, str]) -> bool:
    """Whether this process is the one runserver serves from (the autoreloader's child, or the only
    process with --noreload), not the reloader watching it or another management command."""
    return len(argv) > 1 and argv[1] == "runserver" and (environ.get("RUN_MAIN") == "true" or "--noreload" in argv)
