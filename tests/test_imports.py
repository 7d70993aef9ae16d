"""No import circles between first-party modules.

Every module of the packages is parsed with :mod:`ast` (imports inside functions and classes count too, as
they run the moment the function does), each import is resolved to the first-party module it loads, and the
graph of those edges must have no cycle. Imports under ``if TYPE_CHECKING:`` never run and are left out (the
typing idiom for naming a class of a module that imports this one). A circle makes a module's meaning depend on which side was imported
first, and hides which layer a piece of code belongs to.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("languages", "hooks", "probe", "trained_models", "analyses", "benchmarks")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def first_party_modules(root: Path = ROOT) -> dict[str, Path]:
    """``{dotted name: path}`` for every ``.py`` file of :data:`PACKAGES` (a package by its ``__init__``)."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            out[module_name(path, root)] = path
    return out


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The first-party modules ``name`` imports anywhere in its source: ``import a.b`` loads ``a.b``;
    ``from a import b`` loads the submodule ``a.b`` when there is one, else ``a`` (relative imports are
    resolved against the module's package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def add(target: str) -> None:
        while target and target not in modules:  # ``import a.b.c`` of a name inside a.b -> a.b
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)

    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                add(sub if sub in modules else base)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = first_party_modules(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted; a circle is
    reported once however many loops it holds."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_cycle_finder_finds_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}, "g": set()}
    assert cycles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_are_resolved_inside_functions_and_relative(tmp_path):
    pkg = tmp_path / "probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .x import f\n")
    (pkg / "x.py").write_text("def f():\n    from probe import y\n    import probe.z.w\n")
    (pkg / "y.py").write_text("from typing import TYPE_CHECKING\nfrom . import x\nif TYPE_CHECKING:\n    from probe import z\n")
    (pkg / "z.py").write_text("")
    modules = {"probe": pkg / "__init__.py", "probe.x": pkg / "x.py", "probe.y": pkg / "y.py",
               "probe.z": pkg / "z.py"}
    graph = {n: imported_modules(n, p, modules) for n, p in modules.items()}
    assert graph == {"probe": {"probe.x"}, "probe.x": {"probe.y", "probe.z"}, "probe.y": {"probe.x"},
                     "probe.z": set()}
    assert cycles(graph) == [["probe.x", "probe.y"]]


def test_no_import_circles():
    found = cycles(import_graph())
    assert not found, "import circles between first-party modules:\n" + "\n".join(" <-> ".join(c) for c in found)
