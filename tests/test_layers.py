"""The house rules of the package's imports (issue 18): layers, bottom to top, and no circles.

    ground floor (exceptions, redaction, compat, metrics) < api < config < state < client < flows
    < bulk < outer (hooks, operators, probe, testing, sandbox, the package's entry point, the shims)

A module imports only from its own layer or the ones below, and no two modules, nor two folders,
import each other, however long the way round. Every import counts: module level, inside a function,
and under ``TYPE_CHECKING`` (a type named there is still a dependency of whoever reads the code).
Read from the source with ``ast``, so nothing here is imported. Run as a script, it prints the graph
and what breaks the rules.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "airflow_provider_qmatic"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # "": the package's __init__, constants only (version, default connection id).
    ("ground", ("", "exceptions", "redaction", "compat", "metrics")),
    ("api", ("api",)),
    ("config", ("config",)),
    ("state", ("state",)),
    ("client", ("client",)),
    ("flows", ("flows",)),
    ("bulk", ("bulk",)),
    (
        "outer",
        (
            "get_provider_info",
            "hooks",
            "operators",
            "sensors",
            "triggers",
            "probe",
            "testing",
            "sandbox",
            "_moved",
            "models",
            "contract",
            "scopes",
        ),
    ),
)


def modules() -> dict[str, Path]:
    """Dotted name (without the package prefix; "" for the package itself) -> file."""
    found: dict[str, Path] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT / PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its source."""
    known = set(known)
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = [PACKAGE, *name.split(".")] if name else [PACKAGE]
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            candidates = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        for candidate in candidates:
            if candidate != PACKAGE and not candidate.startswith(PACKAGE + "."):
                continue
            dotted = candidate[len(PACKAGE) + 1 :]
            while dotted not in known and "." in dotted:
                dotted = dotted.rsplit(".", 1)[0]
            if dotted in known and dotted != name:
                targets.add(dotted)
                if isinstance(node, ast.ImportFrom) and candidate != f"{module}":
                    break  # "from pkg import sub": the submodule, not the package too
    return targets


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, found) for name, path in found.items()}


def layer(name: str) -> int:
    top = name.split(".", 1)[0]
    for rank, (_label, members) in enumerate(LAYERS):
        if top in members:
            return rank
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in tests/test_layers.py")


def folder(name: str) -> str:
    """The folder a module lives in: its first component, or the package's top for flat modules."""
    return name.split(".", 1)[0] if "." in name or (name and (ROOT / PACKAGE / name).is_dir()) else "(top)"


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def folder_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    folders: dict[str, set[str]] = {}
    for source, targets in edges.items():
        for target in targets:
            if folder(source) != folder(target) and "(top)" not in (folder(source), folder(target)):
                folders.setdefault(folder(source), set()).add(folder(target))
    return folders


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{source or PACKAGE} ({LAYERS[layer(source)][0]}) -> {target} ({LAYERS[layer(target)][0]})"
        for source, targets in edges.items()
        for target in targets
        if layer(target) > layer(source)
    )


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer(name)


def test_no_import_reaches_up_a_layer() -> None:
    assert upward(graph()) == []


def test_no_circle_of_modules() -> None:
    assert circles(graph()) == []


def test_no_circle_of_folders() -> None:
    assert circles(folder_graph(graph())) == []


def test_the_package_imports_no_deprecated_path() -> None:
    shims = {"_moved", "models", "contract", "scopes"}
    users = {name for name, targets in graph().items() if targets & shims and name not in shims}
    assert users == set()


if __name__ == "__main__":
    edges = graph()
    if "-v" in sys.argv:
        for name in sorted(edges):
            if edges[name]:
                print(f"{name or PACKAGE} -> {', '.join(sorted(edges[name]))}")
    print("upward imports:", upward(edges) or "none")
    print("circles of modules:", circles(edges) or "none")
    print("circles of folders:", circles(folder_graph(edges)) or "none")
