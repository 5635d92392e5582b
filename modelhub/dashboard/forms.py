"""Forms of the dashboard: they validate what a person typed; the views hand it to one service."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from modelhub.models import ReadinessProfile

MAX_BATCH = 4096


class OptimizeForm(forms.Form):
    """A readiness profile, the steps of the default plan to run, and how long to measure."""

    profile = forms.ModelChoiceField(
        queryset=ReadinessProfile.objects.all(), required=False,
        empty_label="No profile (measured, not judged: nothing can be promoted from the run)",
        help_text="The limits every variant is judged against, and the latency statistic that ranks them. "
                  "Promotion needs a passing judgment under the model's governing profile (the default here).")
    steps = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple,
        help_text="The default plan for this version and profile; untick a pass to leave it out.")
    bench_budget_s = forms.FloatField(
        required=False, min_value=0.05, max_value=120, label="Benchmark time per batch size (s)",
        help_text="Empty: the server's default. Shorter is quicker but noisier.")
    batch_sizes = forms.CharField(
        required=False, max_length=60, label="Batch sizes", help_text="Comma-separated, e.g. 1, 8. Empty: 1, "
        "the profile's batch size and 8.")
    custom = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, plan: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.fields["steps"].choices = [(s["name"], _describe(s)) for s in plan]
        self.fields["steps"].initial = [s["name"] for s in plan]
        for step in plan:  # each pass's options, as JSON; the service checks them as it checks the API's plan
            self.fields[options_field(step["name"])] = forms.CharField(
                required=False, max_length=2000, initial=json.dumps(step.get("options", {})),
                label=f"Options of {step['name']} ({step['pass_name']})",
                widget=forms.TextInput(attrs={"size": 48, "class": "mono"}))

    def options_fields(self) -> list[Any]:
        """The bound options field of each step, in plan order (for the template)."""
        return [self[options_field(step["name"])] for step in self.plan]

    def _clean_options(self, step: dict[str, Any]) -> dict[str, Any]:
        field = options_field(step["name"])
        text = (self.cleaned_data.get(field) or "").strip()
        if not text:
            return dict(step.get("options", {}))
        try:
            options = json.loads(text)
        except ValueError:
            options = None
        if not isinstance(options, dict):
            self.add_error(field, 'Write the options as a JSON object, e.g. {"ratio": 0.25}.')
            return {}
        return options

    def clean_batch_sizes(self) -> list[int]:
        text = self.cleaned_data["batch_sizes"].strip()
        if not text:
            return []
        try:
            sizes = sorted({int(part) for part in text.replace(" ", "").split(",") if part})
        except ValueError:
            raise forms.ValidationError("Write whole numbers separated by commas, e.g. 1, 8.") from None
        if not sizes or sizes[0] < 1 or sizes[-1] > MAX_BATCH:
            raise forms.ValidationError(f"Batch sizes go from 1 to {MAX_BATCH}.")
        return sizes

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("custom") and not cleaned.get("steps"):
            self.add_error("steps", "Choose at least one pass, or press Optimize for the whole default plan.")
        self.cleaned_options = {step["name"]: self._clean_options(step) for step in self.plan}
        return cleaned

    def chosen_plan(self) -> list[dict[str, Any]] | None:
        """The ticked steps of the plan, or None (the service's default plan) for a plain Optimize."""
        if not self.cleaned_data.get("custom"):
            return None
        chosen = set(self.cleaned_data["steps"])
        return [{**step, "options": self.cleaned_options[step["name"]]} for step in self.plan if step["name"] in chosen]

    def bench_options(self) -> dict[str, Any]:
        """Benchmark overrides for the job; empty: the server's defaults."""
        options: dict[str, Any] = {}
        if self.cleaned_data.get("bench_budget_s"):
            options["time_budget_s"] = self.cleaned_data["bench_budget_s"]
        if self.cleaned_data.get("batch_sizes"):
            options["batch_sizes"] = self.cleaned_data["batch_sizes"]
        return options


def options_field(step_name: str) -> str:
    """The form field holding a step's options (step names are URL-safe: letters, digits, - _ .)."""
    return f"options__{step_name}"


def chosen_profile(data: Any, default: ReadinessProfile | None = None) -> ReadinessProfile | None:
    """The profile named by a request's ``profile`` field (its id): the plan depends on its target
    before the form is validated. No field at all: ``default`` (the governing profile); an empty
    one: no profile."""
    if "profile" not in data:
        return default
    value = str(data.get("profile") or "")
    return ReadinessProfile.objects.filter(pk=int(value)).first() if value.isdigit() else None


def _describe(step: dict[str, Any]) -> str:
    options = ", ".join(f"{key}={value}" for key, value in step.get("options", {}).items())
    source = "" if step.get("source", "original") == "original" else f", from {step['source']}"
    return f"{step['name']}: {step['pass_name']}" + (f" ({options}{source})" if options or source else "")


class PromoteForm(forms.Form):
    """Why this variant goes to production; one the gate refuses also needs ``force``."""

    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), required=False, max_length=2000,
                             help_text="Written into the audit history.")
    force = forms.BooleanField(required=False, label="Promote although the gate refuses it (approvers only; "
                               "a written reason is required and the audit marks it forced)")

    def __init__(self, *args: Any, failing: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failing = failing
        if not failing:
            del self.fields["force"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.failing and not cleaned.get("force"):
            self.add_error("force", "The gate refuses this variant: tick the box to promote it anyway.")
        if self.failing and not (cleaned.get("reason") or "").strip():
            self.add_error("reason", "A forced promotion needs a written reason.")
        return cleaned


class RollbackForm(forms.Form):
    """Why production goes back to the last known good; a forced rollback (no earlier variant
    passes the governing profile) needs the reason."""

    reason = forms.CharField(max_length=2000, required=False,
                             widget=forms.TextInput(attrs={"size": 50, "placeholder": "why (for the audit history)"}))
    force = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("force") and not (cleaned.get("reason") or "").strip():
            self.add_error("reason", "A forced rollback needs a written reason.")
        return cleaned

    def error_text(self) -> str:
        return " ".join(message for errors in self.errors.values() for message in errors)


class AliasRollbackForm(RollbackForm):
    """A rollback of any alias (production unless told)."""

    alias = forms.SlugField(max_length=50, required=False, widget=forms.HiddenInput)

    def chosen_alias(self) -> str:
        """The alias to roll back (production when none was given)."""
        return self.cleaned_data.get("alias") or "production"


class VersionNotesForm(forms.Form):
    """A version's notes, tags (comma-separated) and source; ``services.version_annotate`` holds the rules."""

    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
                            help_text="Free text, shown as written (no markup).")
    tags = forms.CharField(required=False, max_length=1000,
                           help_text="Comma-separated short labels, e.g. baseline, q3.")
    source = forms.CharField(required=False, max_length=2000,
                             help_text="Where the model came from: free text or a URL (shown as a link, never fetched).")

    def annotations(self) -> dict[str, Any]:
        """The keyword arguments of ``services.version_annotate``."""
        tags = [tag.strip() for tag in self.cleaned_data["tags"].split(",") if tag.strip()]
        return {"notes": self.cleaned_data["notes"], "tags": tags, "source": self.cleaned_data["source"]}
