"""No function in the program runs over 60 lines (ruff's C901 and PLR0915 hold complexity
and statements in CI; line length of a function is ours to check).

A schema migration is the one exception: it is a frozen record of what the schema was,
written once and never read as code to follow, so it is spelled out table by table."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "infra", "store", "workflows", "events", "activities", "api",
            "ridehail", "deploy")
MAX_LINES = 60
EXEMPT = (ROOT / "store" / "migrations" / "versions",)


def _program_files() -> list[Path]:
    files = [f for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py"))]
    return [f for f in files if not any(f.is_relative_to(d) for d in EXEMPT)]


def long_functions(source: str, limit: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """Each function in ``source`` longer than ``limit`` lines: (name, first line, lines)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append((node.name, node.lineno, length))
    return found


def test_the_check_finds_a_long_function() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    assert long_functions(f"def f():\n{body}\n") == [("f", 1, MAX_LINES + 1)]
    short = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES - 1))
    assert long_functions(f"def f():\n{short}\n") == []


def test_no_function_in_the_program_is_over_60_lines() -> None:
    files = _program_files()
    assert len(files) > 100  # the whole program is looked at, not an empty glob
    too_long = [f"{f.relative_to(ROOT)}:{line} {name} ({length} lines)"
                for f in files for name, line, length in long_functions(f.read_text())]
    assert too_long == []
