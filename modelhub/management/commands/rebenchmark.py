"""``manage.py rebenchmark [--model M] [--night YYYY-MM-DD]``: the nightly re-benchmark, by hand."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from modelhub import nightly
from modelhub.errors import ServiceError


class Command(BaseCommand):
    help = ("Re-benchmark every production variant and its fallback chain for a night (the work of the "
            "nightly beat entry); variants already measured that night are skipped.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", help="only this model (default: every model with a production variant)")
        parser.add_argument("--night", type=date.fromisoformat, help="the night to record (default: today, UTC)")

    def handle(self, *args: Any, **options: Any) -> None:
        with tqdm(desc="re-benchmark", unit="variant", disable=options["verbosity"] == 0) as bar:
            def progress(outcome: nightly.VariantNight, done: int, total: int) -> None:
                bar.total = total
                bar.set_postfix_str(f"{outcome.model} {outcome.variant}: {outcome.status}")
                bar.update(1)

            try:
                report = nightly.nightly_run(night=options["night"], model=options["model"], progress=progress)
            except ServiceError as exc:
                raise CommandError(exc.message) from None
        for outcome in report.variants:
            p95 = f"p95 {outcome.p95_ms:.3f} ms" if outcome.p95_ms is not None else "p95 -"
            line = f"{outcome.model:20} {outcome.variant:28} {outcome.role:10} {outcome.status:8} {p95:16} {outcome.detail}"
            self.stdout.write(self.style.WARNING(line) if outcome.regressions else line)
        summary = report.to_dict()
        self.stdout.write(f"night {summary['night']}: {summary['measured']} measured, {summary['failed']} failed, "
                          f"{summary['skipped']} skipped, {len(summary['regressions'])} new regression(s)")
