"""The package's shape: no import cycle among tfface / tfface_align modules, and a top level that holds
only the command-line tools and the package face (library code lives in subpackages)."""
from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("tfface", "tfface_align")


def modules() -> dict[str, str]:
    """Module name -> source file, for every module of the packages."""
    found = {}
    for package in PACKAGES:
        for directory, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    parts = os.path.relpath(os.path.join(directory, name), ROOT)[:-3].split(os.sep)
                    found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(directory, name)
    return found


def _top_level(body: list[ast.stmt]):
    """The statements that run on import (module level, inside if/try but not functions or classes)."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for part in (node.body, node.orelse, *([h.body for h in node.handlers] if isinstance(node, ast.Try) else []),
                         getattr(node, "finalbody", [])):
                yield from _top_level(part)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports when it is imported (lazy imports in functions excluded)."""
    known = modules()
    graph = {}
    for module, path in known.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        is_package = path.endswith("__init__.py")
        edges = set()
        for node in _top_level(tree.body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = module.split(".")[:len(module.split(".")) - node.level + is_package]
                    base = ".".join(anchor + ([base] if base else []))
                submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
                # ``from package import submodule`` needs the submodule; any other name needs the package itself
                targets = submodules + ([base] if len(submodules) < len(node.names) else [])
            else:
                continue
            edges.update(t for t in targets if t in known and t != module)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), None if there is none."""
    state, stack = {}, []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_top_level_holds_tools_and_the_package_face_only():
    top = os.path.join(ROOT, "tfface")
    not_tools = []
    for name in sorted(os.listdir(top)):
        if name.endswith(".py") and name != "__init__.py":
            with open(os.path.join(top, name), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            if not any(isinstance(n, ast.FunctionDef) and n.name == "run" for n in tree.body):
                not_tools.append(name)
    assert not not_tools, f"tfface/ top-level modules that are not tools (move them into a subpackage): {not_tools}"
