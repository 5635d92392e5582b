"""The project's own documents stay equal to the code: every reliability case code that a test
names is catalogued in docs/reliability.md with the files that test it, and every file named there
does test it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = re.compile(r"\b([A-G]\d{1,2})\b")
ROW = re.compile(r"^\| ([A-G]\d{1,2}) \| (.+?) \| (.+?) \|$")


def _codes_in_tests() -> dict[str, set[str]]:
    """Case code → test files with a test whose docstring names it ("A4: ...", "C1 (...), C2 (...)")."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                for code in CODE.findall(ast.get_docstring(node) or ""):
                    found.setdefault(code, set()).add(str(path.relative_to(ROOT)))
    return found


def _catalogue() -> dict[str, set[str]]:
    rows = (ROW.match(line) for line in (ROOT / "docs" / "reliability.md").read_text().splitlines())
    return {row[1]: set(re.findall(r"`([^`]+)`", row[3])) for row in rows if row}


def test_every_case_a_test_names_is_catalogued_with_its_test_files() -> None:
    catalogue, tested = _catalogue(), _codes_in_tests()
    missing = {code: sorted(files - catalogue.get(code, set())) for code, files in tested.items()
               if files - catalogue.get(code, set())}
    assert not missing, f"docs/reliability.md lacks these case → test files: {missing}"


def test_every_file_the_catalogue_names_tests_that_case() -> None:
    tested = _codes_in_tests()
    stale = {code: sorted(files - tested.get(code, set())) for code, files in _catalogue().items()
             if files - tested.get(code, set())}
    assert not stale, f"docs/reliability.md names files that do not test the case: {stale}"


def test_the_readme_links_the_architecture_and_reliability_documents() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/architecture.md" in readme and "docs/reliability.md" in readme
    for path in re.findall(r"`((?:modelhub|predictions|workers)/[\w/]+\.py)`", (ROOT / "docs" / "architecture.md").read_text()):
        assert (ROOT / path).is_file(), f"docs/architecture.md names {path}, which does not exist"
