"""The waiting examples run by Airflow (``dag.test()``) against the sandbox: wait-and-book books the
slot a cancellation frees, once however often it runs; move-earlier brings an appointment booked two
weeks out forward onto the earliest free slot, once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.operators.conftest import Sandbox, customer, run_dag, state_of
from tests.operators.test_example_dags import _load_examples
from tests.sensors.conftest import FullSlot

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def dag_bag() -> Any:
    return _load_examples()


def states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: state_of(dag_run, ti.task_id)[0] for ti in dag_run.get_task_instances()}


def test_wait_and_book_books_the_freed_slot_once(dag_bag: Any, sandbox: Sandbox, full_slot: FullSlot) -> None:
    dag = dag_bag.dags["example_qmatic_wait_and_book"]
    wait = dag.get_task("wait_for_free_slot")
    wait.poke_interval, wait.max_poll_interval = 0.05, 0.2  # the example's 60 s, shortened for the test
    who = customer()
    conf = {
        **{k: full_slot.window[k] for k in ("date_from", "date_to", "time_from", "time_to")},
        "customer": who,
    }
    canceller = full_slot.free_one_when_polled(sandbox, polls=2)
    first = run_dag(dag, conf=conf)
    canceller.join()
    second = run_dag(dag, conf=conf)

    assert states(first) == {
        "not_booked_yet": "success",
        "wait_for_free_slot": "success",
        "book_appointment": "success",
    }
    assert states(second) == {
        "not_booked_yet": "success",
        "wait_for_free_slot": "skipped",
        "book_appointment": "skipped",
    }
    (booked,) = sandbox.of_customer(who["personal_identifier"])
    assert booked["status"] == "CONFIRMED"
    assert booked["timeSlot"]["startTime"] == full_slot.slot["startTime"]
    assert sandbox.appointments("RESERVED") == []


def test_move_earlier_as_is_moves_once(dag_bag: Any, sandbox: Sandbox) -> None:
    dag = dag_bag.dags["example_qmatic_move_earlier"]
    earliest = sandbox.free_slots(limit=1)[0]

    first = run_dag(dag)
    second = run_dag(dag)

    assert states(first) == {
        "appointment_to_move": "success",
        "wait_for_earlier_slot": "success",
        "move_appointment": "success",
    }
    assert states(second) == {
        "appointment_to_move": "success",
        "wait_for_earlier_slot": "skipped",
        "move_appointment": "skipped",
    }
    (moved,) = sandbox.of_customer("19181226KJ001")
    assert moved["status"] == "CONFIRMED"
    assert moved["timeSlot"]["startTime"] == earliest["startTime"]
    assert sandbox.stats()["requests"]["reschedule"] == {"200": 1}
    assert sandbox.appointments("RESERVED") == []
