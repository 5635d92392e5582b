"""modelhub: the project package and the model registry app."""

from modelhub.celery import app as celery_app

__all__ = ["celery_app"]
