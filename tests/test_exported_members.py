"""The package facade: `pipeline.__all__` is sorted and lists exactly the public names
`pipeline/__init__.py` imports from our modules, each importable from `pipeline`."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pipeline


def facade_imports() -> dict[str, str]:
    """Public names bound in pipeline/__init__.py -> the module of ours they come from."""
    tree = ast.parse(Path(pipeline.__file__).read_text("utf-8"))
    bound: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pipeline":
            for alias in node.names:
                bound[alias.asname or alias.name] = node.module
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound[node.name] = "pipeline"
    return {name: module for name, module in bound.items() if not name.startswith("_")}


def test_all_is_sorted():
    assert pipeline.__all__ == sorted(pipeline.__all__)


def test_every_public_name_imported_by_the_facade_is_in_all_and_nothing_else():
    assert set(pipeline.__all__) == set(facade_imports())


def test_star_import_gives_each_name_in_all_as_defined_in_its_module():
    namespace: dict = {}
    exec("from pipeline import *", namespace)
    for name, module in facade_imports().items():
        assert namespace[name] is getattr(importlib.import_module(module), name), name


def test_no_exported_name_is_also_a_subpackage_or_module():
    # Importing `pipeline.X` rebinds the attribute `pipeline.X` to the module, so an
    # exported function named like a subpackage stops being callable (`ingest` did).
    modules = {m.name for m in pkgutil.iter_modules(pipeline.__path__)}
    assert modules, "pipeline has no modules?"
    assert not set(pipeline.__all__) & modules
