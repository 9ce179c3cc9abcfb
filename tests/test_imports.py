"""koubo's imports go one way: bench/imports.py's graph has no cycle and no edge up its layers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench" / "imports.py"


def _imports() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_imports", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_package_imports_from_a_layer_above_it_and_nothing_imports_in_a_circle():
    imports = _imports()
    graph = imports.module_graph()
    packages = imports.package_graph(graph)
    assert imports.against_order(packages) == []
    assert imports.cycles({name: targets.keys() for name, targets in packages.items()}) == []
    assert imports.cycles(graph) == []


def test_the_graph_sees_imports_inside_functions_and_finds_cycles():
    """The checker itself: an import inside a function is an edge, and a cycle through it is found."""
    imports = _imports()
    tree = imports.ast.parse("def f():\n    from koubo.web import app\n")
    names = set(imports.imported_names(tree, "koubo.jobs.queue", False))
    assert "koubo.web.app" in names
    assert imports.cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
