"""vidxai's own imports form no cycle: the graph of every ``import`` / ``from ... import`` of a vidxai module,
at module level and inside functions (a function-level import only postpones a cycle, it does not remove it),
read from the source with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Cycles known and not removed yet, as frozensets of the modules of each cycle (none today: the hand-written
#: transformer forwards that made one are gone, and small shared pieces live in modules both sides import).
KNOWN: set[frozenset[str]] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for path in (ROOT / "vidxai").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """``module -> the vidxai modules it imports`` (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                subs = {f"{base}.{a.name}" for a in node.names} & set(modules)
                deps.update(subs if len(subs) == len(node.names) else ({base} & set(modules)) | subs)
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(comp)
    return found


def test_the_graph_sees_imports_inside_functions_and_finds_a_cycle() -> None:
    graph = import_graph()
    assert "vidxai.evaluation.core" in graph["vidxai.evaluation.runner"]
    assert "vidxai.evaluation.shards" in graph["vidxai.pipelines.evaluate"]  # imported inside run_evaluation
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_vidxai_imports_form_no_new_cycle() -> None:
    new = [sorted(c) for c in cycles(import_graph()) if frozenset(c) not in KNOWN]
    assert not new, f"import cycles: {new}; move what both sides need into a module both import"
