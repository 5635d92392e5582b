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
PURE = [ROOT / "workers"]  # the whole engine: its Celery tasks live on the Django side
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


# --- the rooms' boundaries ------------------------------------------------------------------------

APP_PACKAGES = ("modelhub", "predictions", "workers")


def _app_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the three packages by dotted name (migrations are history, not code)."""
    modules = {}
    for package in APP_PACKAGES:
        for path in (root / package).rglob("*.py"):
            if "migrations" not in path.parts:
                modules[".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")] = path
    return modules


def _imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (a lazy import inside a function
    ties two modules as firmly as one at the top)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_circles(root: Path = ROOT) -> list[list[str]]:
    """The project's import circles: strongly connected groups of modules (Tarjan's algorithm)."""
    modules = _app_modules(root)
    graph = {name: _imports_of(name, path, modules) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_module_of_the_project_is_part_of_an_import_circle() -> None:
    """No two modules of modelhub, predictions and workers import each other, directly or round a
    circle (run this file's ``import_circles()`` to list them)."""
    assert import_circles() == []


def test_the_circle_check_sees_a_circle_closed_by_a_lazy_import(tmp_path: Path) -> None:
    """Control: a circle closed inside a function body is still a circle."""
    (tmp_path / "modelhub").mkdir()
    (tmp_path / "modelhub" / "__init__.py").write_text("")
    (tmp_path / "modelhub" / "a.py").write_text("from modelhub import b\n")
    (tmp_path / "modelhub" / "b.py").write_text("def f():\n    from modelhub.a import thing\n")
    assert import_circles(tmp_path) == [["modelhub.a", "modelhub.b"]]


def test_the_registry_never_imports_the_serving_app() -> None:
    """The registry announces routing changes by signal; only the WSGI composition root, which
    mounts both apps in one process, may import predictions."""
    offenders = [name for name, path in _app_modules().items()
                 if name.startswith("modelhub") and name != "modelhub.wsgi"
                 and "predictions" in _imported_roots(path)]
    assert offenders == []


# Rows whose every write is a lifecycle transition, and the one module allowed to write each.
LIFECYCLE_WRITERS = {"Deployment": "modelhub/services.py", "PromotionEvent": "modelhub/services.py",
                     "GoverningProfile": "modelhub/services.py", "GoverningProfileChange": "modelhub/services.py"}
STATUS_WRITERS = {"OptimizationJob": "modelhub/jobs.py", "ModelVersion": "modelhub/services.py"}
WRITES = {"create", "update", "save", "delete", "bulk_create", "get_or_create", "update_or_create"}


def _lifecycle_writes(path: Path) -> list[tuple[str, int]]:
    """(model, line) of each write in ``path`` to a lifecycle row, or of a status to a job or version."""
    writes = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITES):
            continue
        receiver = ast.unparse(node.func.value)
        model = receiver.split(".")[0]
        if model in LIFECYCLE_WRITERS and ".objects" in receiver:
            writes.append((model, node.lineno))
        elif model in STATUS_WRITERS and ".objects" in receiver and any(k.arg == "status" for k in node.keywords):
            writes.append((model, node.lineno))
    return writes


def test_lifecycle_transitions_are_written_only_by_their_services() -> None:
    """Deployments, promotions and governing profiles change only in ``services``, a job's status
    only in ``jobs``, a version's only in ``services``: one place to read for each transition."""
    writers = {**LIFECYCLE_WRITERS, **STATUS_WRITERS}
    offenders = [f"{path.relative_to(ROOT)}:{line} writes {model}"
                 for path in _app_modules().values() for model, line in _lifecycle_writes(path)
                 if str(path.relative_to(ROOT)) != writers[model]]
    assert offenders == []


def test_the_lifecycle_check_sees_a_write_outside_its_service(tmp_path: Path) -> None:
    """Control: the check above is not blind to the spellings it looks for."""
    sample = tmp_path / "sample.py"
    sample.write_text("Deployment.objects.create(alias='x')\nOptimizationJob.objects.filter(pk=1).update(status='X')\n"
                      "OptimizationJob.objects.filter(pk=1).update(result={})\n")
    assert _lifecycle_writes(sample) == [("Deployment", 1), ("OptimizationJob", 2)]
