"""Advice that names a pass option ("try a lower ratio (0.25)", "try width 0.75") as a link to the
optimize form, pre-filled with the job's plan and that option changed."""

from __future__ import annotations

import re
from typing import Any

from django.urls import reverse
from django.utils.http import urlencode

from modelhub.models import ModelVersion, OptimizationJob

# What a line of ``workers.evaluation.advisor`` proposes: (pattern, option it changes).
PROPOSALS = [
    (re.compile(r"^(?P<step>[A-Za-z0-9_.-]+): .*try a lower ratio \((?P<value>[0-9.]+)\)$"), "ratio"),
    (re.compile(r"^(?P<step>[A-Za-z0-9_.-]+): .*try width (?P<value>[0-9.]+)$"), "width"),
]


def _proposal(line: str) -> tuple[str, str, float] | None:
    for pattern, option in PROPOSALS:
        found = pattern.match(line)
        if found:
            return found["step"], option, float(found["value"])
    return None


def advice_rows(*, version: ModelVersion, job: OptimizationJob | None, lines: list[str]) -> list[dict[str, Any]]:
    """Each advice line, with a link to the optimize form when it proposes an option of a step of ``job``."""
    steps = {step["name"] for step in (job.plan if job else [])}
    rows = []
    for line in lines:
        proposal = _proposal(line)
        url = None
        if job is not None and proposal and proposal[0] in steps:
            step, option, value = proposal
            query = urlencode({"advice_job": job.pk, "step": step, "option": option, "value": f"{value:g}"})
            url = reverse("dashboard:optimize", args=[version.model.name, version.number]) + f"?{query}"
        rows.append({"text": line, "url": url})
    return rows


def advised_plan(*, version: ModelVersion, data: Any) -> tuple[list[dict[str, Any]], list[str], Any] | None:
    """From ``?advice_job=&step=&option=&value=``: the job's plan with that option set, the steps to
    run (the advised one and the steps it starts from) and the job's profile; None without advice."""
    job_id, name = str(data.get("advice_job", "")), str(data.get("step", ""))
    job = version.jobs.filter(pk=int(job_id)).select_related("profile").first() if job_id.isdigit() else None
    plan = [dict(step) for step in (job.plan if job else [])]
    by_name = {step["name"]: step for step in plan}
    if name not in by_name:
        return None
    option, value = str(data.get("option", "")), _number(data.get("value"))
    if option and value is not None:
        by_name[name]["options"] = {**by_name[name].get("options", {}), option: value}
    chosen = [name]
    while by_name[chosen[-1]].get("source", "original") in by_name and len(chosen) <= len(plan):
        chosen.append(by_name[chosen[-1]]["source"])
    return plan, chosen, job.profile


def _number(value: Any) -> float | None:
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if number == number and abs(number) < 1e9 else None  # finite, sane
