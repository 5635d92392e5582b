"""App config of the serving side."""

from django.apps import AppConfig


class PredictionsConfig(AppConfig):
    """Serving predictions from promoted variants."""

    name = "predictions"
    verbose_name = "Predictions"
