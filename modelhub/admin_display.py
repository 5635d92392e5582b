"""How the admin shows stored figures: numbers with their unit (ms, MB, %, /s) as the dashboard
writes them, and JSON as readable tables, on change pages and in changelists.

A field shown read-only (every field of a row only services write) is replaced by a display
field named ``shown__<field>``: its label and help text stay the field's, its value is formatted
by the field's name (``*_ms`` → ms, ``*_mb`` → MB, ``size_bytes`` → MB, ``progress`` → %, ...).
Editable fields are left as the form draws them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from modelhub.dashboard import numbers

PREFIX = "shown__"
MAX_ROWS = 200  # a job's event log or a long list stays readable: the rest is counted, not drawn
MAX_DEPTH = 6
MAX_ITEMS = 20  # a list of plain values (a benchmark's raw rounds) shows its first items and a count


MS_FIELDS = {"baseline", "value"}  # a regression's columns: ms by their help text, not by their names


def number(name: str, value: Any, *, field: bool = False) -> str:
    """A figure written by the unit its field (``field``) or JSON key name says; plain numbers keep
    4 digits. Within JSON, ``value`` and ``ratio`` say no unit (a speed-up's value, a pruning ratio)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if name.endswith("_ms") or (field and name in MS_FIELDS):
        return numbers.milliseconds(value)
    if name.endswith("_mb"):
        return numbers.memory(value)
    if name.endswith("size_bytes") or name.endswith("_bytes"):
        return numbers.megabytes(value)
    if name == "progress":
        return numbers.percent(value)
    if name.startswith("throughput") and not name.endswith("batch"):
        return numbers.throughput(value)
    if name in {"speedup", "min_speedup"}:
        return numbers.times(value)
    return numbers.significant(value, 4) if isinstance(value, float) else f"{value:,}" if abs(value) >= 10_000 else str(value)


def json_table(value: Any, key: str = "", depth: int = 0, path: str = "") -> SafeString:
    """JSON as HTML: an object as a two-column table, a list of objects as a table with a column
    per key, other lists comma-separated; numbers by their key's unit; deep nesting as text.
    ``path`` (the keys down to here) names a scrolling table, unique on the page."""
    path = path or key
    if depth >= MAX_DEPTH:
        return format_html("<code>{}</code>", str(value)[:500])
    if isinstance(value, dict):
        if not value:
            return format_html('<span class="muted">{}</span>', "none")
        rows = format_html_join("", '<tr><th scope="row">{}</th><td>{}</td></tr>',
                                ((k, json_table(v, str(k), depth + 1, f"{path} › {k}"))
                                 for k, v in list(value.items())[:MAX_ROWS]))
        return format_html('<table class="mh-json">{}</table>{}', rows, _more(len(value)))
    if isinstance(value, list):
        if value and all(isinstance(item, dict) for item in value):
            return _records(value, depth, path)
        if not value:
            return format_html('<span class="muted">{}</span>', "none")
        shown = format_html_join(", ", "{}", ((format_html("[{}]", json_table(item, key, depth + 1, f"{path} {i}"))
                                               if isinstance(item, list) else json_table(item, key, depth + 1),)
                                              for i, item in enumerate(value[:MAX_ITEMS])))
        rest = len(value) - MAX_ITEMS
        return format_html("{} <span class=\"muted\">… and {} more</span>", shown, rest) if rest > 0 else shown
    if value is None:
        return format_html("{}", "—")
    return format_html("{}", number(key, value))


def _records(items: list[dict[str, Any]], depth: int, path: str) -> SafeString:
    columns = list(dict.fromkeys(k for item in items[:MAX_ROWS] for k in item))
    head = format_html_join("", '<th scope="col">{}</th>', ((c,) for c in columns))
    body = format_html_join("", "<tr>{}</tr>", ((format_html_join(
        "", "<td>{}</td>", ((json_table(item.get(c), c, depth + 1, f"{path} {row + 1} › {c}"),) for c in columns)),)
        for row, item in enumerate(items[:MAX_ROWS])))
    # A wide table scrolls in its own box, which the keyboard can reach (and scroll) too.
    return format_html('<div class="mh-json-scroll" tabindex="0" role="region" aria-label="{} (scrolls sideways)">'
                       '<table class="mh-json"><thead><tr>{}</tr></thead><tbody>{}</tbody></table></div>{}',
                       path or "table", head, body, _more(len(items)))


def _more(count: int) -> SafeString | str:
    return format_html('<p class="small muted">… and {} more</p>', count - MAX_ROWS) if count > MAX_ROWS else ""


def _formatted(model: type[models.Model], name: str) -> bool:
    """Whether the field has a better display than its raw value (numbers with a unit, JSON)."""
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    if isinstance(field, models.JSONField):
        return True
    return isinstance(field, (models.FloatField, models.BigIntegerField)) or number(name, 1.5) != "1.5"


def display(model: type[models.Model], name: str) -> Callable[[Any], Any]:
    """The admin display function of one field: its label, help text and ordering kept."""
    field = model._meta.get_field(name)

    def shown(obj: Any) -> Any:
        value = getattr(obj, name)
        if isinstance(field, models.JSONField):
            return json_table(value, name)
        return "—" if value is None else number(name, value, field=True)

    shown.short_description = field.verbose_name  # type: ignore[attr-defined]
    shown.admin_order_field = name  # type: ignore[attr-defined]
    return shown


class ReadableFieldsMixin:
    """Read-only fields and changelist columns of a ModelAdmin shown formatted (see the module)."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith(PREFIX):
            return display(self.model, attr.removeprefix(PREFIX))  # type: ignore[attr-defined]
        raise AttributeError(attr)

    def _read_only_targets(self, request: HttpRequest, obj: Any, base: list[str]) -> list[str]:
        if self.has_change_permission(request, obj):  # type: ignore[attr-defined]
            return base
        return [f.name for f in self.model._meta.fields if f.editable or f.name in base]  # type: ignore[attr-defined]

    def with_formatted(self, request: HttpRequest, obj: Any, base: list[str]) -> list[str]:
        """``base`` (the read-only fields) and the formatted stand-ins of those a page shows read-only."""
        if obj is None:
            return base
        targets = self._read_only_targets(request, obj, base)
        return [*base, *(PREFIX + n for n in targets if _formatted(self.model, n))]  # type: ignore[attr-defined]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """The formatted stand-ins join the read-only fields (a change or view page only)."""
        return self.with_formatted(request, obj, list(super().get_readonly_fields(request, obj)))  # type: ignore[misc]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        """Each formatted field in its own place, instead of the raw one."""
        fields = list(super().get_fields(request, obj))  # type: ignore[misc]
        shown = {f.removeprefix(PREFIX) for f in fields if isinstance(f, str) and f.startswith(PREFIX)}
        ordered = [PREFIX + f if f in shown else f for f in fields if not (isinstance(f, str) and f.startswith(PREFIX))]
        return list(dict.fromkeys(ordered))

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        """Changelist columns of numbers written with their unit."""
        columns = super().get_list_display(request)  # type: ignore[misc]
        model = self.model  # type: ignore[attr-defined]
        return [PREFIX + c if isinstance(c, str) and _number_column(model, c) else c for c in columns]


def _number_column(model: type[models.Model], name: str) -> bool:
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return isinstance(field, (models.FloatField, models.BigIntegerField)) and number(name, 1.5) != "1.5"
