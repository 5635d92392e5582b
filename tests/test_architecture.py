"""The house rules that code review alone would let slip."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = [ROOT / "workers" / "passes", ROOT / "workers" / "evaluation", ROOT / "workers" / "planner.py",
        ROOT / "workers" / "formats.py", ROOT / "workers" / "samples.py"]
WEB_PACKAGES = {"django", "rest_framework", "modelhub", "predictions", "celery"}
NOT_OURS = {".venv", ".git", "var", "node_modules", "__pycache__"}


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


def _project_python_files() -> list[Path]:
    """Every .py file of the project (code, tests, bench scripts), none of the virtualenv's."""
    files = list(ROOT.glob("*.py"))
    for entry in sorted(ROOT.iterdir()):
        if entry.is_dir() and entry.name not in NOT_OURS and not entry.name.startswith("."):
            files += [p for p in entry.rglob("*.py") if not NOT_OURS & set(p.parts)]
    return files


def _unsafe_torch_loads(path: Path) -> list[int]:
    """Lines calling torch.load (or torch.serialization.load) without weights_only=True, or importing
    load from torch (a bare load(...) call would escape the first check)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization"):
            lines += [node.lineno for alias in node.names if alias.name == "load"]
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"):
            continue
        target = ast.unparse(node.func.value)
        safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)
        if target in ("torch", "torch.serialization") and not safe:
            lines.append(node.lineno)
    return lines


def test_no_code_calls_torch_load_without_weights_only() -> None:
    """A2: torch.load without weights_only=True unpickles arbitrary code; no file of the project calls it."""
    files = _project_python_files()
    assert ROOT / "modelhub" / "job_runner.py" in files and ROOT / "manage.py" in files
    offenders = [f"{path.relative_to(ROOT)}:{line}" for path in files for line in _unsafe_torch_loads(path)]
    assert offenders == []


def test_the_torch_load_check_catches_the_unsafe_spellings(tmp_path: Path) -> None:
    """A2 control: the check above is not blind."""
    sample = tmp_path / "sample.py"
    sample.write_text("import torch\nfrom torch import load\ntorch.load('a')\ntorch.load('b', weights_only=False)\n"
                      "torch.serialization.load('c')\ntorch.load('d', weights_only=True)\n")
    assert _unsafe_torch_loads(sample) == [2, 3, 4, 5]


def test_the_pinned_torch_is_new_enough_for_safe_loading() -> None:
    """A2: torch >= 2.10 installed here and pinned for the image (CVE-2026-24747 and the weights_only fixes)."""
    import torch

    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    assert (major, minor) >= (2, 10)
    pin = re.search(r"^torch==(\d+)\.(\d+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert pin is not None and (int(pin[1]), int(pin[2])) >= (2, 10)


def test_nothing_turns_off_weights_only_loading() -> None:
    """A2: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (torch.load then unpickles anything) is set in no image, no
    compose service, no build or test configuration, no code, and not in this test run's environment."""
    name = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    assert name not in os.environ
    configs = [ROOT / n for n in ("Dockerfile", "docker-compose.yml", "Makefile", "pyproject.toml", "requirements.txt")]
    configs += [p for p in ROOT.glob(".env*") if p.is_file()]
    mentions = [p for p in configs + _project_python_files() if p != Path(__file__) and name in p.read_text()]
    assert [str(p.relative_to(ROOT)) for p in mentions] == []
