"""WSGI entry point (gunicorn modelhub.wsgi).

On the serving plane (MODELHUB_PLANE=serving) predict requests skip Django's handler; see
``predictions.wsgi``.
"""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelhub.settings")
application = get_wsgi_application()
if settings.MODELHUB_PLANE == "serving":
    from predictions.wsgi import ServingApplication

    application = ServingApplication(application)
