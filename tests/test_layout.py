"""The house's rules: the data path's two halves import in one direction, and every job is named in one table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from rq.utils import import_attribute

from dashboard.jobqueue import JOBS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dashboard"


def imports_of(path: Path) -> set[str]:
    """The dashboard modules a file imports, relative imports resolved (`..extensions` → `dashboard.extensions`)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("dashboard")}


@pytest.mark.parametrize("path", sorted((PACKAGE / "engine").glob("*.py")), ids=lambda p: p.name)
def test_the_engine_never_imports_what_comes_in_nor_what_sits_on_top(path):
    for module in imports_of(path):
        assert not re.match(r"dashboard\.(mirror|uploads|views|actions|cli)\b", module), f"{path.name}: {module}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "mirror").glob("*.py")), ids=lambda p: p.name)
def test_the_mirror_uses_the_engine_only_to_mark_intent_record_problems_and_write_back(path):
    for module in imports_of(path):
        if module.startswith("dashboard.engine."):
            assert module.split(".")[2] in {"intent", "writeback", "problems"}, f"{path.name}: {module}"
        assert not re.match(r"dashboard\.(uploads|views|actions|cli)\b", module), f"{path.name}: {module}"


@pytest.mark.parametrize("name", sorted(JOBS))
def test_every_job_in_the_table_is_an_importable_function(name):
    assert callable(import_attribute(name))


def test_no_module_spells_a_job_name_outside_the_table():
    spelled = re.compile(r"""["']jobs\.[a-z_]+\.[a-z_]+["']""")
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "jobqueue.py":
            continue
        assert not spelled.search(path.read_text()), f"{path.relative_to(ROOT)} spells a job name: use jobqueue.JOBS"
