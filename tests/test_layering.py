"""Import structure, read from the source (imports inside functions included): the vocabulary is the
bottom of :mod:`languages`, ``languages`` imports no other first-party package, and the modules that
hold the vocabulary and the task metrics sit on no import circle."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("languages", "hooks", "trained_models", "probe", "analyses")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """First-party module -> the first-party modules it imports anywhere in its source."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = m.split(".") if path.name == "__init__.py" else m.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[m].update(n for n in names if n in mods and n != m)
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The import circles: strongly connected components with more than one module."""
    reach = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reach[start] = seen
    comps = {frozenset(m for m in graph if m in reach[v] and v in reach[m]) | {v} for v in graph}
    return [set(c) for c in comps if len(c) > 1]


def test_the_circle_finder_finds_a_circle_and_only_circles():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(g) == [{"a", "b", "c"}]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_languages_has_no_import_circle_and_vocab_is_its_bottom():
    graph = import_graph()
    lang = {m: {n for n in deps if n.startswith("languages")} for m, deps in graph.items() if m.startswith("languages")}
    assert circles(lang) == []
    assert graph["languages.vocab"] == set()
    assert "languages.vocab" in graph["languages.base"] and "languages.datasets" not in graph["languages.base"]
    for m, deps in lang.items():  # languages is the lowest layer: no other first-party package
        assert {n.split(".")[0] for n in graph[m]} <= {"languages"}, m


def test_the_metric_and_vocabulary_modules_are_on_no_circle():
    mine = {"languages.vocab", "languages.base", "languages.datasets", "hooks.metrics", "probe.interchange",
            "hooks.constructions._core", "hooks.constructions.__main__", "trained_models.evaluate"}
    on_circle = set().union(*circles(import_graph()))
    assert not mine & on_circle, sorted(mine & on_circle)
