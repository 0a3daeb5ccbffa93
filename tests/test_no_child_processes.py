"""The provider starts no process (issue 20 item 8).

A child process inherits the task's whole environment, ``AIRFLOW_CONN_*`` with the client secret
included. The bulk validation helper was the one such process; it is gone (issue 18), and this keeps
any other from coming back unnoticed: no module of the package may import a module that starts
processes or call an ``os`` function that does. Read from the source with ``ast``, as
``tests/test_layers.py`` reads imports, so every module counts, whether a test runs it or not. A
process the provider needs one day must come with its own rule for the environment it passes, and
an entry here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "airflow_provider_qmatic"

# Modules whose purpose is starting processes, and the os functions that start one.
PROCESS_MODULES = frozenset({"subprocess", "multiprocessing", "pty", "concurrent.futures.process"})
OS_STARTERS = frozenset(
    {"system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp"}
    | {f"exec{suffix}" for suffix in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")}
    | {f"spawn{suffix}" for suffix in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")}
)


def process_starters(source: str) -> list[str]:
    """What in ``source`` can start a process: imports of PROCESS_MODULES, uses of OS_STARTERS."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            if node.module == "os":
                found += [f"os.{alias.name}" for alias in node.names if alias.name in OS_STARTERS]
            if node.module == "concurrent.futures":
                found += [alias.name for alias in node.names if alias.name == "ProcessPoolExecutor"]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in OS_STARTERS
        ):
            found.append(f"os.{node.attr}")
            continue
        else:
            continue
        found += [name for name in names if name.split(".")[0] in PROCESS_MODULES or name in PROCESS_MODULES]
    return found


def test_no_module_of_the_package_starts_a_process() -> None:
    offenders = {
        str(path.relative_to(ROOT.parent)): found
        for path in sorted(ROOT.rglob("*.py"))
        if (found := process_starters(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}, offenders


def test_the_rule_sees_each_way_of_starting_a_process() -> None:
    """The check itself: each form is caught, and code that only names them in text is not."""
    for code in (
        "import subprocess",
        "from subprocess import Popen",
        "import multiprocessing.pool",
        "from concurrent.futures import ProcessPoolExecutor",
        "import os\nos.fork()",
        "import os\nos.execv('/bin/true', [])",
        "from os import posix_spawn",
        "import os\nos.system('true')",
    ):
        assert process_starters(code), code
    assert process_starters("import os\nos.environ.get('X')  # a subprocess, say") == []
