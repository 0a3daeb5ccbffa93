"""QmaticBookAppointmentOperator and QmaticFindTimeslotsOperator in real task runs against the sandbox."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_qmatic.api.contract import Scope
from airflow_provider_qmatic.operators.appointments import (
    QmaticBookAppointmentOperator,
    QmaticFindTimeslotsOperator,
)
from tests.operators.conftest import (
    PASSPORT,
    STOCKHOLM,
    Sandbox,
    customer,
    make_dag,
    run_dag,
    state_of,
    xcom_of,
)

try:
    from airflow.sdk import task
except ImportError:
    from airflow.decorators import task  # type: ignore[no-redef]

pytestmark = pytest.mark.airflow

NO_RETRY_WAIT = {"retries": 2, "retry_delay": timedelta(seconds=0)}
BOOKED_LINE = re.compile(
    r"Booked appointment (?P<id>[0-9a-f-]{36}) for Stockholm City/Passport application at "
    r"\d{4}-\d\d-\d\d \d\d:\d\d (?P<zone>UTC[+-]\d\d:\d\d|Europe/Stockholm)"
)


def _start(slot_xcom: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(slot_xcom["start_time"])


def test_find_then_book_with_templates_from_params_and_xcom(
    sandbox: Sandbox, capfd: pytest.CaptureFixture[str]
) -> None:
    from airflow_provider_qmatic.api.models import Customer

    ada, bob, cyd, dan = customer("a"), customer("b"), customer("c"), customer("d")
    dag = make_dag(
        "book_templated",
        params={
            "branch_id": STOCKHOLM,
            "service_id": PASSPORT,
            "ada": ada,
            "cyd": cyd,
            "zone": "Europe/Stockholm",
        },
        default_args=NO_RETRY_WAIT,
    )
    with dag:
        find = QmaticFindTimeslotsOperator(
            task_id="find",
            branch_id="{{ params.branch_id }}",
            service_id="{{ params.service_id }}",
            date_from="{{ ds }}",
            date_to="{{ macros.ds_add(ds, 7) }}",
            limit=4,
        )
        slot = "ti.xcom_pull(task_ids='find')[{}]"
        # 1. A dict whose values are templates (the dict stays a dict); no end_time: the operator
        #    reads the service's duration.
        by_params = QmaticBookAppointmentOperator(
            task_id="book_from_params",
            branch_id="{{ params.branch_id }}",
            service_id="{{ params.service_id }}",
            start_time="{{ " + slot.format(0) + "['start_time'] }}",
            customer={key: "{{ params.ada." + key + " }}" for key in ada},
            notes="run {{ run_id }}",
        )

        @task
        def load_customer() -> dict[str, Any]:
            return bob

        # 2. The customer from an upstream task's XCom (an XComArg), times from the found slot.
        by_xcom = QmaticBookAppointmentOperator(
            task_id="book_from_xcom",
            branch_id=STOCKHOLM,
            service_id=PASSPORT,
            start_time="{{ " + slot.format(1) + "['start_time'] }}",
            end_time="{{ " + slot.format(1) + "['end_time'] }}",
            customer=load_customer(),
        )
        # 3. The whole customer as one template (rendered to text), and a wall-clock time without
        #    offset read in the branch's zone through timezone=.
        by_text = QmaticBookAppointmentOperator(
            task_id="book_from_text",
            branch_id=STOCKHOLM,
            service_id=PASSPORT,
            start_time="{{ " + slot.format(2) + "['start_time'][:19] }}",
            timezone="{{ params.zone }}",
            customer="{{ params.cyd }}",
        )
        # 4. A Customer model, validated when the DAG file is parsed.
        by_model = QmaticBookAppointmentOperator(
            task_id="book_from_model",
            branch_id=STOCKHOLM,
            service_id=PASSPORT,
            start_time="{{ " + slot.format(3) + "['start_time'] }}",
            customer=Customer.parse(dan),
        )
        find >> [by_params, by_xcom, by_text, by_model]

    dag_run = run_dag(dag)

    booking_tasks = ("book_from_params", "book_from_xcom", "book_from_text", "book_from_model")
    for task_id in ("find", *booking_tasks):
        assert state_of(dag_run, task_id) == ("success", 1), task_id
    slots = xcom_of(dag_run, "find")
    assert len(slots) == 4
    assert all(set(s) == {"branch_id", "service_id", "start_time", "end_time", "available"} for s in slots)
    assert [s["branch_id"] for s in slots] == [STOCKHOLM] * 4
    starts = [_start(s) for s in slots]
    assert starts == sorted(starts)
    assert all(t.utcoffset() is not None for t in starts)

    booked = {t: xcom_of(dag_run, t) for t in booking_tasks}
    for index, (task_id, who) in enumerate(zip(booking_tasks, (ada, bob, cyd, dan), strict=True)):
        result = booked[task_id]
        assert result["status"] is None, task_id  # public answers carry no status
        stored_status = {a["appointmentId"]: a["status"] for a in sandbox.appointments()}
        assert stored_status[result["appointment_id"]] == "CONFIRMED", task_id
        assert datetime.fromisoformat(result["time_slot"]["start_time"]) == starts[index], task_id
        assert datetime.fromisoformat(result["time_slot"]["end_time"]) == starts[index] + timedelta(
            minutes=15
        )
        assert (result["branch"]["id"], result["branch"]["name"]) == (STOCKHOLM, "Stockholm City")
        assert (result["service"]["id"], result["service"]["name"]) == (PASSPORT, "Passport application")
        assert result["customer"] is None  # personal data stays out of XCom
        stored = sandbox.of_customer(who["personal_identifier"])
        assert [a["appointmentId"] for a in stored] == [result["appointment_id"]], task_id
        assert stored[0]["status"] == "CONFIRMED"
        assert stored[0]["customer"]["firstName"] == who["first_name"]
    stored_notes = {a["appointmentId"]: a["notes"] for a in sandbox.appointments()}
    assert stored_notes[booked["book_from_params"]["appointment_id"]].startswith("run manual__")

    assert sandbox.appointments("RESERVED") == []
    # The find task lists slots once; each of the three bookings without end_time reads its end
    # from the listing (no public answer carries a duration); none reads the services list.
    assert sandbox.requests("timeslots") == 4
    assert sandbox.requests("services") == 0
    assert sandbox.requests("reserve") == 4
    assert sandbox.requests("confirm") == 4
    # Least privilege: the all-scopes client was only ever asked for a "book" token.
    issued = sandbox.server.tokens()
    assert issued
    assert {tuple(t["scopes"]) for t in issued} == {(Scope.BOOK.value,)}

    out = capfd.readouterr().out
    lines = [m.groupdict() for m in BOOKED_LINE.finditer(out)]
    assert {line["id"] for line in lines} == {r["appointment_id"] for r in booked.values()}
    assert "Europe/Stockholm" in {line["zone"] for line in lines}  # the task given timezone=
    everything = json.dumps([slots, *booked.values()]) + out
    for secret in sandbox.secrets():
        assert secret not in everything


def test_validation_fails_before_any_request(sandbox: Sandbox, capfd: pytest.CaptureFixture[str]) -> None:
    good = customer()
    slot = {"branch_id": STOCKHOLM, "service_id": PASSPORT, "start_time": "2030-12-02T09:00:00+01:00"}
    dag = make_dag("book_invalid", default_args=NO_RETRY_WAIT, params={"empty": ""})
    with dag:
        QmaticBookAppointmentOperator(
            task_id="naive_time", **{**slot, "start_time": "2030-12-02T09:00:00"}, customer=good
        )
        QmaticBookAppointmentOperator(
            task_id="bad_identifier", **slot, customer={**good, "personal_identifier": "1980-04-30-1234"}
        )
        QmaticBookAppointmentOperator(
            task_id="bad_branch", **{**slot, "branch_id": "stockholm"}, customer=good
        )
        QmaticBookAppointmentOperator(task_id="bad_zone", **slot, customer=good, timezone="Mars/Olympus")
        QmaticBookAppointmentOperator(
            task_id="end_before_start", **slot, end_time="2030-12-02T08:00:00+01:00", customer=good
        )
        QmaticBookAppointmentOperator(task_id="customer_not_an_object", **slot, customer="{{ params.empty }}")
        QmaticFindTimeslotsOperator(
            task_id="dates_swapped",
            branch_id=STOCKHOLM,
            service_id=PASSPORT,
            date_from="2030-12-09",
            date_to="2030-12-02",
        )
        QmaticFindTimeslotsOperator(
            task_id="not_a_date", branch_id=STOCKHOLM, service_id=PASSPORT, date_from="next tuesday"
        )

    dag_run = run_dag(dag)

    for task_id in dag.task_ids:
        # Failed at once: retries=2 were not used.
        assert state_of(dag_run, task_id) == ("failed", 1), task_id
    stats = sandbox.stats()
    assert stats["api_requests"] == 0, stats
    assert stats["token_requests"] == 0, stats
    out = capfd.readouterr().out
    assert "has no UTC offset" in out
    assert 'timezone="Europe/Stockholm"' in out
    assert "personal_identifier" in out
    assert "1980-04-30-1234" not in out
    assert "branch_id: must be a GUID" in out
    assert "'Mars/Olympus' is not a known IANA time zone name" in out
    assert "end_time: must be after start_time" in out
    assert "date_to: 2030-12-02 is before date_from 2030-12-09" in out
    assert "date_from: must be a date" in out


def test_refusals_fail_the_task_without_retries(sandbox: Sandbox) -> None:
    free = sandbox.free_slots(limit=3)
    taken, unknown_branch_slot, scope_slot = free
    sandbox.server.configure(slot_capacity=1)
    sandbox.book_directly(customer(), taken)  # now the slot is full
    dag = make_dag("book_refused", default_args=NO_RETRY_WAIT)
    with dag:

        def book(task_id: str, slot: dict[str, Any], **kwargs: Any) -> QmaticBookAppointmentOperator:
            return QmaticBookAppointmentOperator(
                task_id=task_id,
                branch_id=kwargs.pop("branch_id", slot["branchId"]),
                service_id=slot["serviceId"],
                start_time=slot["startTime"],
                end_time=slot["endTime"],
                customer=customer(),
                **kwargs,
            )

        book("slot_taken", taken)  # 409 slot_unavailable
        book("unknown_branch", unknown_branch_slot, branch_id="0b6a1c4e-9d1f-4e7a-8f3c-2a5b6c7d8e9f")  # 404
        book("wrong_tenant", scope_slot, qmatic_conn_id="qmatic_wrong_tenant")  # 403 forbidden_tenant
        # A client without the book scope is refused its token (400 invalid_scope).
        book("client_lacks_book_scope", scope_slot, qmatic_conn_id="qmatic_cancel_only")
        QmaticFindTimeslotsOperator(
            task_id="find_unknown_service",
            branch_id=STOCKHOLM,
            service_id="0b6a1c4e-9d1f-4e7a-8f3c-2a5b6c7d8e9f",
            date_from="2030-01-01",
        )

    dag_run = run_dag(dag)

    for task_id in dag.task_ids:
        assert state_of(dag_run, task_id) == ("failed", 1), task_id
    requests = sandbox.stats()["requests"]
    # (the 201s are the booking that filled the slot, made before the run)
    assert requests["reserve"] == {"201": 1, "409": 1, "404": 1, "403": 1}
    assert requests["timeslots"] == {"404": 1}
    assert requests["token"].get("400") == 1  # the cancel-only client asking for "book"
    assert requests["confirm"] == {"201": 1}
    assert sandbox.appointments("RESERVED") == []
    assert len(sandbox.appointments("CONFIRMED")) == 1  # only the one booked to fill the slot


@pytest.mark.parametrize("qmatic_answer_shape", ["public", "rich"])
def test_failed_confirm_releases_the_reservation(sandbox: Sandbox) -> None:
    """Qmatic refuses bodies over 2 MB (413), a limit only the server checks: the confirm fails
    after the reserve succeeded, and the reservation must not stay held for 15 minutes."""
    slot = sandbox.free_slots(limit=1)[0]
    who = customer()
    answers = {f"q{i}": "x" * 2000 for i in range(1100)}  # each answer within the 2048 limit
    dag = make_dag("book_release", default_args=NO_RETRY_WAIT)
    with dag:
        QmaticBookAppointmentOperator(
            task_id="book",
            branch_id=slot["branchId"],
            service_id=slot["serviceId"],
            start_time=slot["startTime"],
            end_time=slot["endTime"],
            customer=who,
            information_questions=answers,
        )

    dag_run = run_dag(dag)

    assert state_of(dag_run, "book") == ("failed", 1)
    requests = sandbox.stats()["requests"]
    assert requests["reserve"] == {"201": 1}
    assert requests["confirm"] == {"413": 1}
    assert requests["release"] == {"204": 1}
    assert sandbox.appointments("RESERVED") == []
    assert [a["status"] for a in sandbox.appointments()] == ["RELEASED"]
    assert sandbox.free_slots(limit=1)[0]["available"] == slot["available"]


@pytest.mark.parametrize("qmatic_answer_shape", ["public", "rich"])
def test_lost_confirm_answer_is_resolved_without_a_second_booking(sandbox: Sandbox) -> None:
    """The confirm is stored, then the connection drops before the answer arrives."""
    slot = sandbox.free_slots(limit=1)[0]
    who = customer()
    sandbox.server.configure(
        commit_then_fail_rate=1.0, commit_then_fail_mode="drop", fault_endpoints=["confirm"]
    )
    dag = make_dag("book_lost_answer", default_args=NO_RETRY_WAIT)
    with dag:
        QmaticBookAppointmentOperator(
            task_id="book",
            branch_id=slot["branchId"],
            service_id=slot["serviceId"],
            start_time=slot["startTime"],
            customer=who,
        )

    dag_run = run_dag(dag)

    assert state_of(dag_run, "book") == ("success", 1)
    stored = sandbox.of_customer(who["personal_identifier"])
    assert [a["status"] for a in stored] == ["CONFIRMED"]
    assert xcom_of(dag_run, "book")["appointment_id"] == stored[0]["appointmentId"]
    stats = sandbox.stats()
    assert stats["faults"].get("commit_then_fail_drop") == 1
    assert stats["requests"]["reserve"] == {"201": 1}
    assert sandbox.appointments("RESERVED") == []


class _LostAfterBooking(QmaticBookAppointmentOperator):
    """Books, then the first try dies before Airflow records the result (worker lost)."""

    def execute(self, context: Any) -> dict[str, Any]:
        result = super().execute(context)
        if context["ti"].try_number == 1:
            raise RuntimeError("simulated: the worker was lost after the booking")
        return result


class _LostBeforeBooking(QmaticBookAppointmentOperator):
    """The first try dies before it sends anything."""

    def execute(self, context: Any) -> dict[str, Any]:
        if context["ti"].try_number == 1:
            raise RuntimeError("simulated: the worker was lost before the booking")
        return super().execute(context)


def test_retry_returns_the_booking_of_an_earlier_try(
    sandbox: Sandbox, capfd: pytest.CaptureFixture[str]
) -> None:
    first, second = sandbox.free_slots(limit=2)
    lost_after, lost_before = customer(), customer()
    dag = make_dag("book_retry", default_args=NO_RETRY_WAIT)
    with dag:
        for task_id, cls, slot, who in (
            ("lost_after_booking", _LostAfterBooking, first, lost_after),
            ("lost_before_booking", _LostBeforeBooking, second, lost_before),
        ):
            cls(
                task_id=task_id,
                branch_id=slot["branchId"],
                service_id=slot["serviceId"],
                start_time=slot["startTime"],
                customer=who,
            )

    dag_run = run_dag(dag)

    assert state_of(dag_run, "lost_after_booking") == ("success", 2)
    assert state_of(dag_run, "lost_before_booking") == ("success", 2)
    for task_id, who in (("lost_after_booking", lost_after), ("lost_before_booking", lost_before)):
        stored = sandbox.of_customer(who["personal_identifier"])
        assert [a["status"] for a in stored] == ["CONFIRMED"], task_id  # exactly one booking
        assert xcom_of(dag_run, task_id)["appointment_id"] == stored[0]["appointmentId"]
    requests = sandbox.stats()["requests"]
    assert requests["reserve"] == {"201": 2}  # one per customer: the retry did not book again
    assert requests["search"] == {"200": 2}  # each second try looked first
    out = capfd.readouterr().out
    assert "is already CONFIRMED (booked by an earlier try); returning it instead of booking again" in out


KILLED_TRY = Path(__file__).with_name("killed_try.py")


def kill_first_try(
    tmp_path: Path, operator: str, arguments: dict[str, Any], ti: dict[str, Any], block: str
) -> None:
    """Run the operator's first try in a child process and SIGKILL it once it reaches ``block``."""
    ready = tmp_path / "ready"
    args = {"operator": operator, "arguments": arguments, "ti": ti, "block": block, "ready": str(ready)}
    child = subprocess.Popen([sys.executable, str(KILLED_TRY), json.dumps(args)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None, f"the first try ended before its {block}"
            assert time.monotonic() < deadline, f"the first try never reached its {block}"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)


@pytest.mark.parametrize("qmatic_answer_shape", ["public", "rich"])
def test_retry_after_a_try_killed_before_its_confirm_releases_its_hold_and_books_once(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL between reserve and confirm: the reservation is in the task's journal, so the retry
    releases it (nothing stays held for 15 minutes) and books the customer once."""
    monkeypatch.setenv("QMATIC_BULK_JOURNAL_DIR", str(tmp_path / "journals"))
    [slot] = sandbox.free_slots(limit=1)
    who = customer()
    arguments = {
        "branch_id": slot["branchId"],
        "service_id": slot["serviceId"],
        "start_time": slot["startTime"],
        "customer": who,
    }
    ti = {"dag_id": "book_killed", "task_id": "book", "run_id": "manual__1", "map_index": -1}
    kill_first_try(tmp_path, "QmaticBookAppointmentOperator", arguments, ti, "confirm")
    assert sandbox.of_customer(who["personal_identifier"]) == []
    assert len(sandbox.appointments("RESERVED")) == 1  # the killed try's hold

    retry = QmaticBookAppointmentOperator(task_id="book", **arguments)
    booked = retry.execute({"ti": SimpleNamespace(try_number=2, **ti)})

    stored = sandbox.of_customer(who["personal_identifier"])
    assert [a["status"] for a in stored] == ["CONFIRMED"]
    assert booked["appointment_id"] == stored[0]["appointmentId"]
    assert sandbox.appointments("RESERVED") == []  # released by the retry, not left to expire
    assert sandbox.stats()["requests"]["release"] == {"204": 1}
