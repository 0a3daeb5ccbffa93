"""Install one Airflow line into a venv with that line's constraints, then prove it reads a connection.

Every venv of the test setup that installs Airflow (``make setup``, ``setup-compat``, ``test-ui``,
``test-cluster``, and ``make test-lines`` through ``scripts/test_lines.py``) installs it here, so
that each line always gets the same pins: ``constraints/airflow-X.Y.txt``, passed to uv as
``--constraint`` (upper bounds only, as Airflow's own constraint files pin; a line without a file
resolves freely).

An old Airflow line does not cap most of its dependencies, so a new release of one can break it
overnight, and not always loudly: with cryptography 51, Airflow 2.11 to 3.1 log the error and then
report every ``AIRFLOW_CONN_*`` connection as "not found", which surfaced as dozens of confusing
test failures. So after installing, this reads a connection from an ``AIRFLOW_CONN_*`` variable in
a throwaway ``AIRFLOW_HOME`` with a Fernet key set (as every real deployment has), the way
``airflow connections get`` does, and checks its password survives the Fernet round trip. If not,
it stops with a message naming the line and the constraint file to add the bound to.

Usage::

    python scripts/airflow_line.py --python VENV/bin/python --airflow 2.11.2 [--airflow-extras celery] -e ".[test]" ...

Exits non-zero if the install or the check fails.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TextIO

REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPO / "constraints"

# Run by the venv's own interpreter. The Fernet key must be set before Airflow reads its config.
# The connection is first built from the variable's URI directly, so that a breakage raises its own
# error here (the secrets lookup below logs it and answers "isn't defined"), then looked up the way
# `airflow connections get` and a task's hook do.
CHECK = """
import os
from cryptography.fernet import Fernet
os.environ["AIRFLOW__CORE__FERNET_KEY"] = Fernet.generate_key().decode()
from airflow.models.connection import Connection
uri = os.environ["AIRFLOW_CONN_QMATIC_INSTALL_CHECK"]
for conn in (Connection(conn_id="qmatic_install_check", uri=uri),
             Connection.get_connection_from_secrets("qmatic_install_check")):
    assert (conn.host, conn.password) == ("install-check.invalid", "s3cret"), (conn.host, conn.password)
"""


def line_of(airflow: str) -> str:
    """The line ("2.11") of an Airflow version ("2.11.2")."""
    return ".".join(airflow.split(".")[:2])


def constraint_file(airflow: str) -> Path:
    return CONSTRAINTS / f"airflow-{line_of(airflow)}.txt"


def constraint_args(airflow: str) -> list[str]:
    """uv's ``--constraint`` for the line's file, when the line has one."""
    path = constraint_file(airflow)
    return ["--constraint", str(path)] if path.is_file() else []


def check_connections(python: Path, airflow: str) -> str | None:
    """None if Airflow in ``python``'s venv reads an ``AIRFLOW_CONN_*`` connection; else why not."""
    with tempfile.TemporaryDirectory(prefix="qmatic-install-check-") as home:
        env = {
            **os.environ,
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONWARNINGS": "ignore",
            "AIRFLOW_CONN_QMATIC_INSTALL_CHECK": "http://user:s3cret@install-check.invalid:443",
        }
        env.pop("AIRFLOW__CORE__FERNET_KEY", None)
        result = subprocess.run(
            [str(python), "-c", CHECK], env=env, capture_output=True, text=True, check=False
        )
    if result.returncode == 0:
        return None
    tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
    return (
        f"\n{'=' * 78}\nAirflow {airflow} is installed but cannot read a connection from an "
        f"AIRFLOW_CONN_* variable.\nA dependency's new release has most likely broken the "
        f"{line_of(airflow)} line: find it in the output below,\nadd an upper bound for it to "
        f"{constraint_file(airflow).relative_to(REPO)} (with the reason), and rerun.\n"
        f"See docs/troubleshooting.md.\n{'-' * 78}\n{tail}\n{'=' * 78}"
    )


def install(
    uv: str,
    python: Path,
    airflow: str,
    airflow_extras: str,
    requirements: list[str],
    output: TextIO | None = None,
) -> int:
    """Install Airflow ``airflow`` and ``requirements`` under the line's constraints, then check it.

    ``output`` takes everything printed (make test-lines installs two lines at once, each into
    its own log); the terminal by default.
    """
    spec = f"apache-airflow[{airflow_extras}]=={airflow}" if airflow_extras else f"apache-airflow=={airflow}"
    # Compiled bytecode, written once here: without it every Python process compiles each module it
    # imports (about 4 s of CPU per Airflow process here), and none writes .pyc files where
    # PYTHONDONTWRITEBYTECODE is set, as in many CI and container environments.
    command = [uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(python)]
    command += constraint_args(airflow)
    command += [*requirements, spec]
    ran = subprocess.run(command, cwd=REPO, check=False, stdout=output, stderr=output and subprocess.STDOUT)
    if ran.returncode != 0:
        print(f"airflow_line: installing Airflow {airflow} into {python} failed", file=output or sys.stderr)
        return 1
    problem = check_connections(python, airflow)
    if problem:
        print(problem, file=output or sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--python", required=True, type=Path, help="the venv's interpreter")
    parser.add_argument("--airflow", required=True, help="the Airflow version, e.g. 2.11.2")
    parser.add_argument("--airflow-extras", default="", help="Airflow's extras, e.g. celery,postgres")
    args, requirements = parser.parse_known_args()
    uv = str(Path(sys.executable).with_name("uv"))
    return install(uv, args.python, args.airflow, args.airflow_extras, requirements)


if __name__ == "__main__":
    sys.exit(main())
