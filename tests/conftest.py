"""Test-wide setup: a private AIRFLOW_HOME per virtualenv and per test process, set before anything
imports Airflow.

Airflow reads its configuration when first imported, so the environment is fixed here at module
level. Airflow 3.x and 2.11 keep different database schemas, hence one home per venv; the suite runs
in parallel processes (pytest-xdist), and SQLite breaks when two of them write one database, hence
one home per process too. The database is migrated once per venv and copied into each home.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_cli import run_airflow

REPO = Path(__file__).resolve().parent.parent
HOMES = REPO / ".airflow-home" / Path(sys.prefix).name
AIRFLOW_HOME = HOMES / os.environ.get("PYTEST_XDIST_WORKER", "main")

os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "example_dags")
os.environ["AIRFLOW__CORE__TEST_CONNECTION"] = "Enabled"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
# Each test run gets its own token cache directory, so runs never share tokens.
os.environ["QMATIC_TOKEN_CACHE_DIR"] = str(AIRFLOW_HOME / "token-cache")
AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database in this process's AIRFLOW_HOME.

    ``airflow db migrate`` takes most of a minute, so it runs once per venv, in a template home
    (under a lock: parallel test processes wait for the first), and each process copies the result.
    """
    stamp = AIRFLOW_HOME / ".migrated"
    if stamp.exists():
        return AIRFLOW_HOME
    template = HOMES / "template"
    template.mkdir(parents=True, exist_ok=True)
    with open(HOMES / ".migrate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (template / ".migrated").exists():
            result = run_airflow("db", "migrate", env={"AIRFLOW_HOME": str(template)})
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            (template / ".migrated").touch()
    shutil.copyfile(template / "airflow.db", AIRFLOW_HOME / "airflow.db")
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


# -- approving, as a person would -------------------------------------------------------------------


def _answer_waiting(dag_id: str, choice: str) -> list[str]:
    """Answer each human-in-the-loop request of ``dag_id`` that waits unanswered, the way the REST
    API's ``PATCH .../hitlDetails`` does: record the response and resume the parked task."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    parked = [
        TaskInstanceState.DEFERRED,
        getattr(TaskInstanceState, "AWAITING_INPUT", TaskInstanceState.DEFERRED),
    ]
    answered = []
    with create_session() as session:
        waiting = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.state.in_(parked))
        ).all()
        for ti in waiting:
            detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti.id))
            if detail is None:
                continue
            if detail.response_received:
                # Answered, yet still parked: the answer landed within milliseconds of the request,
                # while the task was still committing its deferral, which then wrote over the resume
                # (seen on 3.3; a person never answers that fast). Resume it again.
                if hasattr(detail, "as_resume_event_payload"):
                    handle_event_submit(
                        TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session
                    )
                continue
            detail.responded_by = {"id": "approver", "name": "Approver"}
            detail.responded_at = datetime.now(timezone.utc)
            detail.chosen_options = [choice]
            detail.params_input = {}
            if hasattr(detail, "as_resume_event_payload"):  # 3.3+: no trigger polls for the answer
                handle_event_submit(
                    TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session
                )
            answered.append(ti.task_id)
    return answered


@contextlib.contextmanager
def approving(dag_id: str, choice: str = "Approve") -> Iterator[list[str]]:
    """While inside, answer ``choice`` to every approval a run of ``dag_id`` asks for (the task ids
    answered are collected in the list yielded). On lines without human-in-the-loop operators the
    example's sensor waits for the Variable naming today's plan file, which is set here instead."""
    try:
        from airflow.providers.standard.operators.hitl import ApprovalOperator  # noqa: F401
    except Exception:
        from airflow.models import Variable

        Variable.set("qmatic_bulk_plan_approved", f"bulk_plan_{date.today().isoformat()}.plan.csv")
        try:
            yield ["approve_plan"] if choice == "Approve" else []
        finally:
            Variable.delete("qmatic_bulk_plan_approved")
        return
    answered: list[str] = []
    stop = threading.Event()

    def answer() -> None:
        while not stop.wait(0.3):
            answered.extend(_answer_waiting(dag_id, choice))

    thread = threading.Thread(target=answer, name="approver", daemon=True)
    thread.start()
    try:
        yield answered
    finally:
        stop.set()
        thread.join(timeout=10)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long files first: those that declare a longer pytest-timeout, then those with more ``slow``
    tests (a stable sort: the order within a file is kept).

    ``make test`` hands whole files to its processes in collection order; a long file that came
    last (the example DAG tests run every example, then scan their runs for secrets) would leave the
    other processes idle while one finishes it.
    """
    weight: dict[str, tuple[float, int]] = {}
    for item in items:
        timeout = item.get_closest_marker("timeout")
        longest, slow = weight.get(item.location[0], (0.0, 0))
        weight[item.location[0]] = (
            max(longest, float(timeout.args[0]) if timeout and timeout.args else 0.0),
            slow + (item.get_closest_marker("slow") is not None),
        )
    items.sort(key=lambda item: tuple(-w for w in weight[item.location[0]]))
