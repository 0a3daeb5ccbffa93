"""QmaticRescheduleAppointmentOperator and QmaticCancelAppointmentOperator in real task runs.

Both run with connections whose client holds only the operation's own scope: a task that asked
for any other scope (e.g. "book" for a read) would be refused its token and fail.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_qmatic.operators.appointments import (
    QmaticCancelAppointmentOperator,
    QmaticRescheduleAppointmentOperator,
)
from tests.operators.conftest import (
    UNKNOWN_GUID,
    Sandbox,
    customer,
    make_dag,
    run_dag,
    state_of,
    xcom_of,
)
from tests.operators.test_book import kill_first_try

pytestmark = pytest.mark.airflow

NO_RETRY_WAIT = {"retries": 2, "retry_delay": timedelta(seconds=0)}


def _stored(sandbox: Sandbox, appointment_id: str) -> dict[str, Any]:
    (found,) = [a for a in sandbox.appointments() if a["appointmentId"] == appointment_id]
    return found


def test_reschedule(sandbox: Sandbox, capfd: pytest.CaptureFixture[str]) -> None:
    slots = sandbox.free_slots(limit=6)
    moved, unchanged, blocked = (sandbox.book_directly(customer(), slots[i]) for i in range(3))
    sandbox.server.configure(slot_capacity=1)
    sandbox.book_directly(customer(), slots[5])  # slots[5] is now full
    target = slots[3]
    dag = make_dag(
        "reschedule",
        default_args={**NO_RETRY_WAIT, "qmatic_conn_id": "qmatic_reschedule_only"},
        params={"appointment_id": moved["appointment_id"], "new_start": target["startTime"][:19]},
    )
    with dag:
        # Templated id and a wall-clock time read in the branch's zone.
        QmaticRescheduleAppointmentOperator(
            task_id="move",
            appointment_id="{{ params.appointment_id }}",
            start_time="{{ params.new_start }}",
            timezone="Europe/Stockholm",
            notes="moved by {{ task.task_id }}",
        )
        QmaticRescheduleAppointmentOperator(
            task_id="already_there",
            appointment_id=unchanged["appointment_id"],
            start_time=unchanged["time_slot"]["start_time"],
        )
        QmaticRescheduleAppointmentOperator(
            task_id="target_full", appointment_id=blocked["appointment_id"], start_time=slots[5]["startTime"]
        )
        QmaticRescheduleAppointmentOperator(
            task_id="unknown_appointment", appointment_id=UNKNOWN_GUID, start_time=target["startTime"]
        )

    dag_run = run_dag(dag)

    assert state_of(dag_run, "move") == ("success", 1)
    assert state_of(dag_run, "already_there") == ("success", 1)
    assert state_of(dag_run, "target_full") == ("failed", 1)  # 409: no retries spent
    assert state_of(dag_run, "unknown_appointment") == ("failed", 1)  # 404

    result = xcom_of(dag_run, "move")
    assert result["appointment_id"] == moved["appointment_id"]
    assert datetime.fromisoformat(result["time_slot"]["start_time"]) == datetime.fromisoformat(
        target["startTime"]
    )
    assert datetime.fromisoformat(result["time_slot"]["end_time"]) == datetime.fromisoformat(
        target["endTime"]
    )
    assert _stored(sandbox, moved["appointment_id"])["timeSlot"]["startTime"] == target["startTime"]
    assert xcom_of(dag_run, "already_there")["time_slot"] == unchanged["time_slot"]
    # The refused move left the appointment where it was and no reservation behind.
    assert _stored(sandbox, blocked["appointment_id"])["timeSlot"] == {
        "startTime": blocked["time_slot"]["start_time"],
        "endTime": blocked["time_slot"]["end_time"],
    }
    assert sandbox.appointments("RESERVED") == []
    requests = sandbox.stats()["requests"]
    assert requests["reschedule"] == {"200": 1}  # only "move" reached the reschedule call
    assert requests["reserve"] == {"201": 5, "409": 1}  # 4 set-up bookings + "move"; "target_full"
    out = capfd.readouterr().out
    assert f"Appointment {unchanged['appointment_id']} is already at" in out
    assert f"Rescheduled appointment {moved['appointment_id']} to Stockholm City/" in out


def test_cancel(sandbox: Sandbox, capfd: pytest.CaptureFixture[str]) -> None:
    slots = sandbox.free_slots(limit=2)
    first, second = (sandbox.book_directly(customer(), slot) for slot in slots)
    dag = make_dag(
        "cancel",
        default_args={**NO_RETRY_WAIT, "qmatic_conn_id": "qmatic_cancel_only"},
        params={"appointment_id": first["appointment_id"]},
    )
    with dag:
        cancel = QmaticCancelAppointmentOperator(
            task_id="cancel", appointment_id="{{ params.appointment_id }}"
        )
        # The same appointment again, as a retried or repeated task would: done, not failed.
        again = QmaticCancelAppointmentOperator(
            task_id="cancel_again", appointment_id=first["appointment_id"]
        )
        cancel >> again
        QmaticCancelAppointmentOperator(task_id="missing_ok", appointment_id=UNKNOWN_GUID, missing_ok=True)
        QmaticCancelAppointmentOperator(task_id="missing", appointment_id=UNKNOWN_GUID)
        # A client without the cancel scope is refused its token: fails at once.
        QmaticCancelAppointmentOperator(
            task_id="no_cancel_scope",
            appointment_id=second["appointment_id"],
            qmatic_conn_id="qmatic_book_only",
        )

    dag_run = run_dag(dag)

    assert state_of(dag_run, "cancel") == ("success", 1)
    assert state_of(dag_run, "cancel_again") == ("success", 1)
    assert state_of(dag_run, "missing_ok") == ("success", 1)
    # Public answers: a cancelled appointment is deleted, so "missing" cannot be told from one
    # cancelled before: gone counts as done.
    assert state_of(dag_run, "missing") == ("success", 1)
    assert state_of(dag_run, "no_cancel_scope") == ("failed", 1)

    assert xcom_of(dag_run, "cancel") == {
        "appointment_id": first["appointment_id"],
        "status": "CANCELLED",
        "already_cancelled": False,
        "appointment": None,
    }
    gone = {"status": "NOT_FOUND", "already_cancelled": True, "appointment": None}
    assert xcom_of(dag_run, "cancel_again") == {"appointment_id": first["appointment_id"], **gone}
    assert xcom_of(dag_run, "missing_ok") == {"appointment_id": UNKNOWN_GUID, **gone}
    assert xcom_of(dag_run, "missing") == {"appointment_id": UNKNOWN_GUID, **gone}
    assert _stored(sandbox, first["appointment_id"])["status"] == "CANCELLED"
    assert _stored(sandbox, second["appointment_id"])["status"] == "CONFIRMED"
    assert sandbox.stats()["requests"]["cancel"] == {"204": 1, "404": 3}
    out = capfd.readouterr().out
    assert f"Appointment {first['appointment_id']} was not found (404)" in out
    assert f"Appointment {UNKNOWN_GUID} was not found (404)" in out


def test_cancel_refuses_an_unconfirmed_reservation(sandbox: Sandbox) -> None:
    """A RESERVED hold is not an appointment: cancel answers 409 and the task fails, no retries."""
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    slot = sandbox.free_slots(limit=1)[0]
    reservation = QmaticHook().client.reserve(
        {
            "branchId": slot["branchId"],
            "serviceId": slot["serviceId"],
            "timeSlot": {"startTime": slot["startTime"], "endTime": slot["endTime"]},
            "numberOfReservations": 1,
        }
    )
    dag = make_dag("cancel_reserved", default_args=NO_RETRY_WAIT)
    with dag:
        QmaticCancelAppointmentOperator(
            task_id="cancel", appointment_id=reservation.appointment_id, qmatic_conn_id="qmatic_cancel_only"
        )

    dag_run = run_dag(dag)

    assert state_of(dag_run, "cancel") == ("failed", 1)
    assert _stored(sandbox, reservation.appointment_id)["status"] == "RESERVED"


@pytest.mark.parametrize("qmatic_answer_shape", ["public", "rich"])
def test_retry_after_a_try_killed_before_its_move_releases_its_hold_and_moves_once(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL between the new slot's reserve and the move: the retry releases that reservation
    (nothing stays held for 15 minutes) and moves the appointment."""
    monkeypatch.setenv("QMATIC_BULK_JOURNAL_DIR", str(tmp_path / "journals"))
    slots = sandbox.free_slots(limit=2)
    booked = sandbox.book_directly(customer(), slots[0])
    arguments = {"appointment_id": booked["appointment_id"], "start_time": slots[1]["startTime"]}
    ti = {"dag_id": "move_killed", "task_id": "move", "run_id": "manual__1", "map_index": -1}
    kill_first_try(tmp_path, "QmaticRescheduleAppointmentOperator", arguments, ti, "reschedule")
    assert len(sandbox.appointments("RESERVED")) == 1  # the killed try's hold on the new slot

    retry = QmaticRescheduleAppointmentOperator(task_id="move", **arguments)
    moved = retry.execute({"ti": SimpleNamespace(try_number=2, **ti)})

    assert moved["time_slot"]["start_time"] == slots[1]["startTime"]
    assert _stored(sandbox, booked["appointment_id"])["timeSlot"]["startTime"] == slots[1]["startTime"]
    assert sandbox.appointments("RESERVED") == []
    assert sandbox.stats()["requests"]["release"] == {"204": 1}
