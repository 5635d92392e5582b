"""Routes of the serving side: the predict endpoint, health checks and metrics."""

from django.urls import path

from predictions import health, views

urlpatterns = [
    path("api/v1/models/<slug:name>/predict", views.predict, name="predict"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
]

handler500 = "modelhub.server_errors.server_error"  # the serving plane's root URLconf is this one
