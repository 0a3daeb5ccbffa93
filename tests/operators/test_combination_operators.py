"""The find, book and reschedule operators with several services in one appointment (Qmatic's
service combinations), in real task runs against a sandbox with combinations on at Stockholm City."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_qmatic.hooks.qmatic import QmaticHook
from airflow_provider_qmatic.operators.appointments import (
    QmaticBookAppointmentOperator,
    QmaticFindTimeslotsOperator,
    QmaticRescheduleAppointmentOperator,
)
from tests.operators.conftest import (
    PASSPORT,
    PICK_UP,
    STOCKHOLM,
    Sandbox,
    customer,
    make_dag,
    run_dag,
    state_of,
    xcom_of,
)
from tests.operators.test_book import kill_first_try

pytestmark = pytest.mark.airflow

LICENCE = "7a024204-f7c1-4d87-8da5-e709d4713d60"  # at Stockholm City, not combinable
NO_RETRY_WAIT = {"retries": 1, "retry_delay": timedelta(seconds=0)}


def test_find_book_and_move_an_appointment_of_two_services(sandbox: Sandbox) -> None:
    who = customer("combo")
    dag = make_dag("combination", params={"ids": [PASSPORT, PICK_UP]}, default_args=NO_RETRY_WAIT)
    with dag:
        find = QmaticFindTimeslotsOperator(
            task_id="find", branch_id=STOCKHOLM, service_ids="{{ params.ids | tojson }}", limit=8
        )
        book = QmaticBookAppointmentOperator(
            task_id="book",
            branch_id=STOCKHOLM,
            service_ids="{{ ti.xcom_pull(task_ids='find')[0]['service_ids'] }}",  # a repr, read back
            start_time="{{ ti.xcom_pull(task_ids='find')[0]['start_time'] }}",
            customer=who,
        )
        move = QmaticRescheduleAppointmentOperator(
            task_id="move",
            appointment_id="{{ ti.xcom_pull(task_ids='book')['appointment_id'] }}",
            start_time="{{ ti.xcom_pull(task_ids='find')[-1]['start_time'] }}",
            service_ids=[PASSPORT, PICK_UP],
        )
        find >> book >> move
    dag_run = run_dag(dag)

    slots = xcom_of(dag_run, "find")
    assert {tuple(s["service_ids"]) for s in slots} == {(PASSPORT, PICK_UP)}
    assert all("service_id" not in s for s in slots)
    assert [state_of(dag_run, t)[0] for t in ("find", "book", "move")] == ["success"] * 3
    (stored,) = sandbox.of_customer(who["personal_identifier"], "CONFIRMED")
    assert [s["id"] for s in stored["services"]] == [PASSPORT, PICK_UP]
    assert stored["timeSlot"] == {"startTime": slots[-1]["start_time"], "endTime": slots[-1]["end_time"]}
    booked = xcom_of(dag_run, "book")
    assert [s["id"] for s in booked["services"]] == [PASSPORT, PICK_UP]
    assert booked["customer"] is None  # no personal data in XCom
    assert sandbox.appointments("RESERVED") == []
    assert sandbox.requests("combination_reserve") == 2
    assert sandbox.requests("combination_confirm") == 1
    assert sandbox.requests("combination_reschedule") == 1
    assert sandbox.requests("reserve") == 0


def test_bad_service_arguments_fail_the_task_before_any_reserve(sandbox: Sandbox) -> None:
    slot = sandbox.free_slots(limit=1)[0]
    dag = make_dag("combination_refused", default_args=NO_RETRY_WAIT)
    with dag:
        QmaticBookAppointmentOperator(
            task_id="not_combined",
            branch_id=STOCKHOLM,
            service_ids=[PASSPORT, LICENCE],
            start_time=slot["startTime"],
            end_time=slot["endTime"],
            customer=customer(),
        )
        QmaticBookAppointmentOperator(
            task_id="both",
            branch_id=STOCKHOLM,
            service_id=PASSPORT,
            service_ids=[PASSPORT, PICK_UP],
            start_time=slot["startTime"],
            customer=customer(),
        )
        QmaticFindTimeslotsOperator(task_id="neither", branch_id=STOCKHOLM)
    dag_run = run_dag(dag)

    # Failed at once: errors no retry can fix do not spend the task's retries.
    assert {t: state_of(dag_run, t) for t in ("not_combined", "both", "neither")} == {
        "not_combined": ("failed", 1),
        "both": ("failed", 1),
        "neither": ("failed", 1),
    }
    assert sandbox.requests("service_combinations") == 1
    assert sandbox.requests("combination_reserve") == 0
    assert sandbox.requests("reserve") == 0
    assert sandbox.appointments() == []


def test_retry_after_a_try_killed_before_its_confirm_releases_its_hold_and_books_once(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The single-service guarantee for two services: SIGKILL between the combination reserve and
    its confirm; the retry releases the journaled hold and books the customer once."""
    monkeypatch.setenv("QMATIC_BULK_JOURNAL_DIR", str(tmp_path / "journals"))
    day = date.today() + timedelta(days=1)
    slot = QmaticHook().find_combination_timeslots(
        STOCKHOLM, [PASSPORT, PICK_UP], day, day + timedelta(days=13)
    )[0]
    who = customer("killed-combo")
    arguments = {
        "branch_id": STOCKHOLM,
        "service_ids": [PASSPORT, PICK_UP],
        "start_time": slot.start_time.isoformat(),
        "customer": who,
    }
    ti = {"dag_id": "combination_killed", "task_id": "book", "run_id": "manual__1", "map_index": -1}
    kill_first_try(tmp_path, "QmaticBookAppointmentOperator", arguments, ti, "confirm")
    assert sandbox.of_customer(who["personal_identifier"]) == []
    assert len(sandbox.appointments("RESERVED")) == 1  # the killed try's hold

    booked = QmaticBookAppointmentOperator(task_id="book", **arguments).execute(
        {"ti": SimpleNamespace(try_number=2, **ti)}
    )

    (stored,) = sandbox.of_customer(who["personal_identifier"])
    assert stored["status"] == "CONFIRMED"
    assert [s["id"] for s in stored["services"]] == [PASSPORT, PICK_UP]
    assert booked["appointment_id"] == stored["appointmentId"]
    assert sandbox.appointments("RESERVED") == []  # released by the retry, not left to expire
    assert sandbox.stats()["requests"]["release"] == {"204": 1}
    assert sandbox.requests("combination_reserve") == 2
    assert sandbox.requests("combination_confirm") == 1
