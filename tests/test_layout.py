"""The layout's import rules (docs/layout.md), checked by reading every module's imports.

Imports point one way: command line → flows → operators; flows → sinks; nothing back.
A module that breaks a rule fails here with the import that breaks it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {
    "operators": REPO / "operators",
    "flows": REPO / "flows",
    "sinks": REPO / "sinks",
    "cli": REPO / "meterwax" / "cli",
    "kafka": REPO / "meterwax" / "kafka",
    "reports": REPO / "meterwax" / "reports",
    "repair": REPO / "meterwax" / "repair",
    "meters": REPO / "meterwax" / "meters",
    "synthetic": REPO / "meterwax" / "synthetic",
}
FORBIDDEN = {
    "operators": (
        "bytewax",
        "deltalake",
        "confluent_kafka",
        "click",
        "pyarrow",
        "meterwax.flows",
        "meterwax.sinks",
        "meterwax.cli",
        "meterwax.kafka",
        "meterwax.reports",
        "meterwax.repair",
    ),
    "flows": ("click", "meterwax.cli"),
    "sinks": ("click", "confluent_kafka", "meterwax.flows", "meterwax.cli", "meterwax.kafka"),
    "kafka": ("click", "meterwax.cli", "meterwax.repair", "meterwax.reports"),
    "reports": ("click", "meterwax.cli", "confluent_kafka"),
    "repair": ("click", "meterwax.cli"),
    "meters": ("click", "meterwax.cli", "confluent_kafka", "bytewax"),
    "synthetic": ("click", "meterwax.cli", "bytewax", "deltalake"),
}


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports (``from a.b import c`` counts as ``a.b`` and ``a.b.c``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def violations(package: str, directory: Path | None = None) -> list[str]:
    directory = directory or PACKAGE_DIRS[package]
    problems = []
    for path in sorted(directory.rglob("*.py")):
        for module in imported_modules(path):
            for banned in FORBIDDEN[package]:
                if module == banned or module.startswith(banned + "."):
                    problems.append(f"{path.relative_to(directory.parent)} imports {module}")
    return problems


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    assert violations(package) == []


def test_the_rule_check_sees_a_forbidden_import(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "bad.py").write_text(
        "from bytewax.dataflow import Dataflow\nimport click\n"
    )
    assert violations("operators", tmp_path / "pkg") == [
        "pkg/bad.py imports bytewax.dataflow",
        "pkg/bad.py imports bytewax.dataflow.Dataflow",
        "pkg/bad.py imports click",
    ]


def test_flows_holds_the_dataflows_and_their_edges_only():
    modules = sorted(p.stem for p in PACKAGE_DIRS["flows"].glob("*.py") if p.stem != "__init__")
    assert len(modules) < 16, modules
    assert not (PACKAGE_DIRS["flows"] / "commands").exists()


def test_no_file_cites_a_document_outside_the_repository():
    cited = []
    for path in REPO.rglob("*"):
        if ".venv" in path.parts or ".git" in path.parts or not path.is_file():
            continue
        if path.suffix not in {".py", ".md", ".yml", ".yaml", ".toml", ".ipynb"}:
            continue
        if path == Path(__file__):
            continue
        if "DESIGN.md" in path.read_text(errors="ignore"):
            cited.append(str(path.relative_to(REPO)))
    assert cited == []
