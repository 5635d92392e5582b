"""The Celery app of modelhub; configuration comes from Django settings (CELERY_*).

The beat schedule lives in the database (django-celery-beat's DatabaseScheduler, edited in the
admin under Periodic tasks); migration ``modelhub 0003`` creates its entries: the reconciler
every minute (the database, not the broker, is the record of pending work) and the nightly
re-benchmark.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelhub.settings")

app = Celery("modelhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["modelhub"])
