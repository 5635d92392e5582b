"""Serializers of the management API: input validation and explicit output fields only."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from modelhub.models import (
    Dataset,
    GoverningProfileChange,
    ModelVersion,
    OptimizationJob,
    PromotionEvent,
    ReadinessProfile,
    RegisteredModel,
    Regression,
    Task,
    Variant,
)
from workers.evaluation import readiness


class ModelSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    production = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredModel
        fields = ["name", "description", "task", "owner", "created_at", "production"]
        read_only_fields = ["owner", "created_at", "production"]

    def get_production(self, obj: RegisteredModel) -> str | None:
        deployment = obj.deployments.filter(alias="production").select_related("variant__version").first()
        return deployment.variant.label if deployment else None


class ModelCreateSerializer(serializers.Serializer):
    name = serializers.SlugField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    task = serializers.ChoiceField(choices=Task.choices, default=Task.AUTO)


class VersionSerializer(serializers.ModelSerializer):
    inspection = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = ["number", "format", "status", "status_reason", "original_filename", "sha256", "size_bytes",
                  "files", "signature", "inspection", "notes", "tags", "source", "created_at"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_inspection(self, obj: ModelVersion) -> dict[str, Any]:
        """What the intake learned, without ``root``: the intake's scratch directory on the server
        (gone by now); ``files`` and ``primary`` are already relative names."""
        return {key: value for key, value in (obj.inspection or {}).items() if key != "root"}


class VersionAnnotateSerializer(serializers.Serializer):
    """A version's notes, tags and source; what is left out stays as it is (the rules are the
    service's: ``services.version_annotate``)."""

    notes = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    tags = serializers.ListField(child=serializers.CharField(allow_blank=True), required=False,
                                 help_text="Short lower-case slugs, e.g. [\"baseline\", \"q3\"].")
    source = serializers.CharField(required=False, allow_blank=True,
                                   help_text="Where the model came from: free text or a URL, shown and never fetched.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Refuse any other field (status, hash, owner...) instead of ignoring it silently."""
        unknown = sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError(f"Only notes, tags and source can be set here; not {', '.join(unknown)}.")
        return attrs


class UploadSerializer(serializers.Serializer):
    file = serializers.FileField()


class DatasetSerializer(serializers.ModelSerializer):
    class Meta:
        model = Dataset
        fields = ["purpose", "original_filename", "sha256", "size_bytes", "sample_count", "arrays", "has_labels",
                  "created_at"]
        read_only_fields = fields


class DatasetUploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    purpose = serializers.ChoiceField(choices=Dataset.Purpose.choices)


class ProfileSerializer(serializers.ModelSerializer):
    class Meta:
        model = ReadinessProfile
        fields = ["name", "description", "max_size_mb", "max_p95_ms", "max_p99_ms", "batch_size",
                  "max_peak_memory_mb", "accuracy_metric", "min_accuracy", "max_accuracy_drop", "min_speedup",
                  "target", "threads", "statistic"]
        # A taken name is the service's 409 (decided by the unique constraint), not a 400 here.
        extra_kwargs = {"name": {"validators": []}}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Limits > 0 and a known metric: the engine's rule (``readiness.profile_problems``), per field."""
        problems = readiness.profile_problems(attrs)
        if problems:
            raise serializers.ValidationError(problems)
        return attrs


class VariantSerializer(serializers.ModelSerializer):
    parent = serializers.CharField(source="parent.name", read_only=True, default=None, allow_null=True)

    class Meta:
        model = Variant
        fields = ["name", "pass_name", "parent", "config", "format", "runtime", "sha256", "size_bytes", "status",
                  "status_reason", "metrics", "notes", "created_at"]
        read_only_fields = fields


class OptimizeSerializer(serializers.Serializer):
    profile = serializers.SlugField(required=False, allow_null=True,
                                    help_text="Omitted: the production alias's governing profile; null: none "
                                              "(measured, not judged).")
    plan = serializers.ListField(child=serializers.DictField(), required=False, allow_null=True)
    auto_promote = serializers.BooleanField(default=False)


class JobSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="version.model.name", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)
    profile = serializers.CharField(source="profile.name", read_only=True, default=None, allow_null=True)

    class Meta:
        model = OptimizationJob
        fields = ["id", "model", "version", "kind", "profile", "plan", "status", "progress", "current_step",
                  "events", "attempts", "error", "result", "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class PromoteSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1)
    variant = serializers.CharField(max_length=100)
    alias = serializers.SlugField(default="production")
    reason = serializers.CharField(required=False, allow_blank=True, default="")
    force = serializers.BooleanField(default=False)


class RollbackSerializer(serializers.Serializer):
    alias = serializers.SlugField(default="production")
    reason = serializers.CharField(required=False, allow_blank=True, default="")
    force = serializers.BooleanField(default=False, help_text="Roll back to the previous variant even when it "
                                                              "fails the governing profile (needs a reason).")


class BenchmarkRequestSerializer(serializers.Serializer):
    profile = serializers.SlugField(required=False, allow_null=True,
                                    help_text="Omitted: the production alias's governing profile; null: none.")


class GoverningProfileSerializer(serializers.Serializer):
    alias = serializers.SlugField(default="production")
    profile = serializers.SlugField()
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class GoverningProfileChangeSerializer(serializers.ModelSerializer):
    by = serializers.CharField(source="by.username", read_only=True, default=None, allow_null=True)

    class Meta:
        model = GoverningProfileChange
        fields = ["alias", "from_profile", "to_profile", "by", "at", "reason"]
        read_only_fields = fields


class PromotionSerializer(serializers.ModelSerializer):
    from_variant = serializers.CharField(source="from_variant.label", read_only=True, default=None, allow_null=True)
    to_variant = serializers.CharField(source="to_variant.label", read_only=True)
    by = serializers.CharField(source="by.username", read_only=True, default=None, allow_null=True)
    judgment_job = serializers.IntegerField(source="judgment.job_id", read_only=True, default=None,
                                            allow_null=True)

    class Meta:
        model = PromotionEvent
        fields = ["alias", "kind", "from_variant", "to_variant", "by", "at", "reason", "forced", "verdict",
                  "profile_name", "judgment_job"]
        read_only_fields = fields


class RegressionSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="variant.version.number", read_only=True)
    variant = serializers.CharField(source="variant.name", read_only=True)
    role = serializers.CharField(source="details.role", read_only=True, default=None, allow_null=True)
    threshold = serializers.FloatField(source="details.baseline.threshold_ms", read_only=True, default=None,
                                       allow_null=True)
    acknowledged_by = serializers.CharField(source="acknowledged_by.username", read_only=True, default=None,
                                            allow_null=True)

    class Meta:
        model = Regression
        fields = ["id", "version", "variant", "role", "metric", "night", "last_night", "nights", "baseline",
                  "threshold", "value", "ratio", "reasons", "acknowledged", "acknowledged_by", "acknowledged_at",
                  "created_at"]
        read_only_fields = fields


class HistoryPointSerializer(serializers.Serializer):
    night = serializers.DateField()
    p50_ms = serializers.FloatField(allow_null=True)
    p95_ms = serializers.FloatField(allow_null=True)
    p99_ms = serializers.FloatField(allow_null=True)
    passed = serializers.BooleanField(allow_null=True)
    batch_size = serializers.IntegerField()
    fingerprint_hash = serializers.CharField()
    regressions = serializers.ListField(child=serializers.CharField())


class HistoryQuerySerializer(serializers.Serializer):
    nights = serializers.IntegerField(min_value=1, max_value=3650, default=90)


# --- documentation-only shapes of answers built by hand in the views (modelhub/api/schema.py) --------


class ErrorSerializer(serializers.Serializer):
    """Every refusal: a readable sentence; a body that failed validation adds ``fields`` (field → problems)."""

    error = serializers.CharField()


class VersionDetailSerializer(VersionSerializer):
    """A version with its datasets and variants."""

    datasets = DatasetSerializer(many=True, read_only=True)
    variants = VariantSerializer(many=True, read_only=True)

    class Meta(VersionSerializer.Meta):
        fields = [*VersionSerializer.Meta.fields, "datasets", "variants"]
        read_only_fields = fields


class JudgmentRefSerializer(serializers.Serializer):
    """One succeeded job whose judgment can be shown."""

    job = serializers.IntegerField()
    kind = serializers.CharField()
    profile = serializers.CharField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class ResultRowSerializer(serializers.Serializer):
    """One variant's row under a judgment; figures are null for a variant that job did not measure."""

    name = serializers.CharField()
    status = serializers.CharField()
    parent = serializers.CharField(allow_null=True)
    size_bytes = serializers.IntegerField(allow_null=True)
    run = serializers.DictField(allow_null=True)
    batch_size = serializers.IntegerField(allow_null=True)
    statistic = serializers.CharField(allow_null=True)
    p50_ms = serializers.FloatField(allow_null=True)
    p95_ms = serializers.FloatField(allow_null=True)
    p99_ms = serializers.FloatField(allow_null=True)
    throughput = serializers.FloatField(allow_null=True)
    peak_memory_mb = serializers.FloatField(allow_null=True)


class ResultsSerializer(serializers.Serializer):
    """``/results``: the judgment (null before any succeeded job), its ranking and the variant rows."""

    judgment = serializers.DictField(allow_null=True, help_text="Profile, its limits, fingerprint and time.")
    job = serializers.IntegerField(allow_null=True)
    judgments = JudgmentRefSerializer(many=True)
    statistic = serializers.CharField(allow_null=True)
    batch_size = serializers.IntegerField(allow_null=True)
    variants = ResultRowSerializer(many=True)
    best = serializers.CharField(allow_null=True)
    best_effort = serializers.JSONField(allow_null=True)
    ties = serializers.DictField()
    ordered = serializers.ListField(child=serializers.JSONField())
    pareto = serializers.ListField(child=serializers.JSONField())
    comparisons = serializers.DictField()
    advice = serializers.ListField(child=serializers.JSONField())


class GoverningAnswerSerializer(serializers.Serializer):
    """The profile governing each alias, and the audited changes."""

    governing = serializers.DictField(child=serializers.CharField(), help_text="Alias → profile name.")
    changes = GoverningProfileChangeSerializer(many=True)


class VariantHistorySerializer(serializers.Serializer):
    """A variant's nightly figures, oldest first."""

    model = serializers.CharField()
    version = serializers.IntegerField()
    variant = serializers.CharField()
    nights = HistoryPointSerializer(many=True)
