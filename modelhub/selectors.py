"""Read-side queries used by views, the admin, commands and tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Max, Q, QuerySet

from modelhub.errors import NotFound
from modelhub.models import (
    BenchmarkResult,
    Deployment,
    ModelVersion,
    OptimizationJob,
    PromotionEvent,
    RegisteredModel,
    Regression,
    Variant,
)
from workers import planner


def model_visible_to(user: Any) -> QuerySet[RegisteredModel]:
    """Models the user may see: all for superusers; else owned ones and their teams' ones."""
    if not getattr(user, "is_authenticated", False):
        return RegisteredModel.objects.none()
    if user.is_superuser:
        return RegisteredModel.objects.all()
    return RegisteredModel.objects.filter(Q(owner=user) | Q(team__in=user.groups.all())).distinct()


def model_get(*, user: Any, name: str) -> RegisteredModel:
    """A visible model by name, else NotFound (the same answer whether it exists or not)."""
    model = model_visible_to(user).filter(name=name).first()
    if model is None:
        raise NotFound(f"No model named {name!r}.")
    return model


def version_get(*, model: RegisteredModel, number: int) -> ModelVersion:
    version = model.versions.filter(number=number).first()
    if version is None:
        raise NotFound(f"Model {model.name} has no version {number}.")
    return version


def variant_get(*, version: ModelVersion, name: str) -> Variant:
    variant = version.variants.filter(name=name).first()
    if variant is None:
        raise NotFound(f"Version {version.number} of {version.model.name} has no variant {name!r}.")
    return variant


def job_get(*, user: Any, job_id: int) -> OptimizationJob:
    """A job of a model the user can see, else NotFound."""
    job = OptimizationJob.objects.filter(pk=job_id, version__model__in=model_visible_to(user)).first()
    if job is None:
        raise NotFound(f"No job {job_id}.")
    return job


def model_task(version: ModelVersion) -> str:
    """The declared task of the version's model, or "auto"."""
    return version.model.task


def default_plan_for(version: ModelVersion, profile: Any = None) -> list[planner.PlanStep]:
    """The steps "Optimize" runs for this version under ``profile`` when no plan is given: the search,
    under the profile's budget (``search_budget_s``), for its target (PlanError when nothing applies)."""
    return planner.default_plan(target=profile.target if profile else "cpu", source_format=version.format,
                                budget_s=getattr(profile, "search_budget_s", None) if profile else None)


def deployment_variant(*, model: RegisteredModel, alias: str = "production") -> Variant | None:
    deployment = Deployment.objects.filter(model=model, alias=alias).select_related("variant__version").first()
    return deployment.variant if deployment else None


def promotion_history(*, model: RegisteredModel) -> QuerySet[PromotionEvent]:
    return model.promotions.select_related("from_variant__version", "to_variant__version", "by", "judgment")



def earlier_variants(*, model: RegisteredModel, alias: str = "production") -> list[Variant]:
    """Every variant that served ``model@alias`` before, most recent first, without the current one."""
    current = deployment_variant(model=model, alias=alias)
    seen = {current.pk} if current else set()
    earlier = []
    for event in model.promotions.filter(alias=alias).select_related("to_variant__version", "from_variant__version"):
        for variant in (event.from_variant, event.to_variant):
            if variant is not None and variant.pk not in seen and variant.status == Variant.Status.READY:
                seen.add(variant.pk)
                earlier.append(variant)
    return earlier


# --- the fallback chain of a deployment ------------------------------------------------------

PRIMARY, ANCESTOR, PREVIOUS = "primary", "ancestor", "previous"
MAX_LINEAGE = 50  # a lineage is a short tree walk; the cap guards against a bad row, not real depth


@dataclass(frozen=True)
class ChainLink:
    """One variant of a deployment's chain and why it is there: primary, ancestor or previous."""

    variant: Variant
    role: str


def deployment_chain(*, variant: Variant, alias: str | None = None) -> list[ChainLink]:
    """The variants that may stand in for ``variant``, best first: the variant itself, its
    ancestors up to the original (nearest first: the fp32 parents of a quantized or pruned
    variant), then, for an alias, the variant it replaced there when it was last promoted.
    READY variants only, each once. Serving's fallback chain and the nightly re-benchmark both
    start from this list and keep what they can use of it."""
    links = [ChainLink(variant, PRIMARY)] + [ChainLink(v, ANCESTOR) for v in _lineage(variant)]
    replaced = _replaced(variant, alias) if alias is not None else None
    if replaced is not None:
        links.append(ChainLink(replaced, PREVIOUS))
    seen: set[int] = set()
    chain = []
    for link in links:
        if link.variant.pk not in seen and link.variant.status == Variant.Status.READY:
            seen.add(link.variant.pk)
            chain.append(link)
    return chain


def _chain_variants() -> QuerySet[Variant]:
    return Variant.objects.select_related("version__model", "job__profile")


def _lineage(variant: Variant) -> list[Variant]:
    """The variant's parent, grandparent ... up to the original."""
    lineage: list[Variant] = []
    seen = {variant.pk}
    parent_id = variant.parent_id
    while parent_id is not None and parent_id not in seen and len(lineage) < MAX_LINEAGE:
        parent = _chain_variants().filter(pk=parent_id).first()
        if parent is None:
            break
        seen.add(parent_id)
        lineage.append(parent)
        parent_id = parent.parent_id
    return lineage


def _replaced(variant: Variant, alias: str) -> Variant | None:
    """The variant that served ``alias`` before ``variant`` was last promoted to it."""
    previous_id = (PromotionEvent.objects.filter(model_id=variant.version.model_id, alias=alias, to_variant=variant)
                   .values_list("from_variant_id", flat=True).first())
    return _chain_variants().filter(pk=previous_id).first() if previous_id else None


def version_chosen_variant(version: ModelVersion) -> Variant | None:
    """The variant that speaks for a version (``?version=N``, compare pages): the one an approver
    last promoted from it to any alias, else its own original ONNX, else its ONNX export, else the
    original. Never "whatever the newest job liked"."""
    ready = version.variants.filter(status=Variant.Status.READY)
    event = PromotionEvent.objects.filter(to_variant__in=ready).select_related("to_variant").order_by("-at", "-id")
    chosen = event.first()
    if chosen is not None:
        return chosen.to_variant
    return (ready.filter(name=Variant.ORIGINAL, format="onnx").first()
            or ready.filter(pass_name="export", format="onnx").order_by("created_at", "id").first()
            or ready.filter(name=Variant.ORIGINAL).first())


def judgment_jobs(*, version: ModelVersion) -> QuerySet[OptimizationJob]:
    """The version's runs of record, newest first: succeeded optimize and benchmark jobs."""
    return version.jobs.filter(status=OptimizationJob.Status.SUCCEEDED).select_related("profile")


def variant_rows(*, version: ModelVersion, job: OptimizationJob | None = None) -> list[dict[str, Any]]:
    """The variant table of a version under one judgment: lineage and size of every variant, and the
    figures that ``job`` measured (None for a variant it did not measure), each stamped with its run.
    Without ``job``: the latest succeeded job's. Nightly and other runs never mix in."""
    job = job or judgment_jobs(version=version).first()
    results = {r.variant_id: r for r in BenchmarkResult.objects.filter(job=job)} if job else {}
    rows = []
    for variant in version.variants.select_related("parent").order_by("created_at", "id"):
        result: BenchmarkResult | None = results.get(variant.pk)
        rows.append({
            "name": variant.name,
            "pass": variant.pass_name,
            "parent": variant.parent.name if variant.parent else None,
            "status": variant.status,
            "status_reason": variant.status_reason,
            "size_bytes": variant.size_bytes,
            "sha256": variant.sha256,
            "config": variant.config,
            "metrics": variant.metrics,
            "run": {"job": job.pk, "at": result.created_at, "kind": result.kind,
                    "profile": job.profile.name if job.profile else None} if result else None,
            "batch_size": result.batch_size if result else None,
            "statistic": result.statistic if result else None,
            "intervals": result.intervals if result else {},
            "p50_ms": result.p50_ms if result else None,
            "p95_ms": result.p95_ms if result else None,
            "p99_ms": result.p99_ms if result else None,
            "throughput": result.throughput if result else None,
            "throughput_batch": result.throughput_batch if result else None,
            "peak_memory_mb": result.peak_memory_mb if result else None,
            "accuracy": result.accuracy if result else {},
            "verdict": result.verdict if result else {},
            "passed": result.passed if result else None,
        })
    return rows


# --- nightly re-benchmarking ---------------------------------------------------------------


def variant_history(*, variant: Variant, nights: int = 90) -> list[dict[str, Any]]:
    """The variant's nightly measurements, oldest first: p50 / p95 / p99 per night, the verdict,
    the setup they were taken on, and the metrics of any regression raised that night."""
    rows = list(variant.results.filter(kind=BenchmarkResult.Kind.NIGHTLY, pending=False)
                .order_by("-night").values("night", "p50_ms", "p95_ms", "p99_ms", "passed", "batch_size",
                                           "fingerprint_hash")[:nights])
    raised: dict[Any, list[str]] = {}
    for night, metric in variant.regressions.values_list("night", "metric"):
        raised.setdefault(night, []).append(metric)
    return [{**row, "regressions": sorted(raised.get(row["night"], []))} for row in reversed(rows)]


def model_regressions(*, model: RegisteredModel, open_only: bool = False) -> QuerySet[Regression]:
    """Regressions of a model's variants, open ones first, newest first."""
    regressions = Regression.objects.filter(variant__version__model=model).select_related(
        "variant__version__model", "acknowledged_by")
    return regressions.filter(acknowledged=False) if open_only else regressions


def open_regression_counts() -> list[tuple[str, str, int]]:
    """(model name, variant label, open regressions) for every variant with at least one open."""
    rows = (Regression.objects.filter(acknowledged=False)
            .values_list("variant__version__model__name", "variant__version__number", "variant__name")
            .annotate(n=Count("id")).order_by())
    return [(model, f"v{number}/{name}", n) for model, number, name, n in rows]


def nightly_last_result_at() -> Any:
    """When the newest finished nightly measurement was recorded (None before the first night)."""
    return (BenchmarkResult.objects.filter(kind=BenchmarkResult.Kind.NIGHTLY, pending=False)
            .aggregate(at=Max("created_at"))["at"])
