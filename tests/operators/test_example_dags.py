"""The example DAGs: every file in airflow_provider_qmatic/example_dags/ loads, and the Qmatic ones run end to end through
the real ``airflow dags test`` CLI against the sandbox."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, run_airflow
from tests.operators.conftest import PASSPORT, STOCKHOLM, Sandbox, customer, run_dag, state_of, xcom_of

pytestmark = pytest.mark.airflow

EXAMPLES = REPO / "airflow_provider_qmatic" / "example_dags"
OURS = {
    "example_qmatic_book": "example_qmatic_book.py",
    "example_qmatic_reschedule": "example_qmatic_reschedule.py",
    "example_qmatic_cancel": "example_qmatic_cancel.py",
    "example_qmatic_find_and_book": "example_qmatic_find_and_book.py",
}


@pytest.fixture(scope="module")
def dag_bag() -> Any:
    try:
        from airflow.models import DagBag

        return DagBag(dag_folder=str(EXAMPLES), include_examples=False)
    except TypeError:  # Airflow 3's DagBag never loads Airflow's own examples
        from airflow.models import DagBag

        return DagBag(dag_folder=str(EXAMPLES))


def test_every_example_dag_file_loads(dag_bag: Any) -> None:
    assert dag_bag.import_errors == {}
    files = {Path(p).name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    loaded = {Path(dag.fileloc).name for dag in dag_bag.dags.values()}
    assert files <= loaded, f"files without a DAG: {files - loaded}"


@pytest.mark.parametrize("dag_id", sorted(OURS))
def test_operator_examples_follow_the_house_rules(dag_bag: Any, dag_id: str) -> None:
    dag = dag_bag.dags[dag_id]
    assert Path(dag.fileloc).name == OURS[dag_id]
    assert dag.catchup is False
    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None: triggered on demand
    assert dag.start_date is not None
    assert dag.start_date.year == 2025
    qmatic_tasks = [t for t in dag.tasks if _operator_class(t).startswith("Qmatic")]
    assert qmatic_tasks, dag_id
    for t in qmatic_tasks:
        kwargs = getattr(t, "partial_kwargs", None) or vars(t)
        assert kwargs["qmatic_conn_id"] == "qmatic_default", t.task_id
        assert t.retries >= 1, t.task_id


def _operator_class(task: Any) -> str:
    cls = getattr(task, "operator_class", None) or type(task)
    return cls.__name__ if isinstance(cls, type) else str(cls)


def _last_run(dag_id: str) -> tuple[str, dict[tuple[str, int], str]]:
    """State of the newest run of ``dag_id`` and of its task instances, read from Airflow's DB."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc())
        ).first()
        assert run is not None, dag_id
        states = {
            (ti.task_id, ti.map_index): str(getattr(ti.state, "value", ti.state))
            for ti in run.get_task_instances(session=session)
        }
        return str(getattr(run.state, "value", run.state)), states


def _dags_test(sandbox: Sandbox, dag_id: str, conf: dict[str, Any]) -> str:
    result = run_airflow("dags", "test", dag_id, "-c", json.dumps(conf), env=sandbox.env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    state, tasks = _last_run(dag_id)
    assert state == "success", (tasks, output[-4000:])
    for secret in sandbox.secrets():
        assert secret not in output
    return output


@pytest.mark.slow
def test_find_and_book_maps_a_booking_over_twenty_slots(sandbox: Sandbox) -> None:
    people = [customer(str(i)) for i in range(20)]

    output = _dags_test(sandbox, "example_qmatic_find_and_book", {"customers": people})

    _, tasks = _last_run("example_qmatic_find_and_book")
    booked = {key: state for key, state in tasks.items() if key[0] == "book_appointment"}
    assert sorted(index for _, index in booked) == list(range(20))
    assert set(booked.values()) == {"success"}
    confirmed = sandbox.appointments("CONFIRMED")
    assert len(confirmed) == 20
    assert {a["customer"]["personalIdentifier"] for a in confirmed} == {
        p["personal_identifier"] for p in people
    }
    assert len({a["timeSlot"]["startTime"] for a in confirmed}) == 20  # one slot each
    assert {(a["branch"]["id"], a["appointmentId"] != "") for a in confirmed} == {(STOCKHOLM, True)}
    assert sandbox.appointments("RESERVED") == []
    requests = sandbox.stats()["requests"]
    assert requests["timeslots"] == {"200": 1}
    assert requests["reserve"] == {"201": 20}
    assert requests["confirm"] == {"201": 20}
    assert output.count("Booked appointment ") >= 20


def test_book_reschedule_and_cancel_examples_end_to_end(dag_bag: Any, sandbox: Sandbox) -> None:
    """The three single-appointment examples in a row, each run with ``dag.test()`` and a config."""
    who = customer()
    first_free = sandbox.free_slots(limit=1)[0]

    _run_example(dag_bag, sandbox, "example_qmatic_book", {"customer": who})

    (booked,) = sandbox.of_customer(who["personal_identifier"])
    assert booked["status"] == "CONFIRMED"
    assert booked["timeSlot"]["startTime"] == first_free["startTime"]
    assert (booked["branch"]["id"], booked["service"]["id"]) == (STOCKHOLM, PASSPORT)
    assert booked["notes"] == "Booked by Airflow"

    later = sandbox.free_slots(limit=10)[-1]
    local = datetime.fromisoformat(later["startTime"]).strftime("%Y-%m-%d %H:%M")  # wall clock, no offset
    _run_example(
        dag_bag,
        sandbox,
        "example_qmatic_reschedule",
        {"appointment_id": booked["appointmentId"], "new_start_time": local, "timezone": "Europe/Stockholm"},
    )

    (moved,) = sandbox.of_customer(who["personal_identifier"])
    assert moved["appointmentId"] == booked["appointmentId"]
    assert moved["timeSlot"] == {"startTime": later["startTime"], "endTime": later["endTime"]}

    dag_run = _run_example(
        dag_bag, sandbox, "example_qmatic_cancel", {"personal_identifier": who["personal_identifier"]}
    )

    (cancelled,) = sandbox.of_customer(who["personal_identifier"])
    assert cancelled["status"] == "CANCELLED"
    assert state_of(dag_run, "cancel_appointment", 0) == ("success", 1)
    assert xcom_of(dag_run, "upcoming_appointment_ids") == [booked["appointmentId"]]
    assert sandbox.appointments("RESERVED") == []


def _run_example(dag_bag: Any, sandbox: Sandbox, dag_id: str, conf: dict[str, Any]) -> Any:
    dag_run = run_dag(dag_bag.dags[dag_id], conf=conf)
    states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()}
    assert set(states.values()) == {"success"}, (dag_id, states)
    return dag_run
