"""Routes of the dashboard under /dashboard/ (staff login: the admin's)."""

from django.urls import path

from modelhub import converters  # noqa: F401 - registers <name:...>
from modelhub.dashboard import views as v

app_name = "dashboard"
VARIANT = "models/<slug:name>/versions/<int:number>/variants/<name:variant>"

urlpatterns = [
    path("", v.models_list, name="models"),
    path("models/<slug:name>/", v.model_detail, name="model"),
    path("models/<slug:name>/compare/", v.compare, name="compare"),
    path("models/<slug:name>/compare/variants/", v.compare_variants, name="compare-variants"),
    path("models/<slug:name>/rollback/", v.rollback, name="rollback"),
    path("models/<slug:name>/versions/<int:number>/", v.version_detail, name="version"),
    path("models/<slug:name>/versions/<int:number>/optimize/", v.optimize, name="optimize"),
    path("models/<slug:name>/versions/<int:number>/notes/", v.version_notes, name="version-notes"),
    path(f"{VARIANT}/", v.variant_detail, name="variant"),
    path(f"{VARIANT}/promote/", v.promote, name="promote"),
    path(f"{VARIANT}/batching/", v.batching, name="batching"),
    path(f"{VARIANT}/bundle/", v.bundle, name="bundle"),
    path("jobs/<int:job_id>/", v.job_detail, name="job"),
    path("jobs/<int:job_id>/progress/", v.job_progress, name="job-progress"),
    path("jobs/<int:job_id>/cancel/", v.job_cancel, name="job-cancel"),
]
