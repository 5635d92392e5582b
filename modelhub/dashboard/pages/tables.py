"""Sortable tables: rows sorted on the server by ``?sort=<column>`` (``-<column>``: descending), so
a header link sorts without JavaScript, and each header says how it sorts (``aria-sort``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    """One header: its ``?sort=`` key, its label, how to read a row's value (None: not sortable),
    and whether it holds numbers (right-aligned)."""

    key: str
    label: str
    value: Callable[[dict[str, Any]], Any] | None = None
    num: bool = False


def sort_rows(rows: list[dict[str, Any]], columns: list[Column], asked: str,
              default: str = "") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``rows`` sorted as ``asked`` says (an unknown key: ``default``, else as given) and the headers
    with their links and ``aria-sort``. Rows without a value sort last either way."""
    by_key = {column.key: column for column in columns if column.value is not None}
    key, descending = asked.removeprefix("-"), asked.startswith("-")
    if key not in by_key:
        key, descending = default.removeprefix("-"), default.startswith("-")
    column = by_key.get(key)
    if column is not None:
        present = [row for row in rows if column.value(row) is not None]
        missing = [row for row in rows if column.value(row) is None]
        rows = sorted(present, key=lambda row: _comparable(column.value(row)), reverse=descending) + missing
    return rows, [_header(c, active=c.key == key and column is not None, descending=descending) for c in columns]


def _comparable(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _header(column: Column, *, active: bool, descending: bool) -> dict[str, Any]:
    if column.value is None:
        return {"label": column.label, "num": column.num, "url": None, "aria": None}
    flip = active and not descending  # a second click on the sorted column reverses it
    return {"label": column.label, "num": column.num, "url": f"?sort={'-' if flip else ''}{column.key}",
            "aria": ("descending" if descending else "ascending") if active else None}


def _last_latency(row: dict[str, Any]) -> float | None:
    latency = (row.get("last") or {}).get("latency")
    return latency["value"] if latency else None


MODEL_COLUMNS = [
    Column("name", "Model", lambda row: row["model"].name),
    Column("production", "Production variant", lambda row: row["production"].label if row["production"] else None),
    Column("status", "Status", lambda row: row["status"]),
    Column("last", "Last benchmark (of the production variant)", _last_latency),
    Column("nightly", "Nightly p95 trend", lambda row: row["last_night_p95"]),
    Column("cache", "Cache hit rate", lambda row: row["cache_hit_rate"], num=True),
    Column("fallbacks", "Fallbacks", lambda row: row["fallbacks"], num=True),
]

VERSION_COLUMNS = [
    Column("version", "Version", lambda row: row["version"].number),
    Column("uploaded", "Uploaded", lambda row: row["version"].created_at),
    Column("status", "Status", lambda row: row["version"].status),
    Column("size", "Size", lambda row: row["version"].size_bytes, num=True),
    Column("variants", "Variants", lambda row: row["variants"], num=True),
    Column("job", "Last job", lambda row: row["job"].pk if row["job"] else None),
    Column("best", "Best variant (latest judgment)", lambda row: row["best"]),
]
