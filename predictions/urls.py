"""Routes of the serving side: the predict endpoint, the Open Inference Protocol, health checks and metrics.

Both planes mount these (the management plane includes them at its root), so staff reach the
protocol's endpoints there too, with their own credentials.
"""

from django.urls import path

from predictions import health, views
from predictions.oip import views as oip

_MODEL = "v2/models/<slug:name>"
_VERSION = _MODEL + "/versions/<str:version>"

urlpatterns = [
    path("api/v1/models/<slug:name>/predict", views.predict, name="predict"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("v2", oip.server_metadata, name="oip-server"),
    path("v2/health/live", health.v2_live, name="oip-live"),
    path("v2/health/ready", health.v2_ready, name="oip-ready"),
    path(_MODEL, oip.model_metadata, name="oip-model"),
    path(_VERSION, oip.model_metadata, name="oip-model-version"),
    path(_MODEL + "/ready", oip.model_ready, name="oip-model-ready"),
    path(_VERSION + "/ready", oip.model_ready, name="oip-model-version-ready"),
    path(_MODEL + "/infer", oip.infer, name="oip-infer"),
    path(_VERSION + "/infer", oip.infer, name="oip-infer-version"),
]

handler500 = "modelhub.server_errors.server_error"  # the serving plane's root URLconf is this one
handler404 = "modelhub.server_errors.not_found"
