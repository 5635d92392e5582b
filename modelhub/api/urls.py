"""Routes of the management API under /api/v1/."""

from django.urls import path

from modelhub import converters  # noqa: F401 - registers <name:...>
from modelhub.api import views as v

urlpatterns = [
    path("models", v.ModelListView.as_view(), name="api-models"),
    path("models/<slug:name>", v.ModelDetailView.as_view(), name="api-model"),
    path("models/<slug:name>/versions", v.VersionListView.as_view(), name="api-versions"),
    path("models/<slug:name>/versions/<int:number>", v.VersionDetailView.as_view(), name="api-version"),
    path("models/<slug:name>/versions/<int:number>/annotations", v.VersionAnnotationsView.as_view(),
         name="api-version-annotations"),
    path("models/<slug:name>/versions/<int:number>/datasets", v.DatasetListView.as_view(), name="api-datasets"),
    path("models/<slug:name>/versions/<int:number>/results", v.ResultsView.as_view(), name="api-results"),
    path("models/<slug:name>/versions/<int:number>/optimize", v.OptimizeView.as_view(), name="api-optimize"),
    path("models/<slug:name>/versions/<int:number>/variants/<name:variant>/bundle", v.VariantBundleView.as_view(),
         name="api-bundle"),
    path("models/<slug:name>/versions/<int:number>/variants/<name:variant>/benchmark",
         v.VariantBenchmarkView.as_view(), name="api-benchmark"),
    path("models/<slug:name>/promote", v.PromoteView.as_view(), name="api-promote"),
    path("models/<slug:name>/rollback", v.RollbackView.as_view(), name="api-rollback"),
    path("models/<slug:name>/governing-profiles", v.GoverningProfileView.as_view(), name="api-governing-profiles"),
    path("models/<slug:name>/history", v.HistoryView.as_view(), name="api-history"),
    path("models/<slug:name>/regressions", v.RegressionListView.as_view(), name="api-regressions"),
    path("models/<slug:name>/versions/<int:number>/variants/<name:variant>/history", v.VariantHistoryView.as_view(),
         name="api-variant-history"),
    path("jobs/<int:job_id>", v.JobDetailView.as_view(), name="api-job"),
    path("jobs/<int:job_id>/cancel", v.JobCancelView.as_view(), name="api-job-cancel"),
    path("profiles", v.ProfileListView.as_view(), name="api-profiles"),
]
