"""URL routes: the root (to the dashboard), admin, dashboard, management API, serving API, health checks,
schema and metrics."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from modelhub.login_guard import LockoutAuthenticationForm

admin.site.login_form = LockoutAuthenticationForm  # failed logins lock a username / address out for a while

urlpatterns = [
    path("admin/", admin.site.urls),
    path("dashboard/", include("modelhub.dashboard.urls")),
    path("api/v1/", include("modelhub.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("", include("predictions.urls")),
    # The address runserver prints opens the dashboard (its login for a visitor), not a 404.
    path("", RedirectView.as_view(pattern_name="dashboard:models"), name="home"),
]

# With DEBUG off: 503 + Retry-After while the database is down, a 500 without a traceback otherwise
# (modelhub/server_errors.py says why this is a handler and not a middleware).
handler500 = "modelhub.server_errors.server_error"
handler404 = "modelhub.server_errors.not_found"  # JSON under /api/, a page elsewhere
handler403 = "modelhub.server_errors.forbidden"  # likewise: JSON for the API, the framed page for browsers
