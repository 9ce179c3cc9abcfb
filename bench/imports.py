"""koubo's import graph: which module imports which, and the cycles in it.

Reads koubo/**/*.py with `ast` (nothing is imported), so it runs without koubo's dependencies.
Every import counts, also those inside functions: a lazy import still ties two modules together,
it only hides the cycle from the interpreter. Edges go to the most specific koubo module named
(`from koubo.web import auth` is an edge to koubo.web.auth).

The package level groups modules by their first name under koubo (koubo.web.api.jobs → web,
koubo.serve → serve). LAYERS is the intended order, lowest first: a package imports only from its
own layer or those below it.

    python bench/imports.py [--edges]

Prints the package-level edges, the edges against the layer order, then the cycles (strongly
connected components) at the package level and at the module level; last, the counts.
tests/test_imports.py keeps the last three empty.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "koubo"
# Lowest first. The first two layers are what every stage may use: settings, errors, names, the
# log, the disk-space guard, the bucket and the password checks.
LAYERS: list[set[str]] = [
    {"koubo", "config", "options", "errors", "naming", "units", "stages"},
    {"logs", "diskspace", "storage", "auth"},
    {"media"},
    {"features"},
    {"face"},
    {"engines"},
    {"quality"},
    {"pipeline"},
    {"jobs"},
    {"links"},
    {"ops"},
    {"web"},
    {"serve"},
    {"samples"},
    {"cli"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve(name: str, modules: set[str]) -> str | None:
    """The longest prefix of the dotted `name` that is one of koubo's modules."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterable[str]:
    """Dotted names this module imports, `from a import b` giving a.b (b may be a module or a name in a)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            # Each name, which resolve() cuts back to `base` when it is not a module itself.
            yield from (f"{base}.{alias.name}" for alias in node.names)


def module_graph() -> dict[str, set[str]]:
    paths = sorted((ROOT / PACKAGE).rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        name = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = {resolve(n, modules) for n in imported_names(tree, name, path.name == "__init__.py")}
        graph[name] = {t for t in targets if t and t != name}
    return graph


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_graph(graph: dict[str, set[str]]) -> dict[str, dict[str, list[str]]]:
    """unit → unit → the module edges ("a -> b") behind that package edge."""
    packages: dict[str, dict[str, list[str]]] = {}
    for source, targets in graph.items():
        for target in targets:
            a, b = unit(source), unit(target)
            packages.setdefault(a, {})
            if a != b:
                packages[a].setdefault(b, []).append(f"{source} -> {target}")
    return packages


def against_order(packages: dict[str, dict[str, list[str]]]) -> list[str]:
    """Package edges that go up the layers, or that touch a package LAYERS does not place."""
    rank = {name: index for index, layer in enumerate(LAYERS) for name in layer}
    found = []
    for source, targets in sorted(packages.items()):
        for target in sorted(targets):
            if source not in rank or target not in rank or rank[source] < rank[target]:
                found.append(f"{source} -> {target}: {', '.join(sorted(targets[target]))}")
    return found


def cycles(graph: dict[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def cycle_edges(component: list[str], graph: dict[str, Iterable[str]]) -> list[str]:
    members = set(component)
    return sorted(f"{a} -> {b}" for a in component for b in graph.get(a, ()) if b in members)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="list the module edges behind each package edge")
    args = parser.parse_args()

    graph = module_graph()
    packages = package_graph(graph)

    print("package-level edges:")
    for source in sorted(packages):
        for target in sorted(packages[source]):
            print(f"  {source} -> {target}")
            if args.edges:
                for edge in sorted(packages[source][target]):
                    print(f"      {edge}")

    upward = against_order(packages)
    print("edges against the layer order:")
    for edge in upward:
        print(f"  {edge}")

    package_cycles = cycles({p: packages[p].keys() for p in packages})
    print("package-level cycles:")
    for component in package_cycles:
        print(f"  {' , '.join(component)}")
        for a, b in (e.split(" -> ") for e in cycle_edges(component, {p: packages[p].keys() for p in packages})):
            print(f"      {a} -> {b}: {', '.join(sorted(packages[a][b]))}")

    module_cycles = cycles(graph)
    print("module-level cycles:")
    for component in module_cycles:
        print(f"  {' , '.join(component)}")
        for edge in cycle_edges(component, graph):
            print(f"      {edge}")

    n_edges = sum(len(t) for t in graph.values())
    n_package_edges = sum(len(t) for t in packages.values())
    print(
        f"modules {len(graph)}, module edges {n_edges}, package edges {n_package_edges}, "
        f"edges against the order {len(upward)}, package cycles {len(package_cycles)}, "
        f"module cycles {len(module_cycles)}"
    )


if __name__ == "__main__":
    main()
