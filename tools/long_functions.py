"""List the modules over a line limit and the functions over a length limit.

Usage: ``python tools/long_functions.py [PATH ...] [--lines 400] [--function-lines 50]``
(default path: ``airflow_parallelrun``). A function's length counts from its ``def`` (its
decorators included) to its last line, docstring and comments included. Exits 1 if anything
is over a limit, so it can guard a folder in a test or in CI.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path


def python_files(paths: list[str]) -> Iterator[Path]:
    """Yield the ``.py`` files under each path, sorted."""
    for path in map(Path, paths):
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def function_lengths(path: Path) -> Iterator[tuple[str, int, int]]:
    """Yield (qualified name, first line, length in lines) of every function in ``path``."""
    tree = ast.parse(path.read_text(), str(path))

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            name = f"{prefix}{getattr(child, 'name', '')}"
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                yield name, child.lineno, (child.end_lineno or child.lineno) - first + 1
                yield from walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, name + ".")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def report(paths: list[str], max_lines: int, max_function: int) -> list[str]:
    """Return one line per module over ``max_lines`` and per function over ``max_function``."""
    found = []
    for path in python_files(paths):
        lines = len(path.read_text().splitlines())
        if lines > max_lines:
            found.append(f"{path}: {lines} lines (module)")
        for name, line, length in function_lengths(path):
            if length > max_function:
                found.append(f"{path}:{line}: {name} {length} lines")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["airflow_parallelrun"])
    parser.add_argument("--lines", type=int, default=400, help="module limit (default 400)")
    parser.add_argument("--function-lines", type=int, default=50, help="function limit (default 50)")
    args = parser.parse_args(argv)
    found = report(args.paths, args.lines, args.function_lines)
    print("\n".join(found) or "nothing over the limits")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
