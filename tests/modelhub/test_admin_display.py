"""The admin's display of stored rows: figures with their unit, JSON as tables (pure rendering)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from modelhub.admin_display import json_table, number


def test_figures_are_written_with_the_unit_their_name_says() -> None:
    """B3 (rows only services write are shown, not edited): latencies in ms, memory and sizes in
    MB, progress in %, throughput per second, ratios as ×; other numbers keep four digits."""
    assert number("p95_ms", 0.125104) == "0.125 ms"
    assert number("peak_memory_mb", 17.43) == "17.4 MB"
    assert number("size_bytes", 2.65 * 1024 * 1024) == "2.65 MB"
    assert number("progress", 45.0) == "45 %"
    assert number("throughput", 24017.2) == "24,017 /s"
    assert number("min_speedup", 1.25) == "1.25×" and number("ratio", 0.5) == "0.5"  # a pruning ratio
    assert number("value", 2.64) == "2.64" and number("value", 2.64, field=True) == "2.64 ms"  # a regression's
    assert number("mae", 0.000832712) == "0.0008327"
    assert number("attempts", 3) == "3" and number("enough", True) == "True"


def test_json_is_drawn_as_tables_with_formatted_cells_and_bounded_lists() -> None:
    """B3: an object becomes a two-column table, a list of objects a table with a column per key,
    a long list of plain values its first twenty and a count; nothing is left as raw JSON."""
    html = str(json_table({"p50": {"value_ms": 0.0682, "calls": 300},
                           "checks": [{"rule": "size_mb", "limit_mb": 5.0}, {"rule": "p95_ms", "limit_mb": None}],
                           "rounds": list(range(30))}, "intervals"))
    tree = ET.fromstring(f"<root>{html}</root>")
    top = tree.find("table")
    assert [th.text for th in top.findall("tr/th")] == ["p50", "checks", "rounds"]
    assert "0.0682 ms" in html and "5 MB" in html and "—" in html
    records = tree.find(".//div[@class='mh-json-scroll']")
    assert records.get("tabindex") == "0" and records.get("aria-label") == "intervals › checks (scrolls sideways)"
    assert [th.text for th in records.findall(".//thead/tr/th")] == ["rule", "limit_mb"]
    assert "… and 10 more" in html and "{" not in html
