"""The import graph runs one way: the command line (cli.py, commands/, and docs_reference.py, which renders its help
into the docs) uses the library, and nothing in the library imports the command line back (rendering lives in
output.py, which both use)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "cliniko_sync"
COMMAND_LINE = ("cli.py", "__main__.py", "commands", "docs_reference.py")


def imported(path: Path) -> Iterator[str]:
    """Every module name `path` imports, with `from a import b` also giving a.b (b may be a module)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def is_command_line(module: str) -> bool:
    return module in (
        "cliniko_sync.cli",
        "cliniko_sync.commands",
        "cliniko_sync.__main__",
        "cliniko_sync.docs_reference",
    ) or module.startswith(("cliniko_sync.cli.", "cliniko_sync.commands."))


def test_the_library_never_imports_the_command_line() -> None:
    library = [path for path in PACKAGE.rglob("*.py") if path.relative_to(PACKAGE).parts[0] not in COMMAND_LINE]
    assert len(library) > 20
    upward = [f"{path.relative_to(PACKAGE)} imports {module}" for path in library for module in imported(path)
              if is_command_line(module)]  # fmt: skip
    assert upward == []


ROOT = PACKAGE.parent
CYCLE_FREE = ("cliniko_sync", "bench")


def module_paths() -> dict[str, Path]:
    """Every module of the packages that must stay cycle-free, by dotted name (a package by its own name)."""
    paths = {}
    for package in CYCLE_FREE:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return paths


def runtime_imports(path: Path) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that runs, at module level or inside a function; `if TYPE_CHECKING:` blocks never run."""
    pending: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        pending.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of ours it imports, each import resolved to the most specific module it names."""
    paths = module_paths()
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in runtime_imports(path):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # a relative import: climb from this module's package
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base for alias in node.names]
            graph[name].update(target for target in targets if target in paths and target != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan, then a path walk)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [shortest_cycle(graph, component) for component in components]


def shortest_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest way from the component's first module back to itself (breadth first, inside the component)."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 40 and sum(map(len, graph.values())) > 100
    found = [" → ".join(cycle) for cycle in cycles(graph)]
    assert not found, "import cycles (move the shared piece to a lower module):\n" + "\n".join(found)


def test_the_cycle_finder_reports_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b", "c"}, "b": {"a"}, "c": {"b"}}) == [["a", "b", "a"]]
