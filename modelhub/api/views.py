"""Management REST API: validate input, call one service or selector, serialize the answer."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from modelhub import bundles, gate, jobs, selectors, services
from modelhub.api import schema as sc
from modelhub.api import serializers as s
from modelhub.errors import Invalid, NotFound, ServiceError
from modelhub.models import ModelVersion, ReadinessProfile


class ServiceAPIView(APIView):
    """An APIView that answers a ServiceError with its status and a JSON reason."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, ServiceError):
            return Response({"error": exc.message, **exc.details}, status=exc.status, headers=exc.headers or None)
        return super().handle_exception(exc)

    def valid(self, serializer_class: type, request: Request) -> dict[str, Any]:
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def version(self, request: Request, name: str, number: int) -> ModelVersion:
        model = selectors.model_get(user=request.user, name=name)
        return selectors.version_get(model=model, number=number)


class ModelListView(ServiceAPIView):
    serializer_class = s.ModelSerializer
    @extend_schema(responses=sc.answers({200: s.ModelSerializer(many=True)}, 401, 403))
    def get(self, request: Request) -> Response:
        models = selectors.model_visible_to(request.user).select_related("owner")
        return Response(s.ModelSerializer(models, many=True).data)

    @extend_schema(request=s.ModelCreateSerializer, responses=sc.answers({201: s.ModelSerializer}, 400, 401, 403, 409))
    def post(self, request: Request) -> Response:
        model = services.model_create(owner=request.user, **self.valid(s.ModelCreateSerializer, request))
        return Response(s.ModelSerializer(model).data, status=status.HTTP_201_CREATED)


class ModelDetailView(ServiceAPIView):
    serializer_class = s.ModelSerializer
    @extend_schema(parameters=[sc.NAME], responses=sc.answers({200: s.ModelSerializer}, *sc.READ))
    def get(self, request: Request, name: str) -> Response:
        return Response(s.ModelSerializer(selectors.model_get(user=request.user, name=name)).data)


class VersionListView(ServiceAPIView):
    serializer_class = s.VersionSerializer
    parser_classes = [MultiPartParser]

    @extend_schema(parameters=[sc.NAME], responses=sc.answers({200: s.VersionSerializer(many=True)}, *sc.READ))
    def get(self, request: Request, name: str) -> Response:
        model = selectors.model_get(user=request.user, name=name)
        return Response(s.VersionSerializer(model.versions.all(), many=True).data)

    @extend_schema(parameters=[sc.NAME], request={"multipart/form-data": s.UploadSerializer}, responses=sc.answers(
        {200: s.VersionSerializer, 201: s.VersionSerializer, 202: s.VersionSerializer}, *sc.WRITE, 413, 415, 503))
    def post(self, request: Request, name: str) -> Response:
        model = selectors.model_get(user=request.user, name=name)
        upload = self.valid(s.UploadSerializer, request)["file"]
        version, created = services.version_upload(model=model, stream=upload, filename=upload.name,
                                                   user=request.user)
        version.refresh_from_db()
        body = s.VersionSerializer(version).data
        if version.status == ModelVersion.Status.FAILED:
            return Response({"error": version.status_reason, **body}, status=status.HTTP_400_BAD_REQUEST)
        if not created:
            return Response(body, status=status.HTTP_200_OK)
        ready = version.status == ModelVersion.Status.READY
        return Response(body, status=status.HTTP_201_CREATED if ready else status.HTTP_202_ACCEPTED)


class VersionDetailView(ServiceAPIView):
    serializer_class = s.VersionSerializer
    @extend_schema(parameters=[sc.NAME, sc.NUMBER], responses=sc.answers({200: s.VersionDetailSerializer}, *sc.READ))
    def get(self, request: Request, name: str, number: int) -> Response:
        version = self.version(request, name, number)
        body = s.VersionSerializer(version).data
        body["datasets"] = s.DatasetSerializer(version.datasets.all(), many=True).data
        body["variants"] = s.VariantSerializer(version.variants.select_related("parent"), many=True).data
        return Response(body)


class VersionAnnotationsView(ServiceAPIView):
    """A version's notes, tags and source: an action, like promote (no route takes a partial update
    of a row), which sets only these three."""

    serializer_class = s.VersionSerializer
    parser_classes = [JSONParser]

    @extend_schema(parameters=[sc.NAME, sc.NUMBER], request=s.VersionAnnotateSerializer,
                   responses=sc.answers({200: s.VersionSerializer}, *sc.WRITE, 415))
    def post(self, request: Request, name: str, number: int) -> Response:
        """Set the version's notes, tags or source (maintainers); what is left out stays as it is."""
        version = self.version(request, name, number)
        data = self.valid(s.VersionAnnotateSerializer, request)
        version = services.version_annotate(version=version, by=request.user, **data)
        return Response(s.VersionSerializer(version).data)


class DatasetListView(ServiceAPIView):
    serializer_class = s.DatasetSerializer
    parser_classes = [MultiPartParser]

    @extend_schema(parameters=[sc.NAME, sc.NUMBER], responses=sc.answers({200: s.DatasetSerializer(many=True)}, *sc.READ))
    def get(self, request: Request, name: str, number: int) -> Response:
        return Response(s.DatasetSerializer(self.version(request, name, number).datasets.all(), many=True).data)

    @extend_schema(parameters=[sc.NAME, sc.NUMBER], request={"multipart/form-data": s.DatasetUploadSerializer},
                   responses=sc.answers({201: s.DatasetSerializer}, *sc.WRITE, 413, 415, 503))
    def post(self, request: Request, name: str, number: int) -> Response:
        version = self.version(request, name, number)
        data = self.valid(s.DatasetUploadSerializer, request)
        dataset = services.dataset_upload(version=version, purpose=data["purpose"], stream=data["file"],
                                          filename=data["file"].name, user=request.user)
        return Response(s.DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


class ResultsView(ServiceAPIView):
    """The variants of one judgment (``?job=N``, default: the latest succeeded job), every row
    stamped with its run, and the judgment's ranking (statistic, batch size, ties) and advice."""

    serializer_class = s.VariantSerializer

    @extend_schema(parameters=[sc.NAME, sc.NUMBER, sc.JOB], responses=sc.answers({200: s.ResultsSerializer}, 400, *sc.READ))
    def get(self, request: Request, name: str, number: int) -> Response:
        version = self.version(request, name, number)
        judged = selectors.judgment_jobs(version=version)
        job = judged.filter(pk=_job_id(request)).first() if "job" in request.query_params else judged.first()
        if "job" in request.query_params and job is None:
            raise NotFound(f"Version {number} of {name} has no succeeded job {request.query_params['job']}.")
        result = job.result if job else {}
        ranking = result.get("ranking", {})
        return Response({
            "judgment": result.get("judgment"), "job": job.pk if job else None,
            "judgments": [{"job": j.pk, "kind": j.kind, "profile": j.profile.name if j.profile else None,
                           "finished_at": j.finished_at} for j in judged[:50]],
            "statistic": ranking.get("statistic"), "batch_size": ranking.get("batch_size"),
            "variants": selectors.variant_rows(version=version, job=job),
            "best": result.get("best"), "best_effort": result.get("best_effort"), "ties": ranking.get("ties", {}),
            "ordered": ranking.get("ordered", []), "pareto": ranking.get("pareto", []),
            "comparisons": result.get("comparisons", {}), "advice": result.get("advice", []),
        })


def _job_id(request: Request) -> int:
    try:
        return int(request.query_params["job"])
    except ValueError:
        raise Invalid("job must be a job id (an integer).") from None


def _profile_named(data: dict[str, Any], version: ModelVersion) -> ReadinessProfile | None:
    """The profile a request names; omitted: production's governing profile; null: none."""
    if "profile" not in data:
        return gate.governing_profile(model=version.model)
    if not data["profile"]:
        return None
    profile = ReadinessProfile.objects.filter(name=data["profile"]).first()
    if profile is None:
        raise NotFound(f"No readiness profile named {data['profile']!r}.")
    return profile


def _job_answer(job: Any) -> Response:
    """202 for a job just queued; 200 with the same job when an identical one was already active."""
    reused = job.reused
    job.refresh_from_db()
    return Response(s.JobSerializer(job).data, status=status.HTTP_200_OK if reused else status.HTTP_202_ACCEPTED)


class OptimizeView(ServiceAPIView):
    serializer_class = s.JobSerializer
    parser_classes = [JSONParser]

    @extend_schema(parameters=[sc.NAME, sc.NUMBER], request=s.OptimizeSerializer, responses=sc.answers(
        {200: s.JobSerializer, 202: s.JobSerializer}, *sc.WRITE, 415, 429, 503))
    def post(self, request: Request, name: str, number: int) -> Response:
        version = self.version(request, name, number)
        data = self.valid(s.OptimizeSerializer, request)
        profile = _profile_named(data, version)
        job = services.optimization_request(version=version, user=request.user, profile=profile,
                                            plan=data.get("plan"), auto_promote=data["auto_promote"])
        return _job_answer(job)


class VariantBundleView(ServiceAPIView):
    serializer_class = s.VariantSerializer
    @extend_schema(parameters=[sc.NAME, sc.NUMBER, sc.VARIANT], responses=sc.answers({200: sc.BUNDLE}, *sc.READ, 409, 503))
    def get(self, request: Request, name: str, number: int, variant: str) -> FileResponse:
        version = self.version(request, name, number)
        target = selectors.variant_get(version=version, name=variant)
        return bundles.bundle_response(target)


class VariantBenchmarkView(ServiceAPIView):
    serializer_class = s.JobSerializer
    @extend_schema(parameters=[sc.NAME, sc.NUMBER, sc.VARIANT], request=s.BenchmarkRequestSerializer,
                   responses=sc.answers({200: s.JobSerializer, 202: s.JobSerializer}, *sc.WRITE, 415, 429, 503))
    def post(self, request: Request, name: str, number: int, variant: str) -> Response:
        version = self.version(request, name, number)
        target = selectors.variant_get(version=version, name=variant)
        profile = _profile_named(self.valid(s.BenchmarkRequestSerializer, request), version)
        job = services.benchmark_request(variant=target, user=request.user, profile=profile)
        return _job_answer(job)


class JobDetailView(ServiceAPIView):
    serializer_class = s.JobSerializer
    @extend_schema(responses=sc.answers({200: s.JobSerializer}, *sc.READ))
    def get(self, request: Request, job_id: int) -> Response:
        return Response(s.JobSerializer(selectors.job_get(user=request.user, job_id=job_id)).data)


class JobCancelView(ServiceAPIView):
    serializer_class = s.JobSerializer
    @extend_schema(request=None, responses=sc.answers({200: s.JobSerializer}, 400, *sc.READ, 409))
    def post(self, request: Request, job_id: int) -> Response:
        job = jobs.job_cancel(job=selectors.job_get(user=request.user, job_id=job_id), user=request.user)
        return Response(s.JobSerializer(job).data)


class PromoteView(ServiceAPIView):
    serializer_class = s.PromotionSerializer
    parser_classes = [JSONParser]

    @extend_schema(parameters=[sc.NAME], request=s.PromoteSerializer, responses=sc.answers({201: s.PromotionSerializer}, *sc.WRITE, 415))
    def post(self, request: Request, name: str) -> Response:
        model = selectors.model_get(user=request.user, name=name)
        data = self.valid(s.PromoteSerializer, request)
        version = selectors.version_get(model=model, number=data["version"])
        variant = selectors.variant_get(version=version, name=data["variant"])
        event = services.deployment_promote(model=model, variant=variant, by=request.user, alias=data["alias"],
                                            reason=data["reason"], force=data["force"])
        return Response(s.PromotionSerializer(event).data, status=status.HTTP_201_CREATED)


class RollbackView(ServiceAPIView):
    serializer_class = s.PromotionSerializer
    parser_classes = [JSONParser]

    @extend_schema(parameters=[sc.NAME], request=s.RollbackSerializer, responses=sc.answers({201: s.PromotionSerializer}, *sc.WRITE, 415))
    def post(self, request: Request, name: str) -> Response:
        model = selectors.model_get(user=request.user, name=name)
        data = self.valid(s.RollbackSerializer, request)
        event = services.deployment_rollback(model=model, by=request.user, alias=data["alias"], reason=data["reason"],
                                             force=data["force"])
        return Response(s.PromotionSerializer(event).data, status=status.HTTP_201_CREATED)


class GoverningProfileView(ServiceAPIView):
    """The readiness profile governing each alias of a model, and its audited changes (maintainers set it)."""

    serializer_class = s.GoverningProfileSerializer
    parser_classes = [JSONParser]

    @extend_schema(parameters=[sc.NAME], responses=sc.answers({200: s.GoverningAnswerSerializer}, *sc.READ))
    def get(self, request: Request, name: str) -> Response:
        model = selectors.model_get(user=request.user, name=name)
        governing = {row.alias: row.profile.name for row in model.governing_profiles.select_related("profile")}
        changes = s.GoverningProfileChangeSerializer(model.governing_changes.select_related("by"), many=True).data
        return Response({"governing": governing, "changes": changes})

    @extend_schema(parameters=[sc.NAME], request=s.GoverningProfileSerializer,
                   responses=sc.answers({200: s.GoverningAnswerSerializer}, *sc.WRITE, 415))
    def post(self, request: Request, name: str) -> Response:
        model = selectors.model_get(user=request.user, name=name)
        data = self.valid(s.GoverningProfileSerializer, request)
        profile = ReadinessProfile.objects.filter(name=data["profile"]).first()
        if profile is None:
            raise NotFound(f"No readiness profile named {data['profile']!r}.")
        services.governing_profile_set(model=model, profile=profile, by=request.user, alias=data["alias"],
                                       reason=data["reason"])
        return self.get(request, name)


class HistoryView(ServiceAPIView):
    serializer_class = s.PromotionSerializer
    @extend_schema(parameters=[sc.NAME], responses=sc.answers({200: s.PromotionSerializer(many=True)}, *sc.READ))
    def get(self, request: Request, name: str) -> Response:
        model = selectors.model_get(user=request.user, name=name)
        return Response(s.PromotionSerializer(selectors.promotion_history(model=model), many=True).data)


class ProfileListView(ServiceAPIView):
    serializer_class = s.ProfileSerializer
    parser_classes = [JSONParser]

    @extend_schema(responses=sc.answers({200: s.ProfileSerializer(many=True)}, 401, 403))
    def get(self, request: Request) -> Response:
        return Response(s.ProfileSerializer(ReadinessProfile.objects.all(), many=True).data)

    @extend_schema(request=s.ProfileSerializer, responses=sc.answers({201: s.ProfileSerializer}, 400, 401, 403, 409, 415))
    def post(self, request: Request) -> Response:
        profile = services.profile_create(user=request.user, **self.valid(s.ProfileSerializer, request))
        return Response(s.ProfileSerializer(profile).data, status=status.HTTP_201_CREATED)


class RegressionListView(ServiceAPIView):
    """Nightly regressions of a model's variants, open first (``?open=1``: open ones only)."""

    serializer_class = s.RegressionSerializer

    @extend_schema(parameters=[sc.NAME, sc.OPEN], responses=sc.answers({200: s.RegressionSerializer(many=True)}, *sc.READ))
    def get(self, request: Request, name: str) -> Response:
        model = selectors.model_get(user=request.user, name=name)
        open_only = request.query_params.get("open", "").lower() in {"1", "true", "yes"}
        regressions = selectors.model_regressions(model=model, open_only=open_only)
        return Response(s.RegressionSerializer(regressions, many=True).data)


class VariantHistoryView(ServiceAPIView):
    """A variant's nightly p50 / p95 / p99 per night, oldest first (``?nights=N``, default 90)."""

    serializer_class = s.HistoryPointSerializer

    @extend_schema(parameters=[sc.NAME, sc.NUMBER, sc.VARIANT, sc.NIGHTS],
                   responses=sc.answers({200: s.VariantHistorySerializer}, 400, *sc.READ))
    def get(self, request: Request, name: str, number: int, variant: str) -> Response:
        target = selectors.variant_get(version=self.version(request, name, number), name=variant)
        nights = s.HistoryQuerySerializer(data=request.query_params)
        nights.is_valid(raise_exception=True)
        history = selectors.variant_history(variant=target, nights=nights.validated_data["nights"])
        return Response({"model": name, "version": number, "variant": variant,
                         "nights": s.HistoryPointSerializer(history, many=True).data})
