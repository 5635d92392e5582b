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
