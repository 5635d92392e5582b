"""The admin's add forms: each one saves through a service, so a refused file or change becomes a
form error and never a half-saved row."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from django import forms
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from modelhub import services
from modelhub.errors import ServiceError
from modelhub.models import Dataset, GoverningProfile, ModelVersion


class ServiceForm(forms.ModelForm):
    """A form whose ``clean`` calls a service; the created object becomes the form's instance."""

    request: HttpRequest

    def run_service(self) -> Any:
        raise ValueError("subclasses call their service here")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not self.errors:
            try:
                self.instance = self.run_service()
            except ServiceError as exc:
                raise forms.ValidationError(exc.message) from None
        return cleaned

    def _post_clean(self) -> None:
        """The service already validated and saved the row."""


class VersionUploadForm(ServiceForm):
    """Upload a model file and, optionally, its datasets; each refused file gets its own error."""

    file = forms.FileField(help_text="ONNX (.onnx), a zip of an ONNX model with its external data, or TorchScript.")
    validation_data = forms.FileField(required=False, help_text="Optional .npz with arrays named after the model "
                                      "inputs (and 'labels'): accuracy is checked on it.")
    calibration_data = forms.FileField(required=False, help_text="Optional .npz of typical inputs for static int8.")
    training_data = forms.FileField(required=False, help_text="Optional .npz for distillation.")

    class Meta:
        model = ModelVersion
        fields = ["model"]

    def clean(self) -> dict[str, Any]:
        cleaned = forms.ModelForm.clean(self)
        if self.errors:
            return cleaned
        try:
            self.instance = self._upload_version()
        except ServiceError as exc:
            self.add_error("file", exc.message)
            return cleaned
        refused = [purpose for purpose in DATASET_PURPOSES if not self._upload_dataset(purpose)]
        if refused:
            self.add_error(None, self._partly_saved(refused))
        return cleaned

    def _partly_saved(self, refused: list[str]) -> str:
        """What was saved (linked) and what was refused; sending the form again keeps what was saved."""
        version = self.instance
        kept = [d.purpose for d in version.datasets.order_by("purpose")]
        url = reverse("dashboard:version", args=[version.model.name, version.number])
        return format_html(
            'Version {} was saved{} (<a href="{}">open v{}</a>), but its {} data was refused (see below). '
            "Send the form again with corrected files (what was saved is kept), or add them from the version's page.",
            version.number, f" with its {' and '.join(kept)} data" if kept else "", url, version.number,
            " and ".join(refused))

    def _upload_version(self) -> ModelVersion:
        upload = self.cleaned_data["file"]
        version, _ = services.version_upload(model=self.cleaned_data["model"], stream=upload, filename=upload.name,
                                             user=self.request.user)
        version = _inspected(version)
        if version.status == ModelVersion.Status.FAILED:
            raise ServiceError(f"The model was refused: {version.status_reason}")
        return version

    def _upload_dataset(self, purpose: str) -> bool:
        """Store one dataset given with the upload; False (and a field error) when it is refused."""
        upload = self.cleaned_data.get(f"{purpose}_data")
        if not upload:
            return True
        saved = self.instance.dataset(purpose)
        if saved is not None and saved.sha256 == _sha256(upload):
            return True  # sent again with the form after a partial refusal: already saved
        try:
            services.dataset_upload(version=self.instance, purpose=purpose, stream=upload, filename=upload.name,
                                    user=self.request.user)
        except ServiceError as exc:
            self.add_error(f"{purpose}_data", exc.message)
            return False
        return True


def _sha256(upload: Any) -> str:
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()


DATASET_PURPOSES = [Dataset.Purpose.VALIDATION, Dataset.Purpose.CALIBRATION, Dataset.Purpose.TRAINING]
INSPECTION_WAIT_S = 60.0


def _inspected(version: ModelVersion, timeout_s: float = INSPECTION_WAIT_S) -> ModelVersion:
    """The version once a worker has inspected it (READY or FAILED), or still PENDING after
    ``timeout_s``: the form can then name a refused file, and add datasets to a ready version.
    With local eager tasks the inspection has already run when the upload returns."""
    deadline = time.monotonic() + timeout_s
    version.refresh_from_db()
    while version.status == ModelVersion.Status.PENDING and time.monotonic() < deadline:
        time.sleep(0.25)
        version.refresh_from_db()
    return version


class DatasetUploadForm(ServiceForm):
    file = forms.FileField(help_text="An .npz file with arrays named after the model inputs, optionally 'labels'.")

    class Meta:
        model = Dataset
        fields = ["version", "purpose"]

    def run_service(self) -> Dataset:
        upload = self.cleaned_data["file"]
        return services.dataset_upload(version=self.cleaned_data["version"], purpose=self.cleaned_data["purpose"],
                                       stream=upload, filename=upload.name, user=self.request.user)


class GoverningProfileForm(ServiceForm):
    """Which profile governs an alias of a model; saved by ``services.governing_profile_set``, which
    audits the change and refuses to change an existing one without a reason."""

    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}), max_length=2000,
                             help_text="Why (written into the audit). Required to change a profile already set.")

    class Meta:
        model = GoverningProfile
        fields = ["model", "alias", "profile"]

    def run_service(self) -> GoverningProfile:
        model = self.cleaned_data.get("model") or self.instance.model
        alias = self.cleaned_data.get("alias") or self.instance.alias
        return services.governing_profile_set(model=model, profile=self.cleaned_data["profile"], by=self.request.user,
                                              alias=alias, reason=self.cleaned_data.get("reason", ""))
