"""The Celery app of modelhub; configuration comes from Django settings (CELERY_*)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelhub.settings")

app = Celery("modelhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])

# The reconciler makes the database, not the broker, the record of pending work.
app.conf.beat_schedule = {
    "reconcile-jobs": {"task": "workers.tasks.reconcile_jobs_task", "schedule": 60.0},
}
