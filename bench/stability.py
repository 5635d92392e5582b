"""Does the verdict hold from one rerun to the next? Each sample model's default plan, optimized N
times in a row under its demo profile, through the real services and job runner (SQLite, local
worker, a temporary data directory).

    python bench/stability.py [--runs 5] [--budget 1.0] [--samples quality-mlp,digits-cnn,tiny-transformer]

Prints, per model, the best variant of each run with the variants it was tied with, then whether
the goal holds: the same best in >= 4 of 5 runs, or every differing pick declared tied with the
most frequent best in that run. Last, the p50 interval widths (high - low, in % of p50) per variant
over the runs, and how far each variant's p50 moved between runs (max/min - 1).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _django(data_dir: str) -> None:
    os.environ.update(MODELHUB_DATA_DIR=data_dir, DEBUG="1", DJANGO_SETTINGS_MODULE="modelhub.settings")
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", "--noinput", verbosity=0)


def _version(name: str, sample_name: str, upload: str, limits: dict[str, Any], root: Path, user: Any) -> Any:
    from modelhub import services
    from modelhub.models import ReadinessProfile
    from workers.samples import build_sample

    sample = build_sample(sample_name, root)
    model = services.model_create(name=name, owner=user, task=sample.task)
    profile = ReadinessProfile.objects.create(name=f"{name}-profile", **limits)
    services.governing_profile_set(model=model, profile=profile, by=user)
    path = sample.onnx if upload == "onnx" else sample.torchscript
    with path.open("rb") as handle:
        version, _ = services.version_upload(model=model, stream=handle, filename=path.name, user=user)
    version.refresh_from_db()  # inspected on commit, in this process
    for purpose, file in (("validation", sample.validation), ("calibration", sample.calibration),
                          ("training", sample.directory / "train.npz")):
        if file.exists():
            with file.open("rb") as handle:
                services.dataset_upload(version=version, purpose=purpose, stream=handle, filename=file.name, user=user)
    return version, profile


def _runs(version: Any, profile: Any, user: Any, runs: int, budget: float) -> list[Any]:
    from modelhub import services

    jobs = []
    for _ in range(runs):
        job = services.optimization_request(version=version, user=user, profile=profile,
                                            bench={"time_budget_s": budget})
        job.refresh_from_db()
        if job.status != "SUCCEEDED":
            raise SystemExit(f"job {job.pk} {job.status}: {job.error}")
        jobs.append(job)
    return jobs


def _verdict(jobs: list[Any]) -> tuple[str, bool, str]:
    picks = [job.result["best"] or f"(none; best effort {job.result['best_effort']})" for job in jobs]
    modal, count = Counter(picks).most_common(1)[0]
    differing = [(job, pick) for job, pick in zip(jobs, picks, strict=True) if pick != modal]
    declared = all(modal in job.result["ranking"]["ties"].get(pick, []) for job, pick in differing)
    ok = count >= len(jobs) - 1 or declared
    how = f"same best in {count} of {len(jobs)}" + ("; every differing pick tied with it" if differing and declared
                                                     else "")
    return modal, ok, how


def _widths(jobs: list[Any]) -> dict[str, list[float]]:
    from modelhub.models import BenchmarkResult

    widths: dict[str, list[float]] = {}
    for result in BenchmarkResult.objects.filter(job__in=jobs).select_related("variant").order_by("job_id"):
        p50 = result.intervals["p50"]
        widths.setdefault(result.variant.name, []).append(p50["value"])
        widths.setdefault(result.variant.name + "@width", []).append((p50["high"] - p50["low"]) / p50["value"] * 100)
    return widths


def _print_model(name: str, jobs: list[Any]) -> bool:
    print(f"\n== {name}: best per run (ranked by {jobs[0].result['ranking']['statistic']} at batch "
          f"{jobs[0].result['ranking']['batch_size']}) ==")
    for index, job in enumerate(jobs, start=1):
        ranking = job.result["ranking"]
        best = job.result["best"]
        tied = ", ".join(ranking["ties"].get(best or "", [])) or "—"
        print(f"run {index} (job {job.pk:>3}): best {best or '(none)':<18} tied with: {tied}")
    modal, ok, how = _verdict(jobs)
    print(f"goal {'MET' if ok else 'MISSED'}: {how} (most frequent: {modal})")
    widths = _widths(jobs)
    print(f"{'variant':<18}{'p50 ms per run':<46}{'moved':>7}  {'p50 interval width, % of p50':<30}")
    for variant in [k for k in widths if not k.endswith("@width")]:
        values, spans = widths[variant], widths[variant + "@width"]
        moved = (max(values) / min(values) - 1) * 100
        print(f"{variant:<18}{' '.join(f'{v:.4f}' for v in values):<46}{moved:>6.1f}%  "
              f"{' '.join(f'{w:.1f}' for w in spans)}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per variant and batch size")
    parser.add_argument("--samples", default="quality-mlp,digits-cnn,tiny-transformer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelhub-stability-") as data_dir:
        _django(data_dir)
        from django.contrib.auth import get_user_model

        from modelhub.management.commands.demo import DEMO_MODELS

        user = get_user_model().objects.create_superuser("bench", "bench@localhost", "bench")
        wanted = args.samples.split(",")
        results = []
        for name, sample_name, upload, limits in DEMO_MODELS:
            if name in wanted:
                version, profile = _version(name, sample_name, upload, limits, Path(data_dir) / "samples", user)
                results.append(_print_model(name, _runs(version, profile, user, args.runs, args.budget)))
    print(f"\nstability goal met for {sum(results)} of {len(results)} models")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
