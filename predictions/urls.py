"""Routes of the serving side: health checks and metrics (the predict route joins here)."""

from django.urls import path

from predictions import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
]
