"""Imports point down: cli → render → api → {answer, evaluation} → check → ingest → index → models → base.

A module may import its own package and any package of a lower layer, never one
above. Lazy imports inside functions and `TYPE_CHECKING` imports count too: they
are how a layering breaks without anyone noticing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"

# Highest first. Units on one line share a layer and may not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("cli",),
    ("render",),  # how the CLI's output looks; cli imports it
    ("api",),
    ("evaluation",),
    ("answer",),
    ("check",),
    ("ingest",),
    ("index",),
    ("models", "nodes"),
    ("japanese", "tokens"),
    ("documents", "settings", "errors"),
]
RANK = {unit: len(LAYERS) - i for i, units in enumerate(LAYERS) for unit in units}
# Same-layer pairs that are allowed (importer, imported). settings raises ConfigError
# for a bad rag.toml; errors imports nothing.
SIBLINGS_ALLOWED: set[tuple[str, str]] = {("settings", "errors")}


def unit_of(module: str) -> str | None:
    """`pipeline.index.search` -> "index"; the package facade `pipeline` -> None."""
    parts = module.split(".")
    if parts[0] != "pipeline" or len(parts) == 1:
        return None
    return parts[1]


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            out += [(node.lineno, f"{name}.{a.name}") for a in node.names]
    return out


def upward_imports(root: Path = PIPELINE) -> list[str]:
    """Every import of a higher (or an unrelated same-layer) unit, as `file:line importer -> imported`."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_package else rel.parts)
        src = unit_of(module)
        if src is None:
            continue  # pipeline/__init__.py re-exports the public API
        assert src in RANK, f"{path}: unit {src!r} has no layer in tests/test_layers.py"
        for line, name in imported_modules(ast.parse(path.read_text(encoding="utf-8")), module, is_package):
            dst = unit_of(name)
            if dst is None or dst == src or dst not in RANK:
                continue
            upward = RANK[dst] > RANK[src]
            sideways = RANK[dst] == RANK[src] and (src, dst) not in SIBLINGS_ALLOWED
            if upward or sideways:
                bad.append(f"{path.relative_to(root.parent)}:{line} {src} -> {dst}")
    return sorted(set(bad))


def test_every_import_points_down_the_layers():
    assert upward_imports() == []


def test_every_pipeline_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PIPELINE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert units - set(RANK) == set()


@pytest.mark.parametrize(
    "planted",
    [
        "from pipeline.answer.engine import Answerer\n",  # index -> answer, at module top
        "def f():\n    from pipeline.cli import main\n",  # a lazy import inside a function
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipeline.ingest.sync import Ingestor\n",
    ],
)
def test_a_planted_upward_import_is_caught(tmp_path, planted):
    import shutil

    tree = tmp_path / "pipeline"
    shutil.copytree(PIPELINE, tree, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "index" / "planted.py").write_text(planted, encoding="utf-8")
    found = upward_imports(tree)
    assert any(f.startswith("pipeline/index/planted.py") for f in found), found
