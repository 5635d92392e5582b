"""The service that runs a claimed job: the plan's passes, then the evaluation of every variant.

It is the only code that turns pure-engine results (files and numbers) into registry rows.
Re-running a job after a crash is harmless: variants are unique on (version, pass, config of
source), so finished steps are reused, and the job's end is recorded by a conditional update.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from modelhub import artifacts, jobs, measurement, services
from modelhub.errors import ServiceError
from modelhub.models import BenchmarkResult, OptimizationJob, Variant
from workers import formats, isolation, planner
from workers.errors import EngineError
from workers.evaluation import advisor, bench, readiness, session_tuning
from workers.passes import base, get_pass, make_config
from workers.search import loop as search_loop
from workers.search import splits

log = logging.getLogger(__name__)
PLAN_SHARE = 60.0  # percent of the progress bar given to the passes; evaluation gets the rest


class JobCancelled(Exception):
    """A user asked to cancel the running job."""


@dataclass
class JobContext:
    """What a running job knows: its row, its scratch directory, data paths and variants by step."""

    job: OptimizationJob
    scratch: Path
    variants: dict[str, Variant] = field(default_factory=dict)
    deadline: float | None = None  # time.monotonic() at the task's soft time limit
    split: splits.Split | None = None  # the validation rows the search selected on / the verdict is given on
    search: dict[str, Any] | None = None  # the search's log, for job.result["search"]

    @property
    def version(self) -> Any:
        return self.job.version

    def data(self, purpose: str) -> Path | None:
        dataset = self.version.dataset(purpose)
        return artifacts.local_path(dataset.storage_key, dataset.sha256) if dataset else None

    def check_cancel(self) -> None:
        """Stop between steps when a user cancelled, or when the soft time limit has passed: Celery
        raises SoftTimeLimitExceeded only once, and a pass that catches every exception swallows it."""
        if OptimizationJob.objects.filter(pk=self.job.pk, cancel_requested=True).exists():
            raise JobCancelled
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise SoftTimeLimitExceeded


def job_run(*, job_id: int, worker: str, task_id: str = "", soft_limit_s: float | None = None) -> None:
    """Claim the job and run it to an end state (SUCCEEDED, FAILED with a reason, or CANCELLED).

    ``soft_limit_s``: the task's soft time limit; the job also stops at the first step boundary
    after it, in case a pass swallowed Celery's SoftTimeLimitExceeded.
    """
    job = jobs.job_claim(job_id=job_id, worker=worker, task_id=task_id)
    if job is None:
        return
    started = time.monotonic()
    limit = soft_limit_s or settings.CELERY_TASK_SOFT_TIME_LIMIT
    jobs.job_event(job=job, message=f"started on {worker} (attempt {job.attempts})", progress=0)
    try:
        with _lease_heartbeat(job), artifacts.scratch(f"job-{job.pk}") as scratch:
            context = JobContext(job=job, scratch=scratch, variants=_original_variants(job),
                                 deadline=started + limit if soft_limit_s else None)
            if job.kind == OptimizationJob.Kind.OPTIMIZE:
                _run_plan(context)
            result = _evaluate(context)
    except JobCancelled:
        jobs.job_finish(job=job, status=OptimizationJob.Status.CANCELLED, error="Cancelled by a user.")
        return
    except SoftTimeLimitExceeded:
        jobs.job_finish(job=job, status=OptimizationJob.Status.FAILED,
                        error=f"Stopped at the time limit ({limit:g} s); "
                              "run fewer passes or raise MODELHUB_TASK_SOFT_LIMIT_S.")
        return
    except (EngineError, ServiceError) as exc:  # input the engine or the registry refused, in words
        jobs.job_finish(job=job, status=OptimizationJob.Status.FAILED, error=str(exc))
        return
    result["wall_s"] = round(time.monotonic() - started, 2)
    jobs.job_event(job=job, message=f"finished in {result['wall_s']} s", progress=100)
    if jobs.job_finish(job=job, status=OptimizationJob.Status.SUCCEEDED, result=result):
        _auto_promote(job, result)


@contextmanager
def _lease_heartbeat(job: OptimizationJob) -> Iterator[None]:
    """Renew the job's lease from a thread while it runs. One pass (a long distillation) may outlast
    the lease, and the reconciler would then hand the job to a second worker while this one works on."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(jobs.LEASE_SECONDS / 4):
                try:
                    jobs.job_renew_lease(job_id=job.pk, owner=job.lease_owner)
                except DatabaseError as exc:  # a database blip: the next beat tries again
                    log.warning("could not renew the lease of job %s: %s", job.pk, exc)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"lease-job-{job.pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _original_variants(job: OptimizationJob) -> dict[str, Variant]:
    original = job.version.variants.get(name=Variant.ORIGINAL)
    return {Variant.ORIGINAL: original}


# --- the plan ------------------------------------------------------------------------------


def _run_plan(context: JobContext) -> None:
    steps = [planner.PlanStep.from_dict(step) for step in context.job.plan]
    for index, step in enumerate(steps):
        context.check_cancel()
        progress = PLAN_SHARE * index / max(1, len(steps))
        source = context.variants.get(step.source)
        if source is None or source.status != Variant.Status.READY:
            jobs.job_event(job=context.job, message=f"{step.name}: skipped, its source {step.source!r} "
                           "did not produce a model", level="warning", progress=progress, step=step.name)
            continue
        jobs.job_event(job=context.job, message=f"{step.name}: running {step.pass_name}", progress=progress,
                       step=step.name)
        # The runner names the output directory: a step's name is the client's and never a path.
        if step.pass_name == planner.SEARCH:
            _run_search(context, step, source, context.scratch / f"step-{index}")
        else:
            context.variants[step.name] = _run_step(context, step, source, context.scratch / f"step-{index}")


# --- the search ----------------------------------------------------------------------------


def _search_budget(context: JobContext, step: planner.PlanStep) -> float:
    """The plan's budget, else the job's option, else the profile's; within what the time limit leaves
    (the final evaluation needs the rest)."""
    profile = context.job.profile
    budget = float(step.options.get("budget_s") or context.job.options.get("search_budget_s")
                   or (profile.search_budget_s if profile is not None else planner.DEFAULT_SEARCH_BUDGET_S))
    if context.deadline is not None:
        budget = min(budget, max(1.0, 0.6 * (context.deadline - time.monotonic())))
    return budget


def _search_config(context: JobContext, step: planner.PlanStep) -> search_loop.SearchConfig:
    profile = context.job.profile
    validation = context.data("validation")
    if validation is not None:
        context.split = splits.write_splits(validation, context.scratch / "splits")
    selection = context.split.selection if context.split else None
    # Static int8 calibrates on the calibration set, else on the selection rows (never the held-out ones).
    return search_loop.SearchConfig(spec=profile.to_spec() if profile else readiness.ProfileSpec(),
                                    budget_s=_search_budget(context, step), task=context.version.model.task,
                                    validation=selection, calibration=context.data("calibration") or selection,
                                    training=context.data("training"))


def _run_search(context: JobContext, step: planner.PlanStep, source: Variant, dst: Path) -> None:
    """Run the search from ``source`` and store its kept candidates as variants, lineage included."""
    config = _search_config(context, step)
    hooks = search_loop.Hooks(run_pass=lambda name, src, out, cfg: _run_pass(context, name, src, out, cfg),
                              event=lambda message: jobs.job_event(job=context.job, message=message, step=step.name),
                              check=context.check_cancel)
    reference = measurement.reference_of(context.version)
    result = search_loop.run_search(artifacts.local_model(source), artifacts.local_model(reference or source), dst,
                                    config, hooks, root_name=step.source)
    for built in result.kept:
        parent = context.variants[built.parent]
        kept = planner.PlanStep(built.name, built.recipe.pass_name, dict(built.recipe.options), built.parent)
        key = base.config_hash(kept.pass_name, {**built.config_json, "source": parent.sha256})
        context.variants[built.name] = _save_variant(context, kept, parent, key, built.config_json, result=built.result)
    context.search = {**result.to_dict(), "split": context.split.to_dict() if context.split else None}
    jobs.job_event(job=context.job, message=f"{step.name}: {result.log.to_dict()['tried']} candidates in "
                   f"{result.log.spent_s:.1f} s of {config.budget_s:g} s; picked {result.best or 'none that passes'}",
                   step=step.name, duration_s=round(result.log.spent_s, 2))


def _step_options(context: JobContext, step: planner.PlanStep) -> dict[str, Any]:
    options = dict(step.options)
    profile = context.job.profile
    if step.pass_name == "quantize_search" and profile is not None:
        # The accuracy-aware search aims at the job's own profile unless told otherwise.
        options.setdefault("metric", profile.accuracy_metric or "auto")
        options.setdefault("max_drop", profile.max_accuracy_drop)
        options.setdefault("min_value", profile.min_accuracy)
    # A pass checks its output on the job's own validation rows; a path in a client's options is never read.
    options.pop("check_data", None)
    validation = context.data("validation")
    if validation is not None and "check_data" in get_pass(step.pass_name).Config.__dataclass_fields__:
        options["check_data"] = str(validation)
    return options


def _run_step(context: JobContext, step: planner.PlanStep, source: Variant, dst: Path) -> Variant:
    config = make_config(step.pass_name, _step_options(context, step), validation_data=context.data("validation"),
                         calibration_data=context.data("calibration"), train_data=context.data("training"))
    config_json = base.config_to_json(config)
    key = base.config_hash(step.pass_name, {**config_json, "source": source.sha256})
    existing = context.version.variants.filter(pass_name=step.pass_name, config_hash=key).first()
    if existing is not None and existing.status == Variant.Status.READY:
        jobs.job_event(job=context.job, message=f"{step.name}: reusing variant {existing.name}")
        return existing
    started = time.monotonic()
    try:
        result = _run_pass(context, step.pass_name, artifacts.local_model(source), dst, config)
    except base.PassError as exc:
        context.check_cancel()  # a pass that turned the time limit into its own error is not a failed variant
        jobs.job_event(job=context.job, message=f"{step.name}: failed: {exc}", level="error")
        return _save_variant(context, step, source, key, config_json, status=Variant.Status.FAILED, reason=str(exc))
    duration = round(time.monotonic() - started, 3)
    variant = _save_variant(context, step, source, key, config_json, result=result)
    jobs.job_event(job=context.job, message=f"{step.name}: {variant.size_bytes / 1e6:.2f} MB in {duration} s",
                   duration_s=duration)
    return variant


def _run_pass(context: JobContext, pass_name: str, src: Path, dst: Path, config: Any) -> base.PassResult:
    """Run one pass; one that would load TorchScript (code) runs in the sandboxed child, never here."""
    if not isolation.needs_isolation(pass_name, src):
        return get_pass(pass_name).run(src, dst, config)
    # The child stops at the job's deadline; with none, Celery's soft limit interrupts the wait (and kills it).
    wall = context.deadline - time.monotonic() if context.deadline is not None else settings.CELERY_TASK_SOFT_TIME_LIMIT
    return isolation.run_isolated(pass_name, src, dst, config, memory_mb=settings.MODELHUB_PASS_MEMORY_MB,
                                 wall_seconds=wall, sandbox=settings.MODELHUB_SANDBOX != "off")


def _save_variant(context: JobContext, step: planner.PlanStep, source: Variant, key: str, config: dict[str, Any], *,
                  result: base.PassResult | None = None, status: str = Variant.Status.READY,
                  reason: str = "") -> Variant:
    fields: dict[str, Any] = {"parent": source, "config": config, "status": status, "status_reason": reason,
                              "job": context.job}
    if result is not None:
        sha = formats.sha256_file(result.artifact)
        stored = artifacts.save_file(result.artifact, f"variants/{sha}/model.onnx")
        size = result.artifact.stat().st_size
        fields.update(storage_key=stored, sha256=sha, size_bytes=size, metrics=measurement.jsonable(result.metrics),
                      notes=list(result.notes), files=[{"path": "model.onnx", "key": stored, "sha256": sha,
                                                       "size": size}])
    name = step.name
    if context.version.variants.filter(name=name).exclude(pass_name=step.pass_name, config_hash=key).exists():
        name = f"{step.name}-{key[:6]}"  # the same step name with other options in an earlier job
    try:
        with transaction.atomic():
            variant, _ = Variant.objects.update_or_create(version=context.version, pass_name=step.pass_name,
                                                          config_hash=key, defaults={"name": name, **fields})
    except IntegrityError:
        variant = Variant.objects.get(version=context.version, pass_name=step.pass_name, config_hash=key)
    return variant


# --- evaluation ----------------------------------------------------------------------------


def _evaluate(context: JobContext) -> dict[str, Any]:
    """Benchmark every ONNX variant of the job together in interleaved rounds, check accuracy,
    judge each under the job's profile (or measure without judging), rank with ties, advise."""
    job = context.job
    variants = _variants_to_evaluate(context)
    setup = measurement.evaluation_setup(context.version, job.profile,
                                         validation=context.split.holdout if context.split else None)
    config = measurement.bench_config(job.options.get("bench") or {}, setup.spec)
    BenchmarkResult.objects.filter(job=job).delete()  # a re-run after a crash measures afresh, once
    context.check_cancel()
    names = ", ".join(v.name for v in variants)
    jobs.job_event(job=job, message=f"measuring {names} together in interleaved rounds", step="benchmark",
                   progress=PLAN_SHARE)
    measured, errors = measurement.measure_variants(variants, setup, config)
    for variant in variants:
        if variant.pk in errors:
            jobs.job_event(job=job, message=f"{variant.name}: benchmark failed: {errors[variant.pk]}", level="error")
    if variants and not measured:  # nothing measured is a failure with its reasons, never a success
        reasons = "; ".join(f"{v.name}: {errors.get(v.pk, 'no result')}" for v in variants)
        raise bench.BenchError(f"No variant could be measured ({reasons}). Check that each variant's files load "
                               "in onnxruntime on this worker and fit its memory, then run the job again.")
    for variant in variants:
        if variant.pk in measured:
            _save_result(job, variant, setup, measured[variant.pk])
    result = _judgment(job, setup, variants, measured)
    result["judgment"]["rows"] = (context.split.describe() if context.split
                                  else "all validation rows" if setup.validation else "no validation rows")
    if context.search is not None:
        result["search"] = context.search
        result["session_tuning"] = _tune(context, setup, result.get("best"))
    return result


def _tune(context: JobContext, setup: measurement.EvaluationSetup, best: str | None) -> dict[str, Any] | None:
    """Session options for the chosen variant at the profile's batch size, kept only when faster beyond noise."""
    variant = next((v for v in context.variants.values() if v.name == best), None)
    if variant is None:
        return None
    context.check_cancel()
    spec = setup.spec
    try:
        tuned = session_tuning.tune(artifacts.local_model(variant), batch_size=spec.batch_size, threads=spec.threads,
                                    statistic=spec.statistic, data=setup.validation)
    except EngineError as exc:
        return {"error": str(exc)}
    Variant.objects.filter(pk=variant.pk).update(session_options=tuned.chosen.to_dict())
    jobs.job_event(job=context.job, message=f"session options for {variant.name}: {tuned.describe()}")
    return tuned.to_dict()


def _judgment(job: OptimizationJob, setup: measurement.EvaluationSetup, variants: list[Variant],
              measured: dict[int, measurement.Measurement]) -> dict[str, Any]:
    """The job's result: one judgment (job, profile, fingerprint, time) with its ranking and advice."""
    reports = {pk: m.report for pk, m in measured.items()}
    reference = setup.reference
    candidates = [_candidate(v, setup, measured[v.pk], reports) for v in variants if v.pk in measured]
    ranking = planner.rank(candidates)
    fingerprint = next(iter(reports.values())).fingerprint if reports else {}
    advice = advisor.advise(candidates, reference=reference.name if reference else Variant.ORIGINAL,
                            target=setup.spec.target, fingerprint=fingerprint, ranking=ranking,
                            failed={v.name: v.pass_name for v in job.variants.filter(status=Variant.Status.FAILED)})
    return {"judgment": {"job": job.pk, "profile": job.profile.name if job.profile else None,
                         "spec": setup.spec.to_dict() if setup.judged else None, "judged": setup.judged,
                         "statistic": setup.spec.statistic, "batch_size": setup.spec.batch_size,
                         "fingerprint_hash": measurement.fingerprint_hash(fingerprint) if fingerprint else "",
                         "at": timezone.now().isoformat()},
            "best": ranking.best, "best_effort": ranking.best_effort, "ranking": ranking.to_dict(),
            "verdicts": {v.name: measured[v.pk].verdict.to_dict() for v in variants if v.pk in measured},
            "comparisons": {c.name: c.speedup for c in candidates if c.speedup},
            "advice": advice, "task": setup.task}


def _variants_to_evaluate(context: JobContext) -> list[Variant]:
    if context.job.kind == OptimizationJob.Kind.BENCHMARK:
        chosen = list(context.version.variants.filter(pk__in=context.job.options.get("variants", [])))
    else:
        chosen = list(context.variants.values())
    return [v for v in chosen if v.status == Variant.Status.READY and v.format == "onnx"]


def _save_result(job: OptimizationJob, variant: Variant, setup: measurement.EvaluationSetup,
                 measured: measurement.Measurement) -> None:
    kind = BenchmarkResult.Kind.JOB if job.kind == OptimizationJob.Kind.OPTIMIZE else BenchmarkResult.Kind.ON_DEMAND
    BenchmarkResult.objects.create(variant=variant, job=job, profile=job.profile, kind=kind,
                                   **measurement.result_fields(variant, setup, measured))


def _depth(variant: Variant) -> int:
    """Passes between the upload and this variant (the original and a TorchScript's export count 0)."""
    depth, current = 0, variant
    while current.parent_id is not None and current.pass_name != "export":
        depth, current = depth + 1, current.parent
    return depth


def _candidate(variant: Variant, setup: measurement.EvaluationSetup, measured: measurement.Measurement,
               reports: dict[int, Any]) -> planner.Candidate:
    reference = reports.get(setup.reference.pk) if setup.reference else None
    return planner.make_candidate(name=variant.name, parent=variant.parent.name if variant.parent else None,
                                  pass_name=variant.pass_name, profile=setup.spec, bench=measured.report,
                                  accuracy=measured.accuracy, verdict=measured.verdict,
                                  reference_accuracy=setup.reference_accuracy, options=variant.config,
                                  reference_bench=reference, parent_bench=reports.get(variant.parent_id),
                                  depth=_depth(variant))


def _auto_promote(job: OptimizationJob, result: dict[str, Any]) -> None:
    if not job.options.get("auto_promote") or not result.get("best"):
        return
    variant = job.version.variants.get(name=result["best"])
    try:
        services.deployment_promote(model=job.version.model, variant=variant, by=job.created_by,
                                    reason=f"auto-promoted as the best passing variant of job {job.pk}")
    except ServiceError as exc:
        log.warning("auto-promotion of %s refused: %s", variant, exc)
        OptimizationJob.objects.filter(pk=job.pk).update(result={**result, "auto_promotion": f"refused: {exc}"})
