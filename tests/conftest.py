"""Test-wide setup: a private AIRFLOW_HOME per virtualenv, set before anything imports Airflow.

Airflow reads its configuration when first imported, so the environment is fixed here at module
level. Airflow 3.x and 2.11 keep different database schemas, hence one home per venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
AIRFLOW_HOME = REPO / ".airflow-home" / Path(sys.prefix).name

os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "example_dags")
os.environ["AIRFLOW__CORE__TEST_CONNECTION"] = "Enabled"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
# Each test run gets its own token cache directory, so runs never share tokens.
os.environ["QMATIC_TOKEN_CACHE_DIR"] = str(AIRFLOW_HOME / "token-cache")
AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)


def airflow_bin() -> str:
    """The ``airflow`` console script of the interpreter running the tests."""
    return str(Path(sys.executable).with_name("airflow"))


def run_airflow(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real Airflow CLI with the test environment (plus ``env``)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [airflow_bin(), *args], capture_output=True, text=True, env=full_env, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database in the private AIRFLOW_HOME (migrated once per venv)."""
    stamp = AIRFLOW_HOME / ".migrated"
    if not stamp.exists():
        result = run_airflow("db", "migrate")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        stamp.touch()
    return AIRFLOW_HOME


def run_dag(dag: Any, conf: dict[str, Any] | None = None) -> Any:
    """Run ``dag`` once with ``dag.test()`` (real task execution in this process); the DagRun.

    Airflow 3 runs only DAGs it has serialized to its database, under a registered DAG bundle; a
    DAG built inside a test is written there first (and the bundle registered, which a fresh
    database lacks until something parses the DAGs folder). Airflow 2.11 runs the object as it is.
    """
    try:
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    except ImportError:
        return dag.test(run_conf=conf)
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=os.devnull, collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag.test(run_conf=conf)
