"""Charts drawn on the server as inline SVG: numbers and labels in, markup out (pure functions).

No JavaScript and no chart library: a page stays readable when printed, saved or read without
network access. Every text drawn is escaped here, so the markup can be put in a page as it is.

Each chart (but the sparkline, whose figures are printed beside it) comes with its text
alternative: the SVG sits in a box that scrolls on a phone instead of shrinking its labels, and a
``<details>`` under it holds a table of every plotted value, reachable by keyboard. Scatter labels
are placed by ``layout_labels``, which never lets two labels overlap or leave the plot.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from html import escape

from modelhub.dashboard import numbers

PASS = "#2e7d32"
FAIL = "#c62828"
UNKNOWN = "#757575"
FRONTIER = "#1565c0"
LIMIT = "#ef6c00"
LIMIT_INK = "#a84300"  # the limit's captions: its orange darkened to 5.5:1 on white
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
    """One horizontal bar: a label and a value (None: not measured). The bar's colour says only
    whether the value is within the chart's limit; ``passed`` (the overall verdict) is not drawn."""

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


# --- text alternative ------------------------------------------------------------------------


def _figure(chart: str, title: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The chart in its scroll box, then its values as a table a keyboard reaches (``<details>``)."""
    cells = "".join(f'<th scope="col">{escape(h)}</th>' for h in head)
    body = "".join("<tr>" + f'<th scope="row">{escape(row[0])}</th>'
                   + "".join(f'<td class="num">{escape(c)}</td>' for c in row[1:]) + "</tr>" for row in rows)
    return (f'<div class="chart-figure"><div class="chart-scroll" tabindex="0" role="region" '
            f'aria-label="{escape(title)} (chart; scrolls sideways on narrow screens)">{chart}</div>'
            f'<details class="chart-data"><summary>Values plotted ({len(rows)} row{"s" if len(rows) != 1 else ""})'
            f'</summary><div class="chart-data-scroll"><table><caption class="visually-hidden">{escape(title)}'
            f"</caption><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table></div></details></div>")


# --- label layout ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle in pixels (y grows downwards)."""

    left: float
    top: float
    right: float
    bottom: float

    def overlaps(self, other: Box) -> bool:
        """True when the two boxes share any area (touching edges do not count)."""
        return self.left < other.right and other.left < self.right and self.top < other.bottom and other.top < self.bottom

    def within(self, frame: Box) -> bool:
        """True when the box lies wholly inside ``frame``."""
        return (frame.left <= self.left and self.right <= frame.right and frame.top <= self.top
                and self.bottom <= frame.bottom)


def label_size(text: str, size: int = 11, bold: bool = False) -> tuple[float, float]:
    """A generous estimate of a label's width and height: the server cannot measure the browser's
    font, so the box errs wide (DejaVu Sans, the widest common sans, averages ~0.6 em a character)."""
    return (0.68 if bold else 0.63) * size * len(text) + 2, 1.3 * size


def _near_spots(x: float, y: float, width: float, height: float, gap: float) -> Iterator[Box]:
    """The eight classic spots around a point: right, left, above, below, then the diagonals."""
    for left, top in ((x + gap, y - height / 2), (x - gap - width, y - height / 2), (x - width / 2, y - gap - height),
                      (x - width / 2, y + gap), (x + gap, y - gap - height), (x + gap, y + gap),
                      (x - gap - width, y - gap - height), (x - gap - width, y + gap)):
        yield Box(left, top, left + width, top + height)


def _far_spots(x: float, y: float, width: float, height: float, frame: Box, step: float = 6.0) -> Iterator[Box]:
    """Spots of a grid over ``frame`` in rings of growing distance from the box centred on the
    point (its label then gets a leader line); lazy, so a label none of the near spots could take
    only pays for the rings it searches."""
    left0, top0 = x - width / 2, y - height / 2
    rings = int(max(frame.right - frame.left, frame.bottom - frame.top) / step) + 1
    for ring in range(1, rings + 1):
        for i in range(-ring, ring + 1):
            for j in (range(-ring, ring + 1) if abs(i) == ring else (-ring, ring)):
                box = Box(left0 + i * step, top0 + j * step, left0 + i * step + width, top0 + j * step + height)
                if box.within(frame):
                    yield box


def layout_labels(anchors: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]], frame: Box, *,
                  radius: float = 7.0, obstacles: Sequence[Box] = ()) -> list[Box | None]:
    """A box for each anchor's label, inside ``frame``, overlapping no other label, no point (a square
    of ``radius`` around each anchor) and no obstacle; None for a label that fits nowhere.

    Greedy, most crowded points first (their choices are fewest): each label takes the first free
    spot of the eight around its point, else the nearest free spot of a grid over the frame."""
    points = [Box(x - radius, y - radius, x + radius, y + radius) for x, y in anchors]
    taken: list[Box] = [*points, *obstacles]

    def crowding(i: int) -> int:
        return sum(1 for x, y in anchors if abs(x - anchors[i][0]) < 80 and abs(y - anchors[i][1]) < 30)

    placed: list[Box | None] = [None] * len(anchors)
    failed: list[tuple[float, float]] = []  # sizes the whole frame had no room for: no larger label fits later
    for i in sorted(range(len(anchors)), key=lambda i: (-crowding(i), i)):
        (x, y), (width, height) = anchors[i], sizes[i]
        hopeless = any(width >= w and height >= h for w, h in failed)
        spots = itertools.chain(_near_spots(x, y, width, height, radius + 3),
                                () if hopeless else _far_spots(x, y, width, height, frame))
        fits = (box for box in spots
                if box.within(frame) and not any(box.overlaps(other) for other in taken))
        placed[i] = next(fits, None)
        if placed[i] is not None:
            taken.append(placed[i])
        elif not hopeless:
            failed.append((width, height))
    return placed


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


def _caption_box(x: float, baseline: float, text: str, size: int = 10) -> Box:
    """Where an end-anchored caption drawn at (x, baseline) lies, for the label layout to avoid."""
    width, height = label_size(text, size)
    return Box(x - width, baseline - 0.95 * size, x, baseline - 0.95 * size + height)


def _limits(x: _Scale, y: _Scale, box: tuple[float, float, float, float], x_limit: float | None,
            y_limit: float | None, x_caption: str, y_caption: str, notes: list[str]) -> tuple[list[str], list[Box]]:
    """The limit lines and the region meeting both, and where their captions lie; a limit beyond
    the axis becomes a note."""
    left, top, right, bottom = box
    parts, captions = [], []
    x_in, y_in = x.contains(x_limit), y.contains(y_limit)
    # The region that meets every drawn limit, shaded: a point inside it passes on these two axes.
    region_right = x(x_limit) if x_in else right
    region_top, region_bottom = top, (y(y_limit) if y_in else bottom)
    parts.append(f'<rect class="passing-region" x="{left}" y="{region_top:.1f}" width="{region_right - left:.1f}" '
                 f'height="{region_bottom - region_top:.1f}" fill="{PASS}" fill-opacity="0.06"/>')
    dash = f'stroke="{LIMIT}" stroke-width="1.5" stroke-dasharray="6 4"'
    if x_in:
        parts.append(f'<line class="limit" x1="{x(x_limit):.1f}" y1="{top}" x2="{x(x_limit):.1f}" y2="{bottom}" {dash}/>')
        parts.append(_text(x(x_limit) - 4, bottom - 6, x_caption, anchor="end", color=LIMIT_INK, size=10))
        captions.append(_caption_box(x(x_limit) - 4, bottom - 6, x_caption))
    elif _finite(x_limit):
        notes.append(f"{x_caption} is off the chart (every point is {'within' if x_limit > x.hi else 'beyond'} it)")
    if y_in:
        parts.append(f'<line class="limit" x1="{left}" y1="{y(y_limit):.1f}" x2="{right}" y2="{y(y_limit):.1f}" {dash}/>')
        parts.append(_text(right - 4, y(y_limit) - 4, y_caption, anchor="end", color=LIMIT_INK, size=10))
        captions.append(_caption_box(right - 4, y(y_limit) - 4, y_caption))
    elif _finite(y_limit):
        notes.append(f"{y_caption} is off the chart")
    return parts, captions


def pareto_2d(points: Sequence[Point], higher_is_better: bool = True) -> list[bool]:
    """For each point, whether no other point is at least as good on both plotted axes (x lower,
    y better) and strictly better on one: the frontier of the two axes drawn, not of any other."""
    sign = 1.0 if higher_is_better else -1.0

    def beats(a: Point, b: Point) -> bool:
        return a.x <= b.x and sign * a.y >= sign * b.y and (a.x < b.x or sign * a.y > sign * b.y)

    return [not any(beats(other, point) for other in points if other is not point) for point in points]


def _points(drawn: list[Point], x: _Scale, y: _Scale, frontier: list[bool], frame: Box, obstacles: list[Box],
            fmt_x: Callable[[float], str], fmt_y: Callable[[float], str]) -> tuple[list[str], list[str]]:
    """The frontier line, the points, and their labels where ``layout_labels`` found room; the
    names of the points left without a label on the chart."""
    parts = []
    line = sorted((p for p, on in zip(drawn, frontier, strict=True) if on), key=lambda p: (p.x, p.y))
    if len(line) > 1:
        vertices = " ".join(f"{x(p.x):.1f},{y(p.y):.1f}" for p in line)
        parts.append(f'<polyline class="pareto" points="{vertices}" fill="none" stroke="{FRONTIER}" stroke-width="2" '
                     f'stroke-opacity="0.6"/>')
    anchors = [(x(p.x), y(p.y)) for p in drawn]
    names = [p.label + (" (production)" if p.production else "") for p in drawn]
    boxes = layout_labels(anchors, [label_size(n, 11, p.production) for n, p in zip(names, drawn, strict=True)],
                          frame, obstacles=obstacles)
    unlabelled = []
    for point, on, (px, py), name, box in zip(drawn, frontier, anchors, names, boxes, strict=True):
        tooltip = f"{point.label}: {fmt_x(point.x)}, {fmt_y(point.y)}, {_verdict_word(point.passed)}"
        ring = f'stroke="{FRONTIER}" stroke-width="3"' if on else 'stroke="white" stroke-width="1.5"'
        parts.append(f'<circle class="point" cx="{px:.1f}" cy="{py:.1f}" r="{7 if point.production else 6}" '
                     f'fill="{_color(point.passed)}" {ring}><title>{escape(tooltip)}</title></circle>')
        if box is None:
            unlabelled.append(point.label)
            continue
        parts += _leader(px, py, box)
        parts.append(_text(box.left + 1, box.top + 0.95 * 11, name, size=11,
                           weight="bold" if point.production else "normal", extra='class="point-label"'))
    return parts, unlabelled


def _leader(px: float, py: float, box: Box) -> list[str]:
    """A thin line from a point to its label when the label had to sit away from it."""
    nx, ny = min(max(px, box.left), box.right), min(max(py, box.top), box.bottom)
    if math.hypot(nx - px, ny - py) <= 14:
        return []
    return [f'<line class="leader" x1="{px:.1f}" y1="{py:.1f}" x2="{nx:.1f}" y2="{ny:.1f}" stroke="{UNKNOWN}" '
            f'stroke-width="0.8"/>']


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
    """Variants by latency (x) and accuracy (y, better up), the Pareto frontier of these two axes
    joined, the profile's limits dashed and the region meeting both shaded; unmeasured variants
    are listed, and ``notes`` (why other variants are not drawn) written under the legend. The
    table under the chart holds every drawn value."""
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
    frontier = pareto_2d(drawn, higher_is_better)
    limit_parts, captions = _limits(x, y, box, x_limit, y_limit, limit_x, limit_y, notes)
    point_parts, unlabelled = _points(drawn, x, y, frontier, Box(box[0] + 2, box[1] + 2, box[2] - 2, box[3] - 2),
                                      captions, fmt_x, fmt_y)
    summary = f"{title}: {len(drawn)} variant{'s' if len(drawn) != 1 else ''}; values in the table below"
    parts = [_open(width, height, summary, "scatter"), *_axes(x, y, box, fmt_x, fmt_y), *limit_parts, *point_parts]
    parts.append(_text((box[0] + box[2]) / 2, box[3] + 34, x_label + (", log scale" if x.log else ""),
                       anchor="middle", size=12))
    parts.append(_text(16, (box[1] + box[3]) / 2, f"{y_label} (better ↑)", anchor="middle", size=12,
                       extra=f'transform="rotate(-90 16 {(box[1] + box[3]) / 2:.1f})"'))
    verdicts = [(PASS, "passes"), (FAIL, "fails")] + ([(UNKNOWN, "not judged")] if any(p.passed is None for p in drawn)
                                                      else [])
    parts += _legend(box[0], height - 52, [*verdicts, ("frontier", "Pareto frontier"), ("limit", "profile limit")])
    if unlabelled:
        notes.append(f"{len(unlabelled)} variant{'s' if len(unlabelled) != 1 else ''} too crowded to label: "
                     "see the table below")
    if missing:
        notes.append("not drawn (not measured): " + ", ".join(missing))
    notes += given
    for line, note in enumerate(notes):
        parts.append(_text(box[0], height - 34 + 14 * line, note, size=10, color=LIMIT_INK if "limit" in note else UNKNOWN))
    rows = [[p.label + (" (production)" if p.production else ""), fmt_x(p.x), fmt_y(p.y), _verdict_word(p.passed),
             "yes" if on else "no"] for p, on in sorted(zip(drawn, frontier, strict=True), key=lambda pair: pair[0].x)]
    rows += [[label, "—", "—", "not measured", "—"] for label in missing]
    return _figure("".join(parts) + "</svg>", title, ["Variant", x_label, y_label, "Verdict", "Pareto frontier"], rows)


# --- bars ------------------------------------------------------------------------------------


def _bar_color(value: float, limit: float | None) -> str:
    """Green within the limit, red over it, neutral without one: the bar's own check only."""
    if not _finite(limit):
        return FRONTIER
    return PASS if value <= limit else FAIL


def bars(items: Sequence[Bar], *, unit: str, limit: float | None = None, width: int = 640,
         title: str = "Size of each variant") -> str:
    """Horizontal bars, one per item, its value printed at its end, coloured by the limit alone
    (within it or over it); the limit dashed."""
    if not items:
        return _empty(width, 80, title, "No variants yet.", "bars")
    row, top, left, right = 26, 26, 150.0, width - 90.0
    height = int(top + row * len(items) + 34)
    values = [b.value for b in items if _finite(b.value)] + ([limit] if _finite(limit) else [])
    x = _scale(values or [1.0], left, right, from_zero=True)
    parts = [_open(width, height, f"{title}: values in the table below", "bars")]
    for tick in x.ticks:
        parts.append(f'<line x1="{x(tick):.1f}" y1="{top - 6}" x2="{x(tick):.1f}" y2="{height - 28}" stroke="{GRID}"/>')
        parts.append(_text(x(tick), height - 14, f"{numbers.significant(tick)} {unit}", anchor="middle", size=10))
    rows = []
    for index, bar in enumerate(items):
        y0 = top + index * row
        name = bar.label + (" ★" if bar.production else "")
        parts.append(_text(left - 8, y0 + 13, name, anchor="end", size=11, weight="bold" if bar.production else "normal"))
        if not _finite(bar.value):
            parts.append(_text(left + 4, y0 + 13, "not measured", size=10, color=UNKNOWN))
            rows.append([bar.label, "not measured", "—"])
            continue
        length = max(1.0, x(bar.value) - left)
        check = "" if not _finite(limit) else "within the limit" if bar.value <= limit else "over the limit"
        parts.append(f'<rect class="bar" x="{left}" y="{y0}" width="{length:.1f}" height="{row - 8}" '
                     f'fill="{_bar_color(bar.value, limit)}" fill-opacity="0.85"><title>{escape(bar.label)}: '
                     f'{numbers.significant(bar.value)} {escape(unit)}{", " + check if check else ""}</title></rect>')
        parts.append(_text(left + length + 6, y0 + 13, f"{numbers.significant(bar.value)} {unit}", size=11))
        rows.append([bar.label + (" (production)" if bar.production else ""), f"{numbers.significant(bar.value)} {unit}",
                     check or "no limit"])
    if _finite(limit):
        parts.append(f'<line class="limit" x1="{x(limit):.1f}" y1="{top - 10}" x2="{x(limit):.1f}" y2="{height - 28}" '
                     f'stroke="{LIMIT}" stroke-width="1.5" stroke-dasharray="6 4"/>')
        parts.append(_text(x(limit) + 4, top - 12, f"limit {numbers.significant(limit)} {unit}", color=LIMIT_INK, size=10))
    head = ["Variant", f"Value ({unit})", f"Against the limit ({numbers.significant(limit)} {unit})"
            if _finite(limit) else "Against a limit"]
    return _figure("".join(parts) + "</svg>", title, head, rows)


# --- lines -----------------------------------------------------------------------------------


def shared_domain(*groups: Sequence[Series]) -> tuple[float, float] | None:
    """The lowest and highest value over several charts' series, for charts shown side by side to
    share one y scale (None when nothing is known)."""
    known = [v for series in groups for line in series for v in line.values if _finite(v)]
    return (min(known), max(known)) if known else None


def lines(series: Sequence[Series], *, x_labels: Sequence[str], y_label: str, unit: str, width: int = 640,
          height: int = 260, title: str = "", y_domain: tuple[float, float] | None = None) -> str:
    """Lines over categorical x positions (versions, nights), gaps where a value is missing; the y
    scale covers ``y_domain`` too (``shared_domain`` of charts set side by side)."""
    known = [v for s in series for v in s.values if _finite(v)]
    if not known or not x_labels:
        return _empty(width, height, title or y_label, "Nothing measured yet.", "lines")
    box = (70.0, 16.0, width - 20.0, height - 64.0)
    left, top, right, bottom = box
    # One position is drawn in the middle; more spread over the width.
    x = _Scale(0, len(x_labels) - 1, left + 20, right - 20) if len(x_labels) > 1 else _Scale(-1, 1, left, right)
    y = _scale(known + [v for v in (y_domain or ()) if _finite(v)], bottom, top, from_zero=True)
    parts = [_open(width, height, f"{title or y_label}: values in the table below", "lines")]
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
    rows = [[label, *(f"{numbers.significant(s.values[i])} {unit}" if i < len(s.values) and _finite(s.values[i])
                      else "—" for s in series)] for i, label in enumerate(x_labels)]
    return _figure("".join(parts) + "</svg>", title or y_label, ["", *(s.name for s in series)], rows)


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
