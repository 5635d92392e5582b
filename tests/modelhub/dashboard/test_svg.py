"""Server-side charts and number formatting: pure functions, checked on their markup and text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from modelhub.dashboard import numbers, svg

NS = {"s": "http://www.w3.org/2000/svg"}


def _tree(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # well-formed XML, or this raises


def _texts(markup: str) -> list[str]:
    return [node.text or "" for node in _tree(markup).iterfind(".//s:text", NS)]


def test_numbers_keep_three_significant_digits_and_say_their_unit() -> None:
    assert numbers.milliseconds(0.21534) == "0.215 ms"
    assert numbers.milliseconds(1250.4) == "1,250 ms"
    assert numbers.megabytes(2.65 * 1024 * 1024) == "2.65 MB"
    assert numbers.megabytes(2048) == "2 kB"
    assert numbers.throughput(24017.2) == "24,017 /s"
    assert numbers.metric(0.00083271) == "0.0008327"
    assert numbers.milliseconds(None) == numbers.milliseconds(float("nan")) == "—"


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    assert svg.nice_ticks(0, 4.4) == [0, 1, 2, 3, 4, 5]
    assert svg.nice_ticks(0.0008, 0.109)[:3] == [0, 0.025, 0.05]
    assert svg.log_ticks(0.2, 71) == [0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]


def test_a_sparkline_needs_two_runs_and_draws_one_vertex_per_run() -> None:
    assert svg.sparkline([0.3]) == ""
    assert svg.sparkline([None, 0.3]) == ""
    line = _tree(svg.sparkline([0.22, 0.25, None, 0.27, 0.23], title="nightly p95"))
    points = line.find("s:polyline", NS).get("points").split()
    assert len(points) == 4
    assert "last 0.23 ms" in line.find("s:title", NS).text


def test_the_scatter_draws_each_variant_the_frontier_and_the_limits() -> None:
    points = [svg.Point("original", 4.5, 0.0, passed=False, pareto=True),
              svg.Point("int8", 0.21, 0.0008, passed=True, pareto=True, production=True),
              svg.Point("pruned", 4.2, 0.109, passed=False)]
    markup = svg.scatter(points, x_label="p95 (ms)", y_label="mae", x_limit=5.0, y_limit=0.02,
                         higher_is_better=False)
    tree = _tree(markup)
    assert len(tree.findall(".//s:circle[@class='point']", NS)) == 3
    assert len(tree.find(".//s:polyline[@class='pareto']", NS).get("points").split()) == 2
    assert len(tree.findall(".//s:line[@class='limit']", NS)) == 2
    assert "int8 (production)" in _texts(markup)


def test_the_scatter_moves_a_far_away_limit_into_a_note_and_lists_unmeasured_variants() -> None:
    points = [svg.Point("a", 0.2, 0.9, passed=True), svg.Point("b", 0.3, 0.95, passed=True),
              svg.Point("c", None, None)]
    texts = _texts(svg.scatter(points, x_label="p95", y_label="agreement", x_limit=500.0))
    assert any("limit 500 ms is off the chart" in t for t in texts)
    assert "not drawn (not measured): c" in texts


def test_latencies_spanning_orders_of_magnitude_get_a_log_axis() -> None:
    points = [svg.Point("fast", 0.2, 0.9), svg.Point("slow", 71.0, 0.95)]
    texts = _texts(svg.scatter(points, x_label="p95 latency (ms)", y_label="agreement"))
    assert "p95 latency (ms), log scale" in texts
    assert {"0.2 ms", "1 ms", "10 ms", "100 ms"} <= set(texts)


def test_chart_text_is_escaped() -> None:
    markup = svg.scatter([svg.Point("<script>alert(1)</script>", 1.0, 0.5)], x_label="x", y_label="y")
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    assert "<b>" not in svg.bars([svg.Bar("<b>", 1.0)], unit="MB")


def test_bars_draw_measured_items_and_say_which_are_not() -> None:
    markup = svg.bars([svg.Bar("original", 10.5, passed=False), svg.Bar("int8", 2.65, passed=True, production=True),
                       svg.Bar("broken", None)], unit="MB", limit=5.0)
    tree = _tree(markup)
    assert len(tree.findall(".//s:rect[@class='bar']", NS)) == 2
    assert "not measured" in _texts(markup) and "limit 5 MB" in _texts(markup)
    assert tree.find(".//s:line[@class='limit']", NS) is not None


def test_lines_leave_gaps_where_a_version_was_not_measured() -> None:
    markup = svg.lines([svg.Series("chosen", [0.2, None, 0.3, 0.25])], x_labels=["v1", "v2", "v3", "v4"],
                       y_label="p95", unit="ms")
    tree = _tree(markup)
    assert len(tree.findall(".//s:circle", NS)) == 3
    assert [len(p.get("points").split()) for p in tree.findall(".//s:polyline", NS)] == [2]


def test_empty_charts_say_so() -> None:
    assert "No variant has both a latency and an accuracy yet." in svg.scatter([], x_label="x", y_label="y")
    assert "Nothing measured yet." in svg.lines([], x_labels=[], y_label="p95", unit="ms")


def _crowd(count: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """``count`` points packed into a 40 × 20 px patch, each with a long label."""
    anchors = [(300 + (i * 7) % 40, 150 + (i * 11) % 20) for i in range(count)]
    return anchors, [svg.label_size(f"variant-number-{i}") for i in range(count)]


def _no_two_overlap(boxes: list[svg.Box]) -> bool:
    return not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_the_label_layout_never_overlaps_or_clips_even_when_points_crowd() -> None:
    """G13 (never silent): twelve points packed into a few pixels still get twelve labels, each
    inside the plot, none over another label or over any point."""
    frame = svg.Box(70, 20, 620, 316)
    anchors, sizes = _crowd(12)
    boxes = svg.layout_labels(anchors, sizes, frame)
    assert all(box is not None for box in boxes)
    assert all(box.within(frame) for box in boxes)
    assert _no_two_overlap(boxes)
    points = [svg.Box(x - 7, y - 7, x + 7, y + 7) for x, y in anchors]
    assert not any(box.overlaps(point) for box in boxes for point in points)


def test_the_label_layout_keeps_labels_inside_at_the_frames_edges_and_clear_of_obstacles() -> None:
    """G13: a point in each corner gets its label inside the frame, and no label covers a limit's caption."""
    frame = svg.Box(0, 0, 300, 200)
    anchors = [(2, 2), (298, 2), (2, 198), (298, 198), (150, 100)]
    caption = svg.Box(140, 80, 220, 95)
    boxes = svg.layout_labels(anchors, [svg.label_size("a long label") for _ in anchors], frame, obstacles=[caption])
    assert all(box is not None and box.within(frame) and not box.overlaps(caption) for box in boxes)
    assert _no_two_overlap(boxes)


def test_a_label_that_fits_nowhere_is_left_off_and_the_chart_says_where_to_read_it() -> None:
    """G13: when the plot has no room for a label, none is drawn over another; the chart names the
    unlabelled variants and its table still lists every one."""
    frame = svg.Box(0, 0, 120, 40)
    sizes = _crowd(6)[1]
    anchors = [(60 + i, 20) for i in range(6)]
    boxes = svg.layout_labels(anchors, sizes, frame)
    assert None in boxes and _no_two_overlap([b for b in boxes if b])
    crowded = [svg.Point(f"variant-number-{i}", 1.0 + i * 1e-4, 0.9, passed=True) for i in range(40)]
    markup = svg.scatter(crowded, x_label="p50 (ms)", y_label="agreement", width=320, height=260)
    labels = [t for t in _texts(markup) if t.startswith("variant-number-")]
    assert f"{40 - len(labels)} variants too crowded to label: see the table below" in _texts(markup)
    assert len(_tree(markup).findall(".//table/tbody/tr")) == 40


def test_the_pareto_line_joins_only_points_pareto_on_both_plotted_axes() -> None:
    """G13: a variant on the 3-axis frontier only by its size (slower and less accurate than
    another) is neither on the drawn frontier line nor ringed."""
    points = [svg.Point("fast", 1.0, 0.95, pareto=True), svg.Point("accurate", 3.0, 0.99, pareto=True),
              svg.Point("small-only", 4.0, 0.90, pareto=True), svg.Point("dominated", 2.0, 0.94)]
    assert svg.pareto_2d(points) == [True, True, False, False]
    assert svg.pareto_2d([svg.Point("a", 1.0, 0.1), svg.Point("b", 2.0, 0.05)], higher_is_better=False) == [True, True]
    tree = _tree(svg.scatter(points, x_label="p50 (ms)", y_label="agreement"))
    assert len(tree.find(".//s:polyline[@class='pareto']", NS).get("points").split()) == 2
    assert [row.findall("td")[-1].text for row in tree.findall(".//table/tbody/tr")] == ["yes", "no", "yes", "no"]


def test_size_bars_are_coloured_by_the_size_limit_alone() -> None:
    """G13: a variant under the size limit is green even when its overall verdict fails, one over it
    red even when it passes; without a limit no bar claims either."""
    markup = svg.bars([svg.Bar("small-but-inaccurate", 2.0, passed=False), svg.Bar("big-but-passing", 9.0, passed=True)],
                      unit="MB", limit=5.0)
    fills = [bar.get("fill") for bar in _tree(markup).findall(".//s:rect[@class='bar']", NS)]
    assert fills == [svg.PASS, svg.FAIL]
    rows = [[c.text for c in row] for row in _tree(markup).findall(".//table/tbody/tr")]
    assert rows == [["small-but-inaccurate", "2 MB", "within the limit"], ["big-but-passing", "9 MB", "over the limit"]]
    unlimited = svg.bars([svg.Bar("a", 2.0, passed=False)], unit="MB")
    assert {bar.get("fill") for bar in _tree(unlimited).findall(".//s:rect[@class='bar']", NS)} == {svg.FRONTIER}


def test_charts_shown_side_by_side_share_one_y_scale() -> None:
    """G13: two nightly charts drawn with their shared domain put the same value at the same height."""
    fast = [svg.Series("p95", [0.2, 0.25, 0.22])]
    slow = [svg.Series("p95", [4.0, 4.4, 4.1])]
    domain = svg.shared_domain(fast, slow)
    assert domain == (0.2, 4.4)
    shared = [_texts(svg.lines(s, x_labels=["a", "b", "c"], y_label="p95", unit="ms", y_domain=domain)) for s in (fast, slow)]
    assert shared[0] == shared[1] and shared[0][:6] == ["0", "1", "2", "3", "4", "5"]
    alone = _texts(svg.lines(fast, x_labels=["a", "b", "c"], y_label="p95", unit="ms"))
    assert alone[:6] == ["0", "0.05", "0.1", "0.15", "0.2", "0.25"]
    assert svg.shared_domain([svg.Series("none", [None])]) is None


def test_every_chart_carries_a_table_of_its_plotted_values() -> None:
    """G13 (point values are never hover-only): the scatter, the bars and the lines each come with
    a table of every drawn value inside a details element a keyboard opens."""
    scatter = _tree(svg.scatter([svg.Point("int8", 0.21, 0.9991, passed=True)], x_label="p50 (ms)", y_label="agreement"))
    assert [c.text for c in scatter.find(".//table/tbody/tr")] == ["int8", "0.21 ms", "0.9991", "passes", "yes"]
    assert scatter.find(".//details/summary") is not None
    assert scatter.find(".//div[@class='chart-scroll']").get("tabindex") == "0"
    line = _tree(svg.lines([svg.Series("p95", [0.2, None])], x_labels=["v1", "v2"], y_label="p95", unit="ms"))
    assert [[c.text for c in row] for row in line.findall(".//table/tbody/tr")] == [["v1", "0.2 ms"], ["v2", "—"]]
