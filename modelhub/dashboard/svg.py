"""Charts drawn on the server as inline SVG: numbers and labels in, markup out (pure functions).

No JavaScript and no chart library: a page stays readable when printed, saved or read without
network access. Every text drawn is escaped here, so the markup can be put in a page as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

from modelhub.dashboard import numbers

PASS = "#2e7d32"
FAIL = "#c62828"
UNKNOWN = "#757575"
FRONTIER = "#1565c0"
LIMIT = "#ef6c00"
GRID = "#e0e0e0"
INK = "#333333"
SERIES_COLORS = ("#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#2e7d32", "#ad1457")
_INSET = 12
LOG_RATIO = 30.0
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif"'


@dataclass(frozen=True)
class Point:
    """One variant on the scatter: where it is, whether it passed, and what it is."""

    label: str
    x: float | None
    y: float | None
    passed: bool | None = None
    pareto: bool = False
    production: bool = False


@dataclass(frozen=True)
class Bar:
    """One horizontal bar: a label and a value (None: not measured)."""

    label: str
    value: float | None
    passed: bool | None = None
    production: bool = False


@dataclass(frozen=True)
class Series:
    """One line of a line chart; ``values`` line up with the chart's x labels (None: a gap)."""

    name: str
    values: Sequence[float | None]
    color: str = ""


@dataclass
class _Scale:
    """Maps a data interval onto a pixel interval (``start`` may be above ``end``: an inverted axis),
    linearly or by the logarithm of the value."""

    lo: float
    hi: float
    start: float
    end: float
    ticks: list[float] = field(default_factory=list)
    log: bool = False

    def __call__(self, value: float) -> float:
        if self.log:
            lo, hi, value = math.log10(self.lo), math.log10(self.hi), math.log10(max(value, self.lo))
        else:
            lo, hi = self.lo, self.hi
        span = (hi - lo) or 1.0
        return self.start + (value - lo) / span * (self.end - self.start)

    def contains(self, value: float | None) -> bool:
        return _finite(value) and self.lo <= value <= self.hi


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering ``lo``..``hi``."""
    if not hi > lo:
        lo, hi = lo - (abs(lo) or 1.0) / 2, hi + (abs(hi) or 1.0) / 2
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks = []
    value = first
    while value < hi + step * 0.999 and len(ticks) < 4 * count + 2:
        ticks.append(round(value, 12))
        value += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks at 1, 2 and 5 times the powers of ten covering ``lo``..``hi`` (> 0); decades only when
    they are many."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    steps = (1,) if last - first > 3 else (1, 2, 5)
    ticks = [m * 10.0**e for e in range(first, last + 1) for m in steps]
    below = [t for t in ticks if t <= lo]
    above = [t for t in ticks if t >= hi]
    return [t for t in ticks if (below[-1] if below else ticks[0]) <= t <= (above[0] if above else ticks[-1])]


def _scale(values: Sequence[float], start: float, end: float, *, from_zero: bool = False) -> _Scale:
    """A linear scale over round ticks; a logarithmic one when the values are positive and span
    more than a factor of LOG_RATIO (latencies of 0.2 ms and 70 ms both stay readable)."""
    lo, hi = min(values), max(values)
    if lo > 0 and hi / lo > LOG_RATIO:
        ticks = log_ticks(lo, hi)
        return _Scale(ticks[0], ticks[-1], start, end, ticks, log=True)
    if from_zero:
        lo = min(0.0, lo)
    ticks = nice_ticks(lo, hi)
    return _Scale(ticks[0], ticks[-1], start, end, ticks)


def _text(x: float, y: float, text: str, *, size: int = 11, anchor: str = "start", color: str = INK,
          weight: str = "normal", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{color}" '
            f'font-weight="{weight}" {extra}>{escape(text)}</text>')


def _open(width: int, height: int, title: str, css_class: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {css_class}" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}" {FONT}>'
            f"<title>{escape(title)}</title>")


def _empty(width: int, height: int, title: str, message: str, css_class: str) -> str:
    return (_open(width, height, title, css_class) + f'<rect width="{width}" height="{height}" fill="#fafafa"/>'
            + _text(width / 2, height / 2, message, anchor="middle", color=UNKNOWN, size=13) + "</svg>")


def _color(passed: bool | None) -> str:
    return PASS if passed else UNKNOWN if passed is None else FAIL


# --- sparkline -------------------------------------------------------------------------------


def sparkline(values: Sequence[float | None], *, width: int = 120, height: int = 28, title: str = "",
              unit: str = "ms") -> str:
    """A tiny trend line of the known values, its last value dotted; "" when fewer than two."""
    known = [v for v in values if _finite(v)]
    if len(known) < 2:
        return ""
    pad = 3
    x = _Scale(0, len(known) - 1, pad, width - pad)
    lo, hi = min(known), max(known)
    y = _Scale(lo, hi if hi > lo else lo + 1, height - pad, pad)
    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(known))
    summary = (f"{title}: last {numbers.significant(known[-1])} {unit}, "
               f"range {numbers.significant(lo)}–{numbers.significant(hi)} {unit} over {len(known)} runs")
    return (_open(width, height, summary, "sparkline")
            + f'<polyline points="{points}" fill="none" stroke="{FRONTIER}" stroke-width="1.5"/>'
            + f'<circle cx="{x(len(known) - 1):.1f}" cy="{y(known[-1]):.1f}" r="2.5" fill="{FRONTIER}"/></svg>')


# --- scatter ---------------------------------------------------------------------------------


def _limit_in_view(limit: float | None, values: Sequence[float]) -> bool:
    """A limit far beyond the data would squash every point into a corner: leave it off the axis."""
    if not _finite(limit) or not values:
        return False
    lo, hi = min(values), max(values)
    span = max(hi - lo, abs(hi), 1e-12)
    return lo - span <= limit <= hi + span


def _scatter_scales(drawn: list[Point], box: tuple[float, float, float, float], x_limit: float | None,
                    y_limit: float | None, higher_is_better: bool) -> tuple[_Scale, _Scale]:
    # Points on the outermost ticks stay clear of the frame and of each other's labels.
    left, top, right, bottom = box[0] + _INSET, box[1] + 2 * _INSET, box[2] - 3 * _INSET, box[3] - _INSET
    xs = [p.x for p in drawn]
    ys = [p.y for p in drawn]
    xs_domain = xs + ([x_limit] if _limit_in_view(x_limit, xs) else [])
    ys_domain = ys + ([y_limit] if _limit_in_view(y_limit, ys) else [])
    x = _scale(xs_domain, left, right, from_zero=True)
    # "Better" is always up: a lower-is-better metric (an error) grows downwards.
    y = _scale(ys_domain, bottom, top) if higher_is_better else _scale(ys_domain, top, bottom)
    return x, y


def _axes(x: _Scale, y: _Scale, box: tuple[float, float, float, float], fmt_x: Callable[[float], str],
          fmt_y: Callable[[float], str]) -> list[str]:
    left, top, right, bottom = box
    parts = []
    for tick in x.ticks:
        parts.append(f'<line x1="{x(tick):.1f}" y1="{top}" x2="{x(tick):.1f}" y2="{bottom}" stroke="{GRID}"/>')
        parts.append(_text(x(tick), bottom + 16, fmt_x(tick), anchor="middle", size=10))
    for tick in y.ticks:
        parts.append(f'<line x1="{left}" y1="{y(tick):.1f}" x2="{right}" y2="{y(tick):.1f}" stroke="{GRID}"/>')
        parts.append(_text(left - 6, y(tick) + 3, fmt_y(tick), anchor="end", size=10))
    parts.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" '
                 f'stroke="#bdbdbd"/>')
    return parts


def _limits(x: _Scale, y: _Scale, box: tuple[float, float, float, float], x_limit: float | None,
            y_limit: float | None, x_caption: str, y_caption: str, notes: list[str]) -> list[str]:
    """The limit lines and the region meeting both; a limit beyond the axis becomes a note."""
    left, top, right, bottom = box
    parts = []
    x_in, y_in = x.contains(x_limit), y.contains(y_limit)
    # The region that meets every drawn limit, shaded: a point inside it passes on these two axes.
    region_right = x(x_limit) if x_in else right
    region_top, region_bottom = top, (y(y_limit) if y_in else bottom)
    parts.append(f'<rect class="passing-region" x="{left}" y="{region_top:.1f}" width="{region_right - left:.1f}" '
                 f'height="{region_bottom - region_top:.1f}" fill="{PASS}" fill-opacity="0.06"/>')
    dash = f'stroke="{LIMIT}" stroke-width="1.5" stroke-dasharray="6 4"'
    if x_in:
        parts.append(f'<line class="limit" x1="{x(x_limit):.1f}" y1="{top}" x2="{x(x_limit):.1f}" y2="{bottom}" {dash}/>')
        parts.append(_text(x(x_limit) - 4, bottom - 6, x_caption, anchor="end", color=LIMIT, size=10))
    elif _finite(x_limit):
        notes.append(f"{x_caption} is off the chart (every point is {'within' if x_limit > x.hi else 'beyond'} it)")
    if y_in:
        parts.append(f'<line class="limit" x1="{left}" y1="{y(y_limit):.1f}" x2="{right}" y2="{y(y_limit):.1f}" {dash}/>')
        parts.append(_text(right - 4, y(y_limit) - 4, y_caption, anchor="end", color=LIMIT, size=10))
    elif _finite(y_limit):
        notes.append(f"{y_caption} is off the chart")
    return parts


def _points(drawn: list[Point], x: _Scale, y: _Scale, fmt_x: Callable[[float], str],
            fmt_y: Callable[[float], str]) -> list[str]:
    parts = []
    frontier = sorted((p for p in drawn if p.pareto), key=lambda p: p.x)
    if len(frontier) > 1:
        line = " ".join(f"{x(p.x):.1f},{y(p.y):.1f}" for p in frontier)
        parts.append(f'<polyline class="pareto" points="{line}" fill="none" stroke="{FRONTIER}" stroke-width="2" '
                     f'stroke-opacity="0.6"/>')
    placed: list[tuple[float, float, float]] = []
    for point in sorted(drawn, key=lambda p: (p.x, p.label)):
        px, py = x(point.x), y(point.y)
        tooltip = f"{point.label}: {fmt_x(point.x)}, {fmt_y(point.y)}, {_verdict_word(point.passed)}"
        ring = f'stroke="{FRONTIER}" stroke-width="3"' if point.pareto else 'stroke="white" stroke-width="1.5"'
        parts.append(f'<circle class="point" cx="{px:.1f}" cy="{py:.1f}" r="{7 if point.production else 6}" '
                     f'fill="{_color(point.passed)}" {ring}><title>{escape(tooltip)}</title></circle>')
        name = point.label + (" (production)" if point.production else "")
        label_x, label_y = _label_spot(px, py, _text_width(name), placed)
        placed.append((label_x, label_y, _text_width(name)))
        parts.append(_text(label_x, label_y, name, size=11, weight="bold" if point.production else "normal"))
    return parts


def _text_width(text: str, size: int = 11) -> float:
    return 0.6 * size * len(text)


def _label_spot(px: float, py: float, width: float, placed: list[tuple[float, float, float]]) -> tuple[float, float]:
    """The first spot near the point whose label box overlaps no label drawn before it."""
    for dx, dy in ((8, -9), (8, 17), (8, -23), (8, 31), (8, -37), (8, 45), (-8 - width, -9), (-8 - width, 17)):
        x0, y0 = px + dx, py + dy
        if not any(x0 < lx + lw and lx < x0 + width and abs(y0 - ly) < 13 for lx, ly, lw in placed):
            return x0, y0
    return px + 8, py - 9


def _verdict_word(passed: bool | None) -> str:
    return "passes" if passed else "not judged" if passed is None else "fails"


def _legend(x0: float, y0: float, entries: list[tuple[str, str]]) -> list[str]:
    parts, cursor = [], x0
    for kind, label in entries:
        if kind == "limit":
            parts.append(f'<line x1="{cursor}" y1="{y0 - 4}" x2="{cursor + 18}" y2="{y0 - 4}" stroke="{LIMIT}" '
                         f'stroke-width="1.5" stroke-dasharray="6 4"/>')
        elif kind == "frontier":
            parts.append(f'<line x1="{cursor}" y1="{y0 - 4}" x2="{cursor + 18}" y2="{y0 - 4}" stroke="{FRONTIER}" '
                         f'stroke-width="2"/>')
        else:
            parts.append(f'<circle cx="{cursor + 9}" cy="{y0 - 4}" r="5" fill="{kind}"/>')
        parts.append(_text(cursor + 24, y0, label, size=11))
        cursor += 30 + 6.5 * len(label)
    return parts


def scatter(points: Sequence[Point], *, x_label: str, y_label: str, x_limit: float | None = None,
            y_limit: float | None = None, higher_is_better: bool = True, width: int = 640, height: int = 420,
            title: str = "Latency against accuracy", x_unit: str = "ms", notes: Sequence[str] = ()) -> str:
    """Variants by latency (x) and accuracy (y, better up), the Pareto frontier joined, the
    profile's limits dashed and the region meeting both shaded; unmeasured variants are listed,
    and ``notes`` (why other variants are not drawn) written under the legend."""
    drawn = [p for p in points if _finite(p.x) and _finite(p.y)]
    missing = [p.label for p in points if p not in drawn]
    if not drawn:
        empty = _empty(width, height, title, "No variant has both a latency and an accuracy yet.", "scatter")
        lines = "".join(_text(width / 2, height / 2 + 20 + 14 * i, note, anchor="middle", color=UNKNOWN, size=10)
                        for i, note in enumerate(notes))
        return empty.removesuffix("</svg>") + lines + "</svg>"
    box = (70.0, 20.0, width - 20.0, height - 104.0)
    x, y = _scatter_scales(drawn, box, x_limit, y_limit, higher_is_better)

    def fmt_x(v: float) -> str:
        return f"{numbers.significant(v)} {x_unit}"

    def fmt_y(v: float) -> str:
        return numbers.metric(v)

    limit_x = f"limit {fmt_x(x_limit)}" if _finite(x_limit) else ""
    limit_y = f"limit {fmt_y(y_limit)}" if _finite(y_limit) else ""
    given, notes = list(notes), []
    parts = [_open(width, height, title, "scatter"), *_axes(x, y, box, fmt_x, fmt_y),
             *_limits(x, y, box, x_limit, y_limit, limit_x, limit_y, notes), *_points(drawn, x, y, fmt_x, fmt_y)]
    parts.append(_text((box[0] + box[2]) / 2, box[3] + 34, x_label + (", log scale" if x.log else ""),
                       anchor="middle", size=12))
    parts.append(_text(16, (box[1] + box[3]) / 2, f"{y_label} (better ↑)", anchor="middle", size=12,
                       extra=f'transform="rotate(-90 16 {(box[1] + box[3]) / 2:.1f})"'))
    verdicts = [(PASS, "passes"), (FAIL, "fails")] + ([(UNKNOWN, "not judged")] if any(p.passed is None for p in drawn)
                                                      else [])
    parts += _legend(box[0], height - 52, [*verdicts, ("frontier", "Pareto frontier"), ("limit", "profile limit")])
    if missing:
        notes.append("not drawn (not measured): " + ", ".join(missing))
    notes += given
    for line, note in enumerate(notes):
        parts.append(_text(box[0], height - 34 + 14 * line, note, size=10, color=LIMIT if "limit" in note else UNKNOWN))
    return "".join(parts) + "</svg>"


# --- bars ------------------------------------------------------------------------------------


def bars(items: Sequence[Bar], *, unit: str, limit: float | None = None, width: int = 640,
         title: str = "Size of each variant") -> str:
    """Horizontal bars, one per item, its value printed at its end; the limit dashed."""
    if not items:
        return _empty(width, 80, title, "No variants yet.", "bars")
    row, top, left, right = 26, 26, 150.0, width - 90.0
    height = int(top + row * len(items) + 34)
    values = [b.value for b in items if _finite(b.value)] + ([limit] if _finite(limit) else [])
    x = _scale(values or [1.0], left, right, from_zero=True)
    parts = [_open(width, height, title, "bars")]
    for tick in x.ticks:
        parts.append(f'<line x1="{x(tick):.1f}" y1="{top - 6}" x2="{x(tick):.1f}" y2="{height - 28}" stroke="{GRID}"/>')
        parts.append(_text(x(tick), height - 14, f"{numbers.significant(tick)} {unit}", anchor="middle", size=10))
    for index, bar in enumerate(items):
        y0 = top + index * row
        name = bar.label + (" ★" if bar.production else "")
        parts.append(_text(left - 8, y0 + 13, name, anchor="end", size=11, weight="bold" if bar.production else "normal"))
        if not _finite(bar.value):
            parts.append(_text(left + 4, y0 + 13, "not measured", size=10, color=UNKNOWN))
            continue
        length = max(1.0, x(bar.value) - left)
        parts.append(f'<rect class="bar" x="{left}" y="{y0}" width="{length:.1f}" height="{row - 8}" '
                     f'fill="{_color(bar.passed)}" fill-opacity="0.85"><title>{escape(bar.label)}: '
                     f'{numbers.significant(bar.value)} {escape(unit)}</title></rect>')
        parts.append(_text(left + length + 6, y0 + 13, f"{numbers.significant(bar.value)} {unit}", size=11))
    if _finite(limit):
        parts.append(f'<line class="limit" x1="{x(limit):.1f}" y1="{top - 10}" x2="{x(limit):.1f}" y2="{height - 28}" '
                     f'stroke="{LIMIT}" stroke-width="1.5" stroke-dasharray="6 4"/>')
        parts.append(_text(x(limit) + 4, top - 12, f"limit {numbers.significant(limit)} {unit}", color=LIMIT, size=10))
    return "".join(parts) + "</svg>"


# --- lines -----------------------------------------------------------------------------------


def lines(series: Sequence[Series], *, x_labels: Sequence[str], y_label: str, unit: str, width: int = 640,
          height: int = 260, title: str = "") -> str:
    """Lines over categorical x positions (versions, nights), gaps where a value is missing."""
    known = [v for s in series for v in s.values if _finite(v)]
    if not known or not x_labels:
        return _empty(width, height, title or y_label, "Nothing measured yet.", "lines")
    box = (70.0, 16.0, width - 20.0, height - 64.0)
    left, top, right, bottom = box
    # One position is drawn in the middle; more spread over the width.
    x = _Scale(0, len(x_labels) - 1, left + 20, right - 20) if len(x_labels) > 1 else _Scale(-1, 1, left, right)
    y = _scale(known, bottom, top, from_zero=True)
    parts = [_open(width, height, title or y_label, "lines")]
    parts += _axes(_Scale(0, 1, left, right), y, box, lambda v: "", lambda v: f"{numbers.significant(v)}")
    step = max(1, math.ceil(len(x_labels) / 10))  # at most ~10 labels fit under the axis
    for index, label in enumerate(x_labels):
        if index % step == 0 or index == len(x_labels) - 1:
            parts.append(_text(x(index), bottom + 16, label, anchor="middle", size=10))
    for number, line in enumerate(series):
        color = line.color or SERIES_COLORS[number % len(SERIES_COLORS)]
        parts += _series(line, x, y, color, unit)
    parts.append(_text(16, (top + bottom) / 2, f"{y_label} ({unit}{', log scale' if y.log else ''})", anchor="middle", size=12,
                       extra=f'transform="rotate(-90 16 {(top + bottom) / 2:.1f})"'))
    cursor = left
    for number, line in enumerate(series):
        color = line.color or SERIES_COLORS[number % len(SERIES_COLORS)]
        parts.append(f'<line x1="{cursor}" y1="{height - 18}" x2="{cursor + 18}" y2="{height - 18}" stroke="{color}" '
                     f'stroke-width="2.5"/>')
        parts.append(_text(cursor + 24, height - 14, line.name, size=11))
        cursor += 34 + 6.5 * len(line.name)
    return "".join(parts) + "</svg>"


def _series(line: Series, x: _Scale, y: _Scale, color: str, unit: str) -> list[str]:
    parts, run = [], []
    for index, value in enumerate([*line.values, None]):
        if _finite(value):
            run.append(f"{x(index):.1f},{y(value):.1f}")
            parts.append(f'<circle cx="{x(index):.1f}" cy="{y(value):.1f}" r="3.5" fill="{color}">'
                         f"<title>{escape(line.name)}: {numbers.significant(value)} {escape(unit)}</title></circle>")
        elif run:
            if len(run) > 1:
                parts.insert(0, f'<polyline points="{" ".join(run)}" fill="none" stroke="{color}" stroke-width="2"/>')
            run = []
    return parts
