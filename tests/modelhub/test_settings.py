"""Settings come from the environment and refuse bad values loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from modelhub.env import database_from_url, env_bool, env_int, env_list

ROOT = Path(__file__).resolve().parent.parent.parent
PRODUCTION = {"DEBUG": "0", "SECRET_KEY": "k" * 20 + "x7$Qp!2vLz9#Rt4@Wm6&Yb1^Nc8*Hs3(Jd5)", "ALLOWED_HOSTS": "hub.example.org"}


def test_env_bool_accepts_the_usual_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw, expected in [("1", True), ("yes", True), ("off", False), ("FALSE", False)]:
        monkeypatch.setenv("FLAG", raw)
        assert env_bool("FLAG", default=not expected) is expected


def test_env_bool_refuses_a_typo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAG", "ture")
    with pytest.raises(ImproperlyConfigured, match="not a boolean"):
        env_bool("FLAG", default=False)


def test_env_int_refuses_words_and_values_below_the_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIZE", "ten")
    with pytest.raises(ImproperlyConfigured, match="not an integer"):
        env_int("SIZE", 1)
    monkeypatch.setenv("SIZE", "0")
    with pytest.raises(ImproperlyConfigured, match="below the minimum"):
        env_int("SIZE", 1, minimum=1)


def test_unset_variables_give_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTHING", raising=False)
    assert env_int("NOTHING", 7) == 7
    assert env_list("NOTHING", ["a"]) == ["a"]


def test_database_url_gives_postgres_with_a_connect_timeout() -> None:
    db = database_from_url("postgres://hub:s%40cret@db.internal:5433/registry")
    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "django.db.backends.postgresql", "registry", "hub", "s@cret", "db.internal", "5433")
    assert db["OPTIONS"] == {"connect_timeout": 2}


def test_database_url_refuses_other_engines_and_missing_names() -> None:
    with pytest.raises(ImproperlyConfigured, match="not supported"):
        database_from_url("mysql://u:p@h/db")
    with pytest.raises(ImproperlyConfigured, match="names no database"):
        database_from_url("postgres://u:p@h:5432/")


def _manage(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"}}
    full = {**clean, "MODELHUB_DATA_DIR": str(tmp_path), **env}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=120)


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    result = _manage(["check"], {"DEBUG": "0", "ALLOWED_HOSTS": "hub.example.org"}, tmp_path)
    assert result.returncode != 0
    assert "DEBUG=0 needs SECRET_KEY" in result.stderr


def test_production_refuses_to_start_without_allowed_hosts(tmp_path: Path) -> None:
    result = _manage(["check"], {"DEBUG": "0", "SECRET_KEY": PRODUCTION["SECRET_KEY"]}, tmp_path)
    assert result.returncode != 0
    assert "DEBUG=0 needs ALLOWED_HOSTS" in result.stderr


def test_production_settings_pass_the_deployment_checklist(tmp_path: Path) -> None:
    """B8: check --deploy --fail-level WARNING with production settings reports nothing."""
    result = _manage(["check", "--deploy", "--fail-level", "WARNING"], PRODUCTION, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
