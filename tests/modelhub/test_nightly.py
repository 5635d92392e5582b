"""Nightly re-benchmarking: once per variant and night, the chain measured together with the baseline's
settings, production judged under its governing profile, regressions of the declared statistic told every way."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY

from modelhub import nightly, regressions, services, webhooks
from modelhub.errors import Forbidden
from modelhub.models import BenchmarkResult, ModelVersion, RegisteredModel, Regression, Variant
from tests import factories
from workers.samples import SampleModel

# Regressions are announced (log, gauge, webhook) at commit, and D8 races two runs in threads: real commits.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
BENCH = {"time_budget_s": 0.2, "batch_sizes": [1]}
PLAN = [{"name": "int8-dynamic", "pass_name": "quantize_dynamic", "options": {}},
        {"name": "int8-static", "pass_name": "quantize_static", "options": {}}]
NIGHT = date(2025, 6, 10)
SECRET = "test-webhook-secret"


@dataclass
class Production:
    """A model whose production variant is int8-dynamic, promoted over int8-static."""

    model: RegisteredModel
    version: ModelVersion
    variants: dict[str, Variant] = field(default_factory=dict)

    def nightly(self, name: str, night: date = NIGHT) -> BenchmarkResult:
        return BenchmarkResult.objects.get(variant=self.variants[name], kind="nightly", night=night)


@pytest.fixture
def production(maintainer: Any, approver: Any, quality_mlp: SampleModel, media_root: Any) -> Production:
    profile = services.profile_create(user=maintainer, name="cpu-small", max_p95_ms=1000.0, batch_size=1, threads=1)
    version = factories.optimized_version(maintainer, quality_mlp, profile=profile, plan=PLAN, bench=BENCH,
                                          purposes=factories.BOTH, reason="")
    variants = {v.name: v for v in version.variants.all()}
    for name in ("int8-static", "int8-dynamic"):
        factories.promote(variants[name], approver)
    return Production(model=version.model, version=version, variants=variants)


def seed_nights(variant: Variant, p50s: list[float], *, before: date = NIGHT, fingerprint_hash: str | None = None,
                intervals: bool = True) -> None:
    """Earlier nights of a variant, measured on this machine (the fingerprint of its job result) and
    judged under its job's limits: the declared statistic (p50) with a tight interval, or without
    intervals like rows from before they were kept."""
    base = variant.results.get(kind="job")
    for back, p50 in enumerate(reversed(p50s), start=1):
        figures = {"p50": p50, "p95": p50 * 1.25, "p99": p50 * 1.5}
        BenchmarkResult.objects.create(
            variant=variant, kind="nightly", night=before - timedelta(days=back), profile=base.profile,
            batch_size=base.batch_size, statistic="p50", p50_ms=p50, p95_ms=figures["p95"], p99_ms=figures["p99"],
            intervals={name: {"value": v, "low": v * 0.98, "high": v * 1.02, "calls": 300, "enough": True}
                       for name, v in figures.items()} if intervals else {},
            passed=True, verdict={"passed": True, "failures": [], "checks": []}, report=base.report,
            profile_spec=base.profile_spec, fingerprint=base.fingerprint,
            fingerprint_hash=fingerprint_hash or base.fingerprint_hash)


@dataclass
class Hook:
    """A tiny webhook receiver on 127.0.0.1: what it received, and the statuses it will answer."""

    url: str
    received: list[tuple[dict[str, str], bytes]]
    answers: list[int]


@pytest.fixture
def hook(settings: Any) -> Iterator[Hook]:
    received: list[tuple[dict[str, str], bytes]] = []
    answers: list[int] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(answers.pop(0) if answers else 204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/modelhub"
    settings.MODELHUB_REGRESSION_WEBHOOK_URL = url
    settings.MODELHUB_REGRESSION_WEBHOOK_SECRET = SECRET
    yield Hook(url=url, received=received, answers=answers)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def open_gauge(model: str, variant: str) -> float | None:
    return REGISTRY.get_sample_value("modelhub_regressions_open", {"model": model, "variant": variant})


# --- the schedule ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_beat_entries_exist_after_migrate_and_name_registered_tasks() -> None:
    from django_celery_beat.models import PeriodicTask

    from modelhub.celery import app

    entries = {task.name: task for task in PeriodicTask.objects.select_related("interval", "crontab")}
    assert entries["reconcile-jobs"].task == "workers.tasks.reconcile_jobs_task"
    assert (entries["reconcile-jobs"].interval.every, entries["reconcile-jobs"].interval.period) == (60, "seconds")
    nightly_entry = entries["nightly-rebenchmark"]
    assert nightly_entry.task == "workers.tasks.nightly_rebenchmark_task" and nightly_entry.enabled
    crontab = nightly_entry.crontab
    assert (crontab.minute, crontab.hour, str(crontab.timezone)) == ("30", "2", "UTC")
    app.loader.import_default_modules()
    assert {entry.task for entry in entries.values()} <= set(app.tasks)
    assert not app.conf.beat_schedule, "the database is the one source of the schedule"
    assert app.amqp.router.route({}, "workers.tasks.nightly_rebenchmark_task")["queue"].name == "benchmark"


# --- what is measured, and how ---------------------------------------------------------------


def test_the_chain_is_the_ancestors_then_production_then_the_previous_production(production: Production) -> None:
    targets = nightly.nightly_targets()
    assert [(t.variant.name, t.role) for t in targets] == [
        ("original", "ancestor"), ("int8-dynamic", "production"), ("int8-static", "previous")]


def test_a_night_measures_each_variant_of_the_chain_once_with_its_baseline_settings(production: Production) -> None:
    report = nightly.nightly_run(night=NIGHT)
    assert [(v.variant, v.status) for v in report.variants] == [
        ("v1/original", "measured"), ("v1/int8-dynamic", "measured"), ("v1/int8-static", "measured")]
    for name in ("original", "int8-dynamic", "int8-static"):
        result, baseline = production.nightly(name), production.variants[name].results.get(kind="job")
        assert result.p95_ms > 0 and result.passed is True and result.profile == baseline.profile
        assert result.pending is False and result.job is None
        assert result.report["config"] == baseline.report["config"]
        assert result.report["config"]["time_budget_s"] == 0.2 and result.report["config"]["batch_sizes"] == [1]
        assert result.fingerprint_hash == baseline.fingerprint_hash
        assert result.statistic == "p50" and set(result.intervals) == {"p50", "p95", "p99"}
        p50 = result.intervals["p50"]
        assert p50["low"] <= result.p50_ms == p50["value"] <= p50["high"] and p50["calls"] >= 20
    outcome = report.variants[1]
    assert outcome.statistic == "p50" and outcome.value_ms == production.nightly("int8-dynamic").p50_ms
    assert outcome.check["statistic"] == "p50" and outcome.check["low_ms"] == outcome.interval[0]
    again = nightly.nightly_run(night=NIGHT)
    assert {v.status for v in again.variants} == {"skipped"}
    assert BenchmarkResult.objects.filter(kind="nightly", night=NIGHT).count() == 3


def test_the_links_of_a_version_are_measured_together_in_interleaved_rounds(production: Production) -> None:
    nightly.nightly_run(night=NIGHT)
    together = sorted(str(v.pk) for v in production.variants.values())
    for name in ("original", "int8-dynamic", "int8-static"):
        run = production.nightly(name).report["run"]
        assert sorted(run["models"]) == together and run["order"] == "rotated each round"


def test_the_production_variant_is_judged_under_its_alias_s_governing_profile(
        production: Production, maintainer: Any, hook: Hook) -> None:
    seed_nights(production.variants["int8-dynamic"], [1000.0] * 5)  # passed under the job's profile
    strict = services.profile_create(user=maintainer, name="strict", max_p95_ms=0.000001, batch_size=1, threads=1)
    services.governing_profile_set(model=production.model, profile=strict, by=maintainer, reason="tighter SLO")
    report = nightly.nightly_run(night=NIGHT)
    dynamic = production.nightly("int8-dynamic")
    assert dynamic.profile == strict and dynamic.passed is False and dynamic.profile_spec["max_p95_ms"] == 0.000001
    assert any("p95" in failure for failure in dynamic.verdict["failures"])
    for name in ("original", "int8-static"):  # the rest of the chain keeps its baseline's judge
        row = production.nightly(name)
        assert row.profile.name == "cpu-small" and row.passed is True
    assert dynamic.report["config"]["batch_sizes"] == [1] and dynamic.report["config"]["time_budget_s"] == 0.2
    # stricter rules are not a worse variant: no readiness flip against nights judged under other limits
    assert {v.variant: v.detail for v in report.variants}["v1/int8-dynamic"] == "ok"
    assert not Regression.objects.exists() and hook.received == []


def test_an_alias_governed_by_a_node_profile_is_measured_in_node_at_night(
        production: Production, maintainer: Any) -> None:
    """(G15) The governing profile's target decides the runtime of the production variant's night:
    onnxruntime-node for a ``node`` profile, named in the fingerprint, never a refused provider."""
    node = services.profile_create(user=maintainer, name="node-small", max_p95_ms=1000.0, batch_size=1, threads=1,
                                   target="node")
    services.governing_profile_set(model=production.model, profile=node, by=maintainer, reason="served from Node")
    nightly.nightly_run(night=NIGHT)
    dynamic = production.nightly("int8-dynamic")
    assert dynamic.profile == node and dynamic.passed is True, dynamic.verdict
    assert dynamic.fingerprint["provider"] == "onnxruntime-node (cpu)" and dynamic.p50_ms > 0
    assert production.nightly("original").fingerprint["provider"] == "CPUExecutionProvider"


def test_two_concurrent_runs_for_the_same_night_produce_one_result_per_variant(production: Production) -> None:
    """D8: two schedulers firing the same night at once measure each (variant, night) once."""
    start = threading.Barrier(2, timeout=60)
    reports: list[nightly.NightlyReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            reports.append(nightly.nightly_run(night=NIGHT))
        except BaseException as exc:  # noqa: BLE001 - the test reports it below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == [] and len(reports) == 2
    rows = BenchmarkResult.objects.filter(kind="nightly", night=NIGHT)
    assert sorted(rows.values_list("variant__name", flat=True)) == ["int8-dynamic", "int8-static", "original"]
    assert all(row.passed is not None and row.p95_ms is not None for row in rows)
    measured = [v.variant for r in reports for v in r.variants if v.status == "measured"]
    assert sorted(measured) == ["v1/int8-dynamic", "v1/int8-static", "v1/original"]


def test_a_claim_left_by_a_dead_run_is_taken_over_only_once_it_lapses(production: Production) -> None:
    dynamic = production.variants["int8-dynamic"]
    BenchmarkResult.objects.create(variant=dynamic, kind="nightly", night=NIGHT, pending=True,
                                   report={"claimed_by": "dead-run"})
    first = nightly.nightly_run(night=NIGHT, model="mlp")
    assert {v.variant: v.status for v in first.variants}["v1/int8-dynamic"] == "skipped"
    later = timezone.now() + timedelta(seconds=nightly.CLAIM_STALE_S + 60)
    second = nightly.nightly_run(night=NIGHT, model="mlp", now=later)
    assert {v.variant: v.status for v in second.variants}["v1/int8-dynamic"] == "measured"
    assert production.nightly("int8-dynamic").p95_ms > 0


def test_the_same_task_redelivered_takes_back_its_own_unfinished_claim(production: Production) -> None:
    dynamic = production.variants["int8-dynamic"]
    owner = "worker-1|task-42"
    BenchmarkResult.objects.create(variant=dynamic, kind="nightly", night=NIGHT, pending=True,
                                   report={"claimed_by": owner})
    report = nightly.nightly_run(night=NIGHT, model="mlp", owner=owner)
    assert {v.variant: v.status for v in report.variants}["v1/int8-dynamic"] == "measured"


def test_an_unfinished_claim_is_never_a_variant_s_latest_result(production: Production) -> None:
    dynamic = production.variants["int8-dynamic"]
    BenchmarkResult.objects.create(variant=dynamic, kind="nightly", night=NIGHT, pending=True,
                                   report={"claimed_by": "someone"})
    assert dynamic.latest_result().kind == "job"


def test_a_variant_that_cannot_be_measured_is_recorded_as_failed_and_flips_its_verdict(
        production: Production, media_root: Any) -> None:
    static = production.variants["int8-static"]
    seed_nights(static, [1.0, 1.0, 1.0])
    (media_root / static.storage_key).unlink()
    report = nightly.nightly_run(night=NIGHT)
    outcome = {v.variant: v for v in report.variants}["v1/int8-static"]
    assert outcome.status == "failed" and "could not be measured" in outcome.detail
    row = production.nightly("int8-static")
    assert row.passed is False and row.p95_ms is None
    assert Regression.objects.get(variant=static).metric == "readiness"


# --- regressions -----------------------------------------------------------------------------


def test_a_regression_is_recorded_logged_counted_and_sent_signed(
        production: Production, hook: Hook, caplog: pytest.LogCaptureFixture, settings: Any) -> None:
    dynamic = production.variants["int8-dynamic"]
    seed_nights(dynamic, [0.0010, 0.0011, 0.0010, 0.0009, 0.0010])  # far faster than any real run
    with caplog.at_level(logging.WARNING, logger="modelhub.nightly"):
        report = nightly.nightly_run(night=NIGHT)
    found = Regression.objects.get()
    assert report.to_dict()["regressions"] == [found.pk]
    tonight = production.nightly("int8-dynamic")
    assert (found.variant, found.night, found.metric, found.acknowledged) == (dynamic, NIGHT, "p50_ms", False)
    assert found.baseline == pytest.approx(0.0010) and found.value == tonight.p50_ms
    assert found.ratio == pytest.approx(found.value / found.baseline) and found.ratio > 1.1
    assert "above the 5-night median" in found.reasons[0] and "whole interval" in found.reasons[0]
    assert found.details["statistic"] == "p50" and found.details["profile"] == "cpu-small"
    assert found.details["low_ms"] == tonight.intervals["p50"]["low"] > found.details["baseline"]["threshold_ms"]
    warning = next(r for r in caplog.records if r.name == "modelhub.nightly" and r.levelno == logging.WARNING)
    assert "v1/int8-dynamic" in warning.getMessage() and "baseline median 0.001 ms" in warning.getMessage()
    assert open_gauge("mlp", "v1/int8-dynamic") == 1.0
    settings.MODELHUB_METRICS_TOKEN = "scrape-token"
    scraped = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token").content.decode()
    assert 'modelhub_regressions_open{model="mlp",variant="v1/int8-dynamic"} 1.0' in scraped
    assert "modelhub_nightly_last_result_timestamp_seconds " in scraped

    assert len(hook.received) == 1
    headers, body = hook.received[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-modelhub-signature"], expected)
    assert headers["content-type"] == "application/json" and headers["x-modelhub-event"] == "regression"
    payload = json.loads(body)
    assert {k: payload[k] for k in ("model", "alias", "role", "variant", "version", "night", "metric")} == {
        "model": "mlp", "alias": "production", "role": "production", "variant": "int8-dynamic", "version": 1,
        "night": NIGHT.isoformat(), "metric": "p50_ms"}
    assert payload["statistic"] == "p50" and payload["tonight_interval_ms"] == [
        tonight.intervals["p50"]["low"], tonight.intervals["p50"]["high"]]
    assert payload["baseline_median_ms"] == pytest.approx(0.0010) and payload["tonight_ms"] == found.value
    assert payload["ratio"] == pytest.approx(found.ratio) and payload["reasons"] == found.reasons
    assert payload["fingerprint"]["cpu_model"] and payload["fingerprint_hash"] == found.result.fingerprint_hash


def test_a_regression_still_there_the_next_night_is_counted_not_raised_again(
        production: Production, hook: Hook) -> None:
    seed_nights(production.variants["int8-dynamic"], [0.001] * 5, intervals=False)  # rows from before intervals
    nightly.nightly_run(night=NIGHT)
    nightly.nightly_run(night=NIGHT + timedelta(days=1))
    found = Regression.objects.get()
    assert (found.night, found.last_night, found.nights) == (NIGHT, NIGHT + timedelta(days=1), 2)
    assert len(hook.received) == 1


def test_a_variant_as_fast_as_its_recent_nights_raises_nothing(production: Production, hook: Hook) -> None:
    for variant in production.variants.values():
        seed_nights(variant, [1000.0] * 5)
    report = nightly.nightly_run(night=NIGHT)
    assert {v.detail for v in report.variants} == {"ok"}
    assert not Regression.objects.exists() and hook.received == []


def test_ten_real_nights_make_one_series_judged_by_the_interval_rule(production: Production) -> None:
    """D8 for ten nights in a row: each night measures each link once, the baseline grows to its
    window, and every check compares tonight's recorded interval with the band of earlier nights.
    (Whether a loaded shared host stays quiet is measured by bench/nightly_detector.py; the pure
    detector tests hold the simulated idle nights to zero alarms.)"""
    reports = [nightly.nightly_run(night=NIGHT + timedelta(days=d)) for d in range(10)]
    assert all(r.count("measured") == 3 for r in reports)
    assert BenchmarkResult.objects.filter(kind="nightly", pending=False).count() == 30
    dynamic = [{v.variant: v for v in r.variants}["v1/int8-dynamic"] for r in reports]
    assert [v.check["status"] for v in dynamic[:3]] == ["new-baseline", "warm-up", "warm-up"]
    assert [v.check["baseline"]["points"] for v in dynamic[3:]] == [3, 4, 5, 6, 7, 7, 7]
    for night, outcome in enumerate(dynamic):
        row = production.nightly("int8-dynamic", NIGHT + timedelta(days=night))
        check = outcome.check
        assert (check["statistic"], check["value_ms"]) == ("p50", row.p50_ms)
        assert (check["low_ms"], check["high_ms"]) == (row.intervals["p50"]["low"], row.intervals["p50"]["high"])
        if night >= 3:
            assert check["regressed"] == (check["low_ms"] > check["baseline"]["threshold_ms"])
    assert not Regression.objects.filter(metric="readiness").exists()


def test_new_hardware_starts_a_new_baseline_without_an_alarm(production: Production, hook: Hook) -> None:
    seed_nights(production.variants["int8-dynamic"], [0.001] * 7, fingerprint_hash="0000111122223333")
    report = nightly.nightly_run(night=NIGHT)
    outcome = {v.variant: v for v in report.variants}["v1/int8-dynamic"]
    assert outcome.detail == "new-baseline" and "setup changed" in outcome.check["notes"][0]
    assert not Regression.objects.exists() and hook.received == []


def test_acknowledging_closes_the_regression_and_the_gauge_forgets_it(
        production: Production, maintainer: Any, make_user: Any) -> None:
    seed_nights(production.variants["int8-dynamic"], [0.001] * 5)
    nightly.nightly_run(night=NIGHT)
    found = Regression.objects.get()
    with pytest.raises(Forbidden):
        regressions.regression_acknowledge(regression=found, user=make_user("vic", "viewer"))
    regressions.regression_acknowledge(regression=found, user=maintainer)
    found.refresh_from_db()
    assert found.acknowledged and found.acknowledged_by == maintainer and found.acknowledged_at is not None
    assert open_gauge("mlp", "v1/int8-dynamic") is None


def test_the_admin_lists_regressions_with_their_numbers_and_acknowledges_them(
        production: Production, make_user: Any) -> None:
    seed_nights(production.variants["int8-dynamic"], [0.001] * 5)
    nightly.nightly_run(night=NIGHT)
    found = Regression.objects.get()
    admin_user = make_user("root", superuser=True)
    client = Client()
    client.force_login(admin_user)
    page = client.get("/admin/modelhub/regression/").content.decode()
    assert "v1/int8-dynamic" in page and found.get_metric_display() in page and "0.001" in page
    assert "above the 5-night" in page
    answer = client.post("/admin/modelhub/regression/", {"action": "acknowledge", "_selected_action": [found.pk]},
                         follow=True)
    assert "acknowledged" in answer.content.decode()
    found.refresh_from_db()
    assert found.acknowledged and found.acknowledged_by == admin_user


# --- the webhook -----------------------------------------------------------------------------


def test_the_webhook_retries_a_failing_receiver_then_delivers(hook: Hook) -> None:
    hook.answers.extend([503, 500])
    waits: list[float] = []
    assert webhooks.post_signed(hook.url, {"a": 1}, secret=SECRET, event="test", sleep=waits.append)
    assert len(hook.received) == 3 and waits == [0.5, 1.0]
    assert all(headers["x-modelhub-signature"] == webhooks.sign(body, SECRET) for headers, body in hook.received)


def test_the_webhook_gives_up_quietly_on_a_refusal_or_a_dead_receiver(hook: Hook) -> None:
    hook.answers.append(400)
    assert not webhooks.post_signed(hook.url, {"a": 1}, secret=SECRET, event="test", sleep=lambda s: None)
    assert len(hook.received) == 1  # a 4xx will not change by trying again
    with socketless_port() as port:
        waits: list[float] = []
        assert not webhooks.post_signed(f"http://127.0.0.1:{port}/", {"a": 1}, secret=SECRET, event="test",
                                        sleep=waits.append)
    assert waits == [0.5, 1.0]


class socketless_port:  # noqa: N801 - reads as a phrase in a with statement
    """A 127.0.0.1 port that nothing listens on, for as long as the block runs."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        return self.sock.getsockname()[1]

    def __exit__(self, *args: Any) -> None:
        self.sock.close()


# --- REST API, command, task -----------------------------------------------------------------


def test_the_api_lists_regressions_and_a_variant_s_history_per_night(production: Production, api: Any) -> None:
    dynamic = production.variants["int8-dynamic"]
    seed_nights(dynamic, [0.001] * 5)
    nightly.nightly_run(night=NIGHT)
    regressions = api.get("/api/v1/models/mlp/regressions").json()
    assert [(r["variant"], r["version"], r["metric"], r["role"], r["acknowledged"]) for r in regressions] == [
        ("int8-dynamic", 1, "p50_ms", "production", False)]
    assert regressions[0]["baseline"] == pytest.approx(0.001) and regressions[0]["threshold"] == pytest.approx(0.0011)
    history = api.get("/api/v1/models/mlp/versions/1/variants/int8-dynamic/history").json()
    nights = history["nights"]
    assert [n["night"] for n in nights] == [(NIGHT - timedelta(days=d)).isoformat() for d in range(5, -1, -1)]
    assert nights[-1]["p95_ms"] == production.nightly("int8-dynamic").p95_ms
    assert {"p50_ms", "p99_ms", "passed", "fingerprint_hash"} <= set(nights[-1])
    assert nights[-1]["regressions"] == ["p50_ms"] and nights[0]["regressions"] == []
    assert len(api.get("/api/v1/models/mlp/versions/1/variants/int8-dynamic/history?nights=2").json()["nights"]) == 2
    assert api.get("/api/v1/models/mlp/versions/1/variants/nope/history").status_code == 404


def test_the_rebenchmark_command_runs_the_night_with_a_progress_bar(production: Production) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("rebenchmark", "--model", "mlp", "--night", NIGHT.isoformat(), stdout=out, stderr=err)
    assert "night 2025-06-10: 3 measured, 0 failed, 0 skipped, 0 new regression(s)" in out.getvalue()
    assert BenchmarkResult.objects.filter(kind="nightly", night=NIGHT).count() == 3
    with pytest.raises(CommandError, match="No model named 'nope'"):
        call_command("rebenchmark", "--model", "nope", stdout=out, stderr=err)


def test_the_task_runs_the_night_it_is_given(production: Production) -> None:
    from modelhub import tasks

    result = tasks.nightly_rebenchmark_task.delay(night=NIGHT.isoformat(), model="mlp").get()
    assert result["night"] == NIGHT.isoformat() and result["measured"] == 3
