"""The import graph of edge_quamba/: no module imports, at module level, a module that imports it back (directly or
through others), and the folder kinds' module imports nothing of ours. Read from the source with ast (nothing is
imported), so a circle is found even where Python would tolerate it by luck of the import order.

Imports inside functions (lazy: torch-heavy or optional modules) are checked too: a lazy import is no licence to
import back up."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "edge_quamba"


def modules() -> dict[str, Path]:
    found = {}
    for file in PACKAGE.rglob("*.py"):
        parts = list(file.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = file
    return found


def _type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _statements(body: list[ast.stmt], lazy: bool):
    """The import statements run when the module is imported (lazy: also those inside functions and classes);
    never those under ``if TYPE_CHECKING``."""
    for node in body:
        if _type_checking(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if lazy:
                yield from _statements(node.body, lazy)
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    yield from _statements([n for n in inner if isinstance(n, ast.stmt)] +
                                           [s for h in inner if isinstance(h, ast.ExceptHandler) for s in h.body],
                                           lazy)


def graph(lazy: bool) -> dict[str, set[str]]:
    """Module -> the edge_quamba modules its import runs (an import of a.b.c also runs the packages a.b and a, less
    the importing module's own packages, which are already running)."""
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, file in known.items():
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        running = {package.rsplit(".", i)[0] for i in range(package.count(".") + 1)}
        targets = set()
        for node in _statements(ast.parse(file.read_text(encoding="utf-8")).body, lazy):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                imported = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
            for target in imported:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                while target:
                    if target not in running:
                        targets.add(target)
                    target = target.rpartition(".")[0]
        edges[name] = targets - {name}
    return edges


def circles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_every_module():
    edges = graph(lazy=False)
    print(len(edges), "modules,", sum(map(len, edges.values())), "module-level imports between them")
    assert len(edges) > 80 and "edge_quamba.folders" in edges["edge_quamba.runtime.run"]
    assert "edge_quamba.quant.config" in edges["edge_quamba.folders"]


def test_module_level_imports_form_no_circle():
    found = circles(graph(lazy=False))
    print("circles:", [sorted(c) for c in found])
    assert found == []


def test_lazy_imports_form_no_circle_either():
    found = circles(graph(lazy=True))
    print("circles through lazy imports:", [sorted(c) for c in found])
    assert found == []


def test_the_folder_kinds_import_nothing_of_ours():
    assert graph(lazy=True)["edge_quamba.kinds"] == set()


def test_a_circle_is_found():
    """The checker itself: a two-module circle and a three-module one are reported, a chain is not."""
    edges = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(map(sorted, circles(edges))) == [["a", "b"], ["c", "d", "e"]]
