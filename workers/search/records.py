"""What happened to each candidate of a search: tried, kept, or dropped and why (shown on the job page)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

KEPT, DROPPED, FAILED, SKIPPED, UNREACHED = "kept", "dropped", "failed", "skipped", "not reached"


@dataclass
class Record:
    """One candidate: its recipe, parent, outcome (``status``) and why, seconds spent, speed-up over
    its parent (a ``stats.Estimate`` dict), the profile's accuracy metric where it was measured."""

    name: str
    pass_name: str
    parent: str | None
    status: str = KEPT
    why: str = ""
    seconds: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    speedup: dict[str, Any] | None = None
    accuracy: float | None = None
    metric: str | None = None
    passed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON (no NaN)."""
        data = asdict(self)
        if data["accuracy"] is not None and data["accuracy"] != data["accuracy"]:
            data["accuracy"] = None
        return data


@dataclass
class SearchLog:
    """Every record, the time spent against the budget, whether the budget stopped the search, the pick."""

    budget_s: float
    records: list[Record] = field(default_factory=list)
    spent_s: float = 0.0
    stopped_by_budget: bool = False
    best: str | None = None
    notes: list[str] = field(default_factory=list)

    def add(self, record: Record) -> Record:
        """Append one record and return it."""
        self.records.append(record)
        return record

    def get(self, name: str) -> Record | None:
        """The record of a candidate by name."""
        return next((r for r in self.records if r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The log as stored in ``job.result["search"]``."""
        return {"budget_s": self.budget_s, "spent_s": round(self.spent_s, 2), "stopped_by_budget": self.stopped_by_budget,
                "best": self.best, "notes": list(self.notes), "tried": len([r for r in self.records if r.status != SKIPPED
                                                                            and r.status != UNREACHED]),
                "records": [r.to_dict() for r in self.records]}
