"""Regressions, and the beat schedule in the database (editable in the admin under Periodic tasks).

The schedule's defaults: the reconciler every 60 s, the nightly re-benchmark at 02:30 UTC. They
are made here, once; later edits in the admin are kept (the entries are matched by name).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.utils import timezone

from modelhub.roles import sync_role_groups_in_migration

RECONCILE = "reconcile-jobs"
NIGHTLY = "nightly-rebenchmark"


def create_schedule(apps, schema_editor):
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    crontab_model = apps.get_model("django_celery_beat", "CrontabSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = interval_model.objects.get_or_create(every=60, period="seconds")
    nightly, _ = crontab_model.objects.get_or_create(minute="30", hour="2", day_of_week="*", day_of_month="*",
                                                     month_of_year="*", timezone="UTC")
    task_model.objects.get_or_create(name=RECONCILE, defaults={
        "task": "workers.tasks.reconcile_jobs_task", "interval": every_minute,
        "description": "Re-send jobs the broker lost and recover jobs of dead workers."})
    task_model.objects.get_or_create(name=NIGHTLY, defaults={
        "task": "workers.tasks.nightly_rebenchmark_task", "crontab": nightly,
        "description": "Re-benchmark every production variant and its fallback chain; flag regressions."})
    # A running beat reloads its schedule when this timestamp moves.
    apps.get_model("django_celery_beat", "PeriodicTasks").objects.update_or_create(
        ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=[RECONCILE, NIGHTLY]).delete()


def grant_regression_views(apps, schema_editor):
    # Permissions are normally made after all migrations; the role groups need the new one now.
    sync_role_groups_in_migration(apps)


class Migration(migrations.Migration):

    dependencies = [
        ('modelhub', '0002_roles'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ('django_celery_beat', '0019_alter_periodictasks_options'),
    ]

    operations = [
        migrations.CreateModel(
            name='Regression',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('night', models.DateField()),
                ('last_night', models.DateField(help_text='The latest night still worse than the baseline.')),
                ('nights', models.PositiveIntegerField(default=1, help_text='Nights it was seen while open.')),
                ('metric', models.CharField(choices=[('p95_ms', 'p95 latency'), ('readiness', 'readiness verdict')], max_length=20)),
                ('baseline', models.FloatField(help_text='Median p95 (ms) of the baseline nights.', null=True)),
                ('value', models.FloatField(help_text="Tonight's p95 (ms).", null=True)),
                ('ratio', models.FloatField(help_text="Tonight's p95 over the baseline median.", null=True)),
                ('reasons', models.JSONField(default=list)),
                ('details', models.JSONField(blank=True, default=dict, help_text='The full check: baseline stats, setup, role.')),
                ('acknowledged', models.BooleanField(default=False)),
                ('acknowledged_at', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('acknowledged_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('result', models.ForeignKey(help_text='The nightly result that raised it.', on_delete=django.db.models.deletion.CASCADE, related_name='regressions', to='modelhub.benchmarkresult')),
                ('variant', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='regressions', to='modelhub.variant')),
            ],
            options={
                'ordering': ['acknowledged', '-night', '-id'],
                'constraints': [models.UniqueConstraint(condition=models.Q(('acknowledged', False)), fields=('variant', 'metric'), name='one_open_regression_per_variant_and_metric')],
            },
        ),
        migrations.RunPython(create_schedule, remove_schedule),
        migrations.RunPython(grant_regression_views, migrations.RunPython.noop),
    ]
