"""The house rules that code review alone would let slip."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = [ROOT / "workers" / "passes", ROOT / "workers" / "evaluation", ROOT / "workers" / "planner.py",
        ROOT / "workers" / "formats.py", ROOT / "workers" / "samples.py"]
WEB_PACKAGES = {"django", "rest_framework", "modelhub", "predictions", "celery"}


def _pure_files() -> list[Path]:
    files: list[Path] = []
    for entry in PURE:
        files += sorted(entry.rglob("*.py")) if entry.is_dir() else [entry]
    return files


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_pure_engine_never_imports_the_web_layer(path: Path) -> None:
    assert not _imported_roots(path) & WEB_PACKAGES


def test_the_pure_engine_imports_with_django_unavailable() -> None:
    modules = ["workers." + str(p.relative_to(ROOT / "workers")).removesuffix(".py").replace("/", ".")
               for p in _pure_files()]
    code = ("import sys\nfor name in ('django', 'rest_framework', 'celery'): sys.modules[name] = None\n"
            + "".join(f"import {m.removesuffix('.__init__')}\n" for m in modules))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_no_code_calls_torch_load_without_weights_only() -> None:
    offenders = []
    for path in [*ROOT.glob("modelhub/**/*.py"), *ROOT.glob("workers/**/*.py"), *ROOT.glob("predictions/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                    and not any(k.arg == "weights_only" and getattr(k.value, "value", None) is True
                                for k in node.keywords)):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_the_pinned_torch_is_new_enough_for_safe_loading() -> None:
    import torch

    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    assert (major, minor) >= (2, 10)
