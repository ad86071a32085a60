"""Workflow modules import only the standard library, temporalio, pydantic, each other
and the ride statuses (``domain.status``, itself standard library only):
anything else (SQLModel, NATS, h3 …) has no place in deterministic workflow code, and
would reach the sandbox through ``imports_passed_through``."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
ALLOWED = {"temporalio", "pydantic", "workflows", "__future__"}
STATUS = Path(__file__).resolve().parents[2] / "domain" / "status.py"
ALLOWED_MODULES = {"domain.status"}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module not in ALLOWED_MODULES:
                roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.py")), ids=lambda p: p.name)
def test_workflow_module_imports_only_what_a_workflow_may(path: Path) -> None:
    foreign = {
        r for r in _imported_roots(path) if r not in ALLOWED and r not in sys.stdlib_module_names
    }
    assert not foreign, f"{path.name} imports {sorted(foreign)}"


def test_the_statuses_workflows_import_are_standard_library_only() -> None:
    foreign = {r for r in _imported_roots(STATUS) if r not in sys.stdlib_module_names}
    assert foreign <= {"__future__"}, f"status.py imports {sorted(foreign)}"
