"""A serving-plane process answers predictions and health checks only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PROBE = """
import django
django.setup()
from django.conf import settings
from django.test import Client
client = Client()
print(settings.ROOT_URLCONF, client.get('/healthz').status_code, client.get('/admin/').status_code,
      client.get('/api/v1/models').status_code, client.post('/api/v1/models/m/predict').status_code)
"""


def test_the_serving_plane_has_no_admin_and_no_management_api(tmp_path: Path) -> None:
    """B4: the public (serving) listener has no management routes at all."""
    env = {**os.environ, "MODELHUB_PLANE": "serving", "DEBUG": "1", "MODELHUB_DATA_DIR": str(tmp_path),
           "DJANGO_SETTINGS_MODULE": "modelhub.settings"}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["predictions.urls", "200", "404", "404", "401"]
