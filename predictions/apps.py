"""App config of the serving side."""

from typing import Any

from django.apps import AppConfig


class PredictionsConfig(AppConfig):
    """Serving predictions from promoted variants."""

    name = "predictions"
    verbose_name = "Predictions"

    def ready(self) -> None:
        """Listen to the registry: when an alias moves, move the routing generation."""
        from modelhub.signals import routing_changed

        routing_changed.connect(_routing_changed, dispatch_uid="predictions.routing_changed")


def _routing_changed(sender: Any, *, model_name: str, **kwargs: Any) -> None:
    """Every serving process rebuilds the model's routes and warms the new primary itself."""
    from predictions import cache

    cache.bump_generation(model_name)
