"""Find import circles among the modules of a package, from their source (nothing is imported).

Usage: ``python tools/import_cycles.py [PACKAGE_DIR] [--all]`` (default: airflow_parallelrun/core).
Prints each circle and exits 1 if there is one, 0 otherwise.

An edge is an import at module level, including inside ``try`` and ``if`` blocks and under
``if TYPE_CHECKING:`` (a circle of types is a circle too), but not inside a function.
``--all`` counts the imports inside functions too (deferred imports, which cannot fail at
import time but still tie two modules together). Importing ``a.b.c`` also imports the
packages ``a`` and ``a.b``, so those are edges too.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path


def module_names(root: Path) -> dict[str, Path]:
    """Return every module of the package at ``root`` by dotted name (a package by its own name)."""
    top = root.resolve()
    while (top.parent / "__init__.py").exists():
        top = top.parent  # name modules from the top package, as their imports do
    base = top.parent
    names = {}
    for path in sorted(root.resolve().rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imports(body: list[ast.stmt], deferred: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            # ``if TYPE_CHECKING:`` imports count: a circle of types still ties the modules together.
            yield from _imports(node.body, deferred)
            yield from _imports(node.orelse, deferred)
        elif isinstance(node, (ast.Try, ast.With)):
            for block in ("body", "handlers", "orelse", "finalbody"):
                for child in getattr(node, block, []):
                    yield from _imports(
                        child.body if isinstance(child, ast.ExceptHandler) else [child], deferred
                    )
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and (
            deferred or isinstance(node, ast.ClassDef)
        ):
            yield from _imports(node.body, deferred)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        source = ".".join(anchor + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    yield source
    for alias in node.names:
        yield f"{source}.{alias.name}"  # ``from package import module``


def import_graph(root: Path, *, deferred: bool = False) -> dict[str, set[str]]:
    """Return ``{module: the package's modules it imports}`` for the package at ``root``."""
    names = module_names(root)
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: set[str] = set()
        for node in _imports(tree.body, deferred):
            for target in _targets(node, name, path.name == "__init__.py"):
                parts = target.split(".")
                # Importing a.b.c imports a and a.b first.
                edges.update(p for i in range(1, len(parts) + 1) if (p := ".".join(parts[:i])) in names)
        edges.discard(name)
        # A module's own parent packages are imported before it: not an edge of its making.
        graph[name] = {e for e in edges if not name.startswith(e + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    root = Path(args[0]) if args else Path(__file__).resolve().parents[1] / "airflow_parallelrun" / "core"
    graph = import_graph(root, deferred="--all" in argv)
    found = cycles(graph)
    for group in found:
        print("import circle: " + " <-> ".join(group))
    if not found:
        print(f"no import circle among the {len(graph)} modules of {root}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
