"""App config of the model registry."""

from django.apps import AppConfig


class ModelhubConfig(AppConfig):
    """The registry: models, versions, variants, jobs, deployments."""

    name = "modelhub"
    verbose_name = "Model registry"

    def ready(self) -> None:
        from modelhub import metrics, tasks  # noqa: F401 - registers the Celery tasks (run eagerly by default)

        metrics.register()
