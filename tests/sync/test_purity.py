"""The sync core is plain Python: its modules import nothing from Flask, Redis, SQLAlchemy, httpx or RQ."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dashboard.sync

FORBIDDEN = {"flask", "flask_sqlalchemy", "redis", "rq", "sqlalchemy", "httpx"}
CORE = sorted(Path(dashboard.sync.__file__).parent.glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names} | {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_module_imports_no_framework_and_no_adapter(path):
    for module in imported_modules(path):
        top = module.split(".")[0]
        assert top not in FORBIDDEN, f"{path.name} imports {module}"
        assert top != "dashboard" or module.startswith("dashboard.sync"), f"{path.name} imports {module}"
