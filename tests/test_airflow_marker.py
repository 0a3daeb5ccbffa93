"""Every test that touches Airflow carries the ``airflow`` marker.

``make test-compat`` runs only the tests marked ``airflow`` on Airflow 2.11 (``-m airflow``): the
rest (HTTP, contract, sandbox, state backends, the bulk runner below the operators) never import
Airflow, run on the same dependency versions in both venvs, and would prove nothing new there. That
split is only as good as the markers, so this reads every test module and fails for a test that
reaches Airflow without the marker: one that uses a name imported from ``airflow`` or from the
package's Airflow layer (hooks, operators, sensors, triggers), a helper that runs Airflow
(``run_dag``, ``run_airflow``, ``approving``, the ``airflow_db`` fixture), or a module function or
fixture (its own or a conftest's) that does.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
OUTER = (
    "airflow_provider_qmatic.hooks",
    "airflow_provider_qmatic.operators",
    "airflow_provider_qmatic.sensors",
)
OUTER += ("airflow_provider_qmatic.triggers",)
RUNS_AIRFLOW = {"run_dag", "run_airflow", "approving", "airflow_db", "_load_examples"}


def _is_airflow(module: str) -> bool:
    return module == "airflow" or module.startswith(("airflow.", *OUTER))


def _airflow_names(tree: ast.Module) -> set[str]:
    """Names a module binds from Airflow or the package's Airflow layer (at any depth)."""
    names = set(RUNS_AIRFLOW)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if _is_airflow(node.module):
                names |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _is_airflow(alias.name):
                    names.add((alias.asname or alias.name).split(".")[0])
    return names


def _touches(node: ast.AST, names: set[str]) -> bool:
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and child.id in names:
            return True
        if isinstance(child, ast.arg) and child.arg in names:  # a fixture taken as a parameter
            return True
        if isinstance(child, ast.ImportFrom) and child.module and _is_airflow(child.module):
            return True
    return False


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _closure(functions: dict[str, ast.FunctionDef], names: set[str]) -> set[str]:
    """``names`` plus every function (helper or fixture) that reaches one of them, to a fixed point."""
    names = set(names)
    while True:
        more = {name for name, fn in functions.items() if name not in names and _touches(fn, names)}
        if not more:
            return names
        names |= more


def _marked(node: ast.AST) -> bool:
    return any("mark.airflow" in ast.unparse(d) for d in getattr(node, "decorator_list", []))


def _module_marked(tree: ast.Module) -> bool:
    return any(
        isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)
        and "mark.airflow" in ast.unparse(n.value)
        for n in tree.body
    )


def _conftest_names(directory: Path) -> set[str]:
    """The fixtures and helpers of the conftests above ``directory`` that reach Airflow."""
    names: set[str] = set()
    for conftest in (TESTS / "conftest.py", directory / "conftest.py"):
        if conftest.exists():
            tree = ast.parse(conftest.read_text())
            names |= _closure(_functions(tree), _airflow_names(tree) | names)
    return names


def test_every_test_that_touches_airflow_is_marked_airflow() -> None:
    unmarked = []
    for path in sorted(TESTS.rglob("test_*.py")):
        if "ui" in path.relative_to(TESTS).parts or path == Path(__file__):  # make test-ui; this file
            continue
        tree = ast.parse(path.read_text())
        if _module_marked(tree):
            continue
        functions = _functions(tree)
        reaching = _closure(functions, _airflow_names(tree) | _conftest_names(path.parent))
        unmarked += [
            f"{path.relative_to(TESTS.parent)}::{name}"
            for name, fn in functions.items()
            if name.startswith("test_") and name in reaching and not _marked(fn)
        ]
    assert unmarked == [], "add @pytest.mark.airflow (make test-compat runs only those): " + ", ".join(
        unmarked
    )


def test_the_check_finds_an_unmarked_test_that_reads_a_connection() -> None:
    source = (
        "from airflow_provider_qmatic.hooks.qmatic import QmaticHook\n"
        "def helper():\n    return QmaticHook()\n"
        "def test_a():\n    helper()\n"
        "def test_b():\n    pass\n"
    )
    tree = ast.parse(source)
    reaching = _closure(_functions(tree), _airflow_names(tree))
    assert {"helper", "test_a"} <= reaching
    assert "test_b" not in reaching
