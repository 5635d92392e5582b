"""The registry's data: models, versions, variants, datasets, profiles, jobs, results, deployments.

State changes live in ``modelhub.services``; these classes hold data, constraints and small
read-only helpers only.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q

from workers.evaluation.readiness import ProfileSpec


class Task(models.TextChoices):
    AUTO = "auto", "Infer from outputs"
    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    EMBEDDING = "embedding"


class ModelFormat(models.TextChoices):
    ONNX = "onnx", "ONNX"
    TORCHSCRIPT = "torchscript", "TorchScript"


class RegisteredModel(models.Model):
    """A named model that versions are uploaded to; visible to its owner, its team and admins."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    task = models.CharField(max_length=20, choices=Task.choices, default=Task.AUTO)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_models")
    team = models.ForeignKey(Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="models",
                             help_text="Members of this group can see the model.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    """One uploaded file (or archive) of a model: inspected, then READY or FAILED with a reason."""

    class Status(models.TextChoices):
        PENDING = "PENDING"
        READY = "READY"
        FAILED = "FAILED"

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    format = models.CharField(max_length=20, choices=ModelFormat.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    status_reason = models.TextField(blank=True)
    original_filename = models.CharField(max_length=255)
    storage_key = models.CharField(max_length=500, help_text="Storage key of the uploaded file.")
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the uploaded file.")
    size_bytes = models.BigIntegerField()
    files = models.JSONField(default=list, blank=True, help_text="Every file of the model: path, sha256, size.")
    signature = models.JSONField(default=dict, blank=True)
    inspection = models.JSONField(default=dict, blank=True)
    notes = models.TextField(blank=True, help_text="Free-text notes on the version (Markdown not rendered).")
    tags = models.JSONField(default=list, blank=True, help_text="Short labels, e.g. [\"baseline\", \"q3\"].")
    source = models.CharField(max_length=500, blank=True,
                              help_text="Where the model came from: free text or a URL (shown, never fetched).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["model", "number"], name="version_number_unique"),
            models.UniqueConstraint(fields=["model", "sha256"], condition=~Q(status="FAILED"),
                                    name="version_file_unique_unless_failed"),
        ]
        permissions = [("upload_torchscript", "Can upload TorchScript models (executable code)")]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.number}"

    def dataset(self, purpose: str) -> Dataset | None:
        """The version's dataset for a purpose (validation, calibration, training), if any."""
        return self.datasets.filter(purpose=purpose).first()


class Dataset(models.Model):
    """An .npz file of arrays named after the model inputs (optionally ``labels``)."""

    class Purpose(models.TextChoices):
        VALIDATION = "validation"
        CALIBRATION = "calibration"
        TRAINING = "training"

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="datasets")
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    original_filename = models.CharField(max_length=255)
    storage_key = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField()
    sample_count = models.PositiveIntegerField()
    arrays = models.JSONField(default=dict)
    has_labels = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["version", "purpose"], name="one_dataset_per_purpose")]

    def __str__(self) -> str:
        return f"{self.version} {self.purpose} ({self.sample_count} samples)"


class ReadinessProfile(models.Model):
    """What a variant must meet to be promoted: size, latency, memory, accuracy, speed-up; and the
    latency statistic that ranks variants."""

    class Target(models.TextChoices):
        CPU = "cpu", "CPU"
        CUDA = "cuda", "CUDA GPU"
        NODE = "node", "Node.js (onnxruntime-node)"
        BROWSER_WASM = "browser-wasm", "Browser (onnxruntime-web, wasm)"

    class Statistic(models.TextChoices):
        P50 = "p50", "p50 (median)"
        P95 = "p95", "p95"
        P99 = "p99", "p99"

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    max_size_mb = models.FloatField(null=True, blank=True)
    max_p95_ms = models.FloatField(null=True, blank=True)
    max_p99_ms = models.FloatField(null=True, blank=True)
    batch_size = models.PositiveIntegerField(default=1, help_text="Batch size the latency limits apply to.")
    max_peak_memory_mb = models.FloatField(null=True, blank=True)
    accuracy_metric = models.CharField(max_length=30, blank=True, help_text="Empty: the task's default metric.")
    min_accuracy = models.FloatField(null=True, blank=True)
    max_accuracy_drop = models.FloatField(null=True, blank=True)
    min_speedup = models.FloatField(null=True, blank=True,
                                    help_text="Minimum speed-up over the parent, in the ranking statistic.")
    target = models.CharField(max_length=20, choices=Target.choices, default=Target.CPU)
    threads = models.PositiveSmallIntegerField(default=1)
    statistic = models.CharField(max_length=4, choices=Statistic.choices, default=Statistic.P50,
                                 help_text="The latency statistic that ranks variants and measures speed-ups.")
    search_budget_s = models.PositiveIntegerField(
        default=360, help_text="Seconds the default plan's search may spend before it keeps the best found so far.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def to_spec(self) -> ProfileSpec:
        """The profile as the pure engine's ProfileSpec (the limits a judgment is made under)."""
        fields = ["max_size_mb", "max_p95_ms", "max_p99_ms", "batch_size", "max_peak_memory_mb", "min_accuracy",
                  "max_accuracy_drop", "min_speedup", "target", "threads", "statistic"]
        return ProfileSpec(**{name: getattr(self, name) for name in fields}, accuracy_metric=self.accuracy_metric or None)


class GoverningProfile(models.Model):
    """The readiness profile that governs an alias of a model: nothing is promoted to the alias
    without a judgment under it, unless an approver forces it with a reason. Set by a maintainer
    through ``services.governing_profile_set``, which audits every change."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="governing_profiles")
    alias = models.SlugField(max_length=50, default="production")
    profile = models.ForeignKey(ReadinessProfile, on_delete=models.PROTECT, related_name="governs")
    set_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    set_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model", "alias"], name="one_governing_profile_per_alias")]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.alias} governed by {self.profile.name}"


class GoverningProfileChange(models.Model):
    """Audit of every change of a governing profile: who, when, from which profile to which, why."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="governing_changes")
    alias = models.SlugField(max_length=50)
    from_profile = models.CharField(max_length=100, blank=True)
    to_profile = models.CharField(max_length=100)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    at = models.DateTimeField(auto_now_add=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.alias}: {self.from_profile or '(none)'} -> {self.to_profile}"


class Variant(models.Model):
    """A runnable model file of a version: the original upload or the output of a pass."""

    class Status(models.TextChoices):
        READY = "READY"
        FAILED = "FAILED"

    class Runtime(models.TextChoices):
        ONNXRUNTIME = "onnxruntime"
        TORCH = "torch"

    ORIGINAL = "original"

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(max_length=100)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    pass_name = models.CharField(max_length=50)
    config = models.JSONField(default=dict, blank=True)
    config_hash = models.CharField(max_length=16)
    format = models.CharField(max_length=20, choices=ModelFormat.choices, default=ModelFormat.ONNX)
    runtime = models.CharField(max_length=20, choices=Runtime.choices, default=Runtime.ONNXRUNTIME)
    storage_key = models.CharField(max_length=500, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    files = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.READY)
    status_reason = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="What the pass measured.")
    notes = models.JSONField(default=list, blank=True)
    job = models.ForeignKey("OptimizationJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="variants")
    session_options = models.JSONField(
        default=dict, blank=True, help_text="Tuned ONNX Runtime session options (intra_op_threads, inter_op_threads, "
                                            "execution_mode), used by serving and bundles.")
    serving_batching = models.BooleanField(
        default=False, help_text="Serve with server-side batching (set by services.variant_batching_set, only "
                                 "when the variant's benchmark says batching pays).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["version", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["version", "name"], name="variant_name_unique"),
            models.UniqueConstraint(fields=["version", "pass_name", "config_hash"], name="variant_config_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.version}/{self.name}"

    @property
    def label(self) -> str:
        return f"v{self.version.number}/{self.name}"

    def latest_result(self) -> BenchmarkResult | None:
        """The newest finished measurement of any kind (a nightly claim still being measured is not one)."""
        return self.results.filter(pending=False).order_by("-created_at", "-id").first()


class OptimizationJob(models.Model):
    """Background work on a version (optimize a plan, or benchmark variants) with its progress."""

    class Status(models.TextChoices):
        QUEUED = "QUEUED"
        RUNNING = "RUNNING"
        SUCCEEDED = "SUCCEEDED"
        FAILED = "FAILED"
        CANCELLED = "CANCELLED"

    class Kind(models.TextChoices):
        OPTIMIZE = "optimize"
        BENCHMARK = "benchmark"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.OPTIMIZE)
    profile = models.ForeignKey(ReadinessProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    plan = models.JSONField(default=list, blank=True)
    options = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    current_step = models.CharField(max_length=200, blank=True)
    events = models.JSONField(default=list, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="Empty while the broker has not taken it.")
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # sha256 of what the job was asked to do (version, kind, profile, plan, options): the partial
    # unique constraint below makes a second identical request find the active job, not a new one.
    request_hash = models.CharField(max_length=64, blank=True, default="")

    # Set (not stored) by the services when a request got an identical active job back.
    reused: bool = False

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["request_hash"], name="one_active_job_per_request",
                                    condition=Q(status__in=["QUEUED", "RUNNING"]) & ~Q(request_hash="")),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.kind} {self.version}, {self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class BenchmarkResult(models.Model):
    """One measurement of a variant: latency, throughput, memory, accuracy and the verdict."""

    class Kind(models.TextChoices):
        JOB = "job"
        ON_DEMAND = "on_demand"
        NIGHTLY = "nightly"

    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="results")
    job = models.ForeignKey(OptimizationJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="results")
    profile = models.ForeignKey(ReadinessProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.JOB)
    night = models.DateField(null=True, blank=True)
    pending = models.BooleanField(default=False, help_text="A nightly claim still being measured.")
    batch_size = models.PositiveIntegerField(default=1)
    statistic = models.CharField(max_length=4, default="p50", help_text="The statistic that ranked this run.")
    p50_ms = models.FloatField(null=True)
    p95_ms = models.FloatField(null=True)
    p99_ms = models.FloatField(null=True)
    intervals = models.JSONField(default=dict, blank=True,
                                 help_text="p50/p95/p99 at batch_size: value, 95 % interval, calls, enough.")
    throughput = models.FloatField(null=True, help_text="Samples per second at throughput_batch.")
    throughput_batch = models.PositiveIntegerField(null=True, blank=True)
    profile_spec = models.JSONField(default=dict, blank=True, help_text="The profile's limits when judged.")
    peak_memory_mb = models.FloatField(null=True)
    size_bytes = models.BigIntegerField(default=0)
    report = models.JSONField(default=dict)
    accuracy = models.JSONField(default=dict, blank=True)
    verdict = models.JSONField(default=dict, blank=True)
    passed = models.BooleanField(null=True)
    fingerprint = models.JSONField(default=dict, blank=True)
    fingerprint_hash = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["variant", "night"], condition=Q(kind="nightly"),
                                    name="one_nightly_result_per_variant_and_night"),
        ]

    def __str__(self) -> str:
        return f"{self.variant} {self.kind} p95={self.p95_ms}"


class Deployment(models.Model):
    """Which variant answers for a model under an alias (production, staging...)."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="deployments")
    alias = models.SlugField(max_length=50, default="production")
    variant = models.ForeignKey(Variant, on_delete=models.PROTECT, related_name="deployments")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model", "alias"], name="one_variant_per_alias")]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.alias} -> {self.variant.label}"


class PromotionEvent(models.Model):
    """Audit of every promotion and rollback: who, when, from what, to what, why, forced or not."""

    class Kind(models.TextChoices):
        PROMOTE = "promote"
        ROLLBACK = "rollback"

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="promotions")
    alias = models.SlugField(max_length=50)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.PROMOTE)
    from_variant = models.ForeignKey(Variant, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    to_variant = models.ForeignKey(Variant, on_delete=models.PROTECT, related_name="+")
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    at = models.DateTimeField(auto_now_add=True)
    reason = models.TextField(blank=True)
    forced = models.BooleanField(default=False)
    verdict = models.JSONField(default=dict, blank=True, help_text="The verdict of the variant when promoted.")
    profile_name = models.CharField(max_length=100, blank=True, help_text="The governing profile when promoted.")
    judgment = models.ForeignKey(BenchmarkResult, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                 help_text="The result that made it promotable (none when forced).")

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.model.name}@{self.alias} -> {self.to_variant.label}"


class Regression(models.Model):
    """A nightly measurement of a production variant (or a link of its fallback chain) that got
    worse than its recent baseline: tonight's declared latency statistic (p50 unless the profile says
    otherwise) with its whole interval above the baseline's band, or a readiness verdict that flipped.

    At most one open (unacknowledged) regression per variant and metric: later nights that are
    still worse update it (``last_night``, ``nights``) instead of raising a new alarm.
    """

    class Metric(models.TextChoices):
        P50 = "p50_ms", "p50 latency"
        P95 = "p95_ms", "p95 latency"
        P99 = "p99_ms", "p99 latency"
        READINESS = "readiness", "readiness verdict"

    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="regressions")
    result = models.ForeignKey(BenchmarkResult, on_delete=models.CASCADE, related_name="regressions",
                               help_text="The nightly result that raised it.")
    night = models.DateField()
    last_night = models.DateField(help_text="The latest night still worse than the baseline.")
    nights = models.PositiveIntegerField(default=1, help_text="Nights it was seen while open.")
    metric = models.CharField(max_length=20, choices=Metric.choices)
    baseline = models.FloatField(null=True, help_text="Median of the statistic (ms) over the baseline nights.")
    value = models.FloatField(null=True, help_text="Tonight's value of the statistic (ms).")
    ratio = models.FloatField(null=True, help_text="Tonight's value over the baseline median.")
    reasons = models.JSONField(default=list)
    details = models.JSONField(default=dict, blank=True, help_text="The full check: baseline stats, setup, role.")
    acknowledged = models.BooleanField(default=False)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="+")
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["acknowledged", "-night", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["variant", "metric"], condition=Q(acknowledged=False),
                                    name="one_open_regression_per_variant_and_metric"),
        ]

    def __str__(self) -> str:
        return f"{self.variant.version.model.name} {self.variant.label} {self.metric} regression on {self.night}"
