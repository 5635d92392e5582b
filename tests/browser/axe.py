"""axe-core in the browser tests: the pinned npm package (``node_modules/axe-core``) injected into
the page under test, never a CDN, and its violations written so a reader sees what to fix.

``violations(page)`` runs every rule axe enables by default (WCAG 2.x A and AA plus its best
practices); ``assert_accessible(page, name)`` fails with one readable paragraph per violation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
# The result keeps what a reader needs to find the element: rule, impact, help and the first nodes.
_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, url: v.helpUrl,
    nodes: v.nodes.map(n => ({target: n.target.join(" "), html: n.html.slice(0, 200),
                             summary: n.failureSummary || ""}))}));
}"""


def violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (the script injected once per document)."""
    if not AXE.is_file():
        raise FileNotFoundError(f"axe-core is missing at {AXE}: run `make install` (npm ci) first.")
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    return page.evaluate(_RUN)


def describe(found: list[dict[str, Any]], limit: int = 5) -> str:
    """The violations as text: rule, impact, help, then up to ``limit`` elements with their fix."""
    lines = []
    for v in found:
        lines.append(f"- {v['id']} ({v['impact']}, {len(v['nodes'])} element(s)): {v['help']} <{v['url']}>")
        for node in v["nodes"][:limit]:
            summary = " ".join(node["summary"].split())
            lines.append(f"    at {node['target']}: {node['html']}\n      {summary}")
    return "\n".join(lines)


def assert_accessible(page: Any, name: str) -> None:
    """Fail, naming the page and every violation, unless axe finds none."""
    found = violations(page)
    assert not found, f"axe-core found {len(found)} kind(s) of violation on {name} ({page.url}):\n{describe(found)}"
