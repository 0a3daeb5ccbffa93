"""Hostile operator arguments, through the operators' own ``execute`` (and, for a subset, a real
DAG run): every bad value fails the task at once, naming the field, before any request, and
without quoting the customer's personal data or a secret. Ids that only the server can judge (an
unknown branch) cost exactly the requests needed to learn it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from airflow_provider_qmatic.compat import AirflowFailException
from airflow_provider_qmatic.exceptions import QmaticError, QmaticNotFoundError, QmaticValidationError
from airflow_provider_qmatic.operators.appointments import (
    QmaticBookAppointmentOperator,
    QmaticCancelAppointmentOperator,
    QmaticFindTimeslotsOperator,
    QmaticRescheduleAppointmentOperator,
)
from airflow_provider_qmatic.sandbox import SandboxServer
from tests.hostile.conftest import (
    PASSPORT,
    STOCKHOLM,
    UNKNOWN_GUID,
    assert_no_secret,
    assert_untouched,
    conn_json,
    requests_made,
)

pytestmark = pytest.mark.airflow

START = "2030-12-02T09:00:00+01:00"
END = "2030-12-02T09:15:00+01:00"
GOOD_ID = "HOSTILE0123456789"  # 17 letters and digits
PERSONAL = ("Grace", "Hopper", "grace.hopper@example.com")


def person(**changes: Any) -> dict[str, Any]:
    base = {
        "personal_identifier": GOOD_ID,
        "first_name": PERSONAL[0],
        "last_name": PERSONAL[1],
        "email": PERSONAL[2],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def book(**changes: Any) -> QmaticBookAppointmentOperator:
    kwargs: dict[str, Any] = {
        "branch_id": STOCKHOLM,
        "service_id": PASSPORT,
        "start_time": START,
        "end_time": END,
        "customer": person(),
    }
    kwargs.update(changes)
    kwargs.setdefault("task_id", f"book_{uuid.uuid4().hex[:6]}")
    return QmaticBookAppointmentOperator(**kwargs)


@dataclass(frozen=True)
class Case:
    id: str
    make: Any  # () -> operator
    field: str
    says: str = ""
    hidden: tuple[str, ...] = field(default_factory=tuple)  # personal data that must not be quoted


LONG_NOTE = "n" * 4097
CASES = [
    Case("naive-start", lambda: book(start_time="2030-12-02T09:00:00"), "start_time", "no UTC offset"),
    Case("unparseable-start", lambda: book(start_time="next tuesday 9am"), "start_time", "cannot read"),
    Case("date-only-start", lambda: book(start_time="2030-12-02"), "start_time", "without a time of day"),
    Case("start-a-number", lambda: book(start_time=1733130000), "start_time"),
    Case(
        "end-before-start",
        lambda: book(end_time="2030-12-02T08:00:00+01:00"),
        "end_time",
        "must be after start_time",
    ),
    Case("end-equals-start", lambda: book(end_time=START), "end_time"),
    Case("naive-end", lambda: book(end_time="2030-12-02T09:15:00"), "end_time", "no UTC offset"),
    Case("unknown-zone", lambda: book(start_time="2030-12-02T09:00:00", timezone="Mars/Olympus"), "timezone"),
    Case(
        "dst-gap",
        lambda: book(
            start_time="2030-03-31T02:30:00", end_time="2030-03-31T02:45:00", timezone="Europe/Stockholm"
        ),
        "start_time",
        "does not exist",
    ),
    Case("branch-not-guid", lambda: book(branch_id="stockholm"), "branch_id", "GUID"),
    Case("branch-path-traversal", lambda: book(branch_id="../../oauth2/token"), "branch_id"),
    Case("service-empty", lambda: book(service_id=""), "service_id"),
    Case("notes-oversized", lambda: book(notes=LONG_NOTE), "notes", "4096", hidden=(LONG_NOTE[:200],)),
    Case(
        "pid-too-short",
        lambda: book(customer=person(personal_identifier="ABC123456")),
        "customer.personal_identifier",
        hidden=("ABC123456",),
    ),
    Case(
        "pid-too-long",
        lambda: book(customer=person(personal_identifier="X" * 40 + "123456789")),
        "customer.personal_identifier",
        hidden=("X" * 40 + "123456789",),
    ),
    Case(
        "pid-with-symbols",
        lambda: book(customer=person(personal_identifier="19800430-1234!")),
        "customer.personal_identifier",
        hidden=("19800430-1234!", "19800430"),
    ),
    Case(
        "pid-with-unicode",
        lambda: book(customer=person(personal_identifier="ÅSAÖSTBERG12345")),
        "customer.personal_identifier",
        hidden=("ÅSAÖSTBERG12345", "STBERG"),
    ),
    Case(
        "pid-missing", lambda: book(customer=person(personal_identifier=None)), "customer.personal_identifier"
    ),
    Case("email-missing", lambda: book(customer=person(email=None)), "customer.email"),
    Case(
        "email-not-an-address",
        lambda: book(customer=person(email="grace at example")),
        "customer.email",
        hidden=("grace at example",),
    ),
    Case(
        "last-name-too-long",
        lambda: book(customer=person(last_name="Hopper" * 50)),
        "customer.last_name",
        hidden=("HopperHopper",),
    ),
    Case(
        "customer-not-an-object", lambda: book(customer="Grace Hopper"), "customer", hidden=("Grace Hopper",)
    ),
    Case("reservations-zero", lambda: book(number_of_reservations=0), "number_of_reservations"),
    Case("reservations-huge", lambda: book(number_of_reservations=10_000), "number_of_reservations"),
    Case(
        "reschedule-naive",
        lambda: QmaticRescheduleAppointmentOperator(
            task_id="r", appointment_id=UNKNOWN_GUID, start_time="2030-12-02 10:00"
        ),
        "start_time",
    ),
    Case(
        "reschedule-bad-id",
        lambda: QmaticRescheduleAppointmentOperator(task_id="r", appointment_id="42", start_time=START),
        "appointment_id",
    ),
    Case(
        "cancel-path-injection",
        lambda: QmaticCancelAppointmentOperator(task_id="c", appointment_id="../reservations/x"),
        "appointment_id",
    ),
    Case(
        "cancel-empty-id",
        lambda: QmaticCancelAppointmentOperator(task_id="c", appointment_id=""),
        "appointment_id",
    ),
    Case(
        "slots-dates-swapped",
        lambda: QmaticFindTimeslotsOperator(
            task_id="f",
            branch_id=STOCKHOLM,
            service_id=PASSPORT,
            date_from="2030-12-09",
            date_to="2030-12-02",
        ),
        "date_to",
    ),
    Case(
        "slots-date-unreadable",
        lambda: QmaticFindTimeslotsOperator(
            task_id="f", branch_id=STOCKHOLM, service_id=PASSPORT, date_from="yesterday"
        ),
        "date_from",
    ),
    Case(
        "slots-negative-limit",
        lambda: QmaticFindTimeslotsOperator(task_id="f", branch_id=STOCKHOLM, service_id=PASSPORT, limit=-1),
        "limit",
    ),
]


@pytest.fixture
def conn(server: SandboxServer, use_conn: Any) -> SandboxServer:
    use_conn(conn_json(server))
    return server


def _fail(operator: Any) -> tuple[str, QmaticError]:
    """Run ``execute`` as the task runner would; the failure's message and the provider's error."""
    with pytest.raises(AirflowFailException) as info:
        operator.execute({})
    cause = info.value.__cause__
    assert isinstance(cause, QmaticError), repr(cause)
    return str(info.value), cause


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_argument_fails_the_task_before_any_request(conn: SandboxServer, case: Case) -> None:
    message, error = _fail(case.make())
    assert isinstance(error, QmaticValidationError), repr(error)
    assert error.field == case.field, message
    assert case.field in message, message
    assert case.says in message, message
    for value in (*case.hidden, *PERSONAL):
        assert value not in message, f"personal data quoted: {message[:300]}"
    assert_untouched(conn)
    assert_no_secret(message)


def test_unknown_branch_is_a_clear_404_after_exactly_one_reserve(conn: SandboxServer) -> None:
    message, error = _fail(book(branch_id=UNKNOWN_GUID))
    assert isinstance(error, QmaticNotFoundError)
    assert error.status == 404
    assert "reserve" in message
    assert "branch" in message.lower()
    assert requests_made(conn) == {"token": {"200": 1}, "reserve": {"404": 1}}
    assert_no_secret(message, server=conn)


def test_unknown_branch_without_end_time_stops_at_the_time_slot_lookup(conn: SandboxServer) -> None:
    message, error = _fail(book(branch_id=UNKNOWN_GUID, end_time=None))
    assert isinstance(error, QmaticNotFoundError)
    assert "the timeslots request" in message
    assert "branch_id, service_id" in message
    assert requests_made(conn) == {"token": {"200": 1}, "timeslots": {"404": 1}}
    assert_no_secret(message, server=conn)


def test_unknown_service_at_a_real_branch_names_service_id(conn: SandboxServer) -> None:
    message, error = _fail(book(service_id=UNKNOWN_GUID, end_time=None))
    assert isinstance(error, QmaticNotFoundError)
    assert error.field == "service_id"
    assert "service_id" in message
    assert requests_made(conn) == {"token": {"200": 1}, "timeslots": {"404": 1}}
    assert_no_secret(message, server=conn)


def test_unknown_appointment_cancel_is_one_404_and_counts_as_gone(conn: SandboxServer) -> None:
    """Qmatic deletes cancelled appointments: a 404 cannot be told from one cancelled before."""
    result = QmaticCancelAppointmentOperator(task_id="c", appointment_id=UNKNOWN_GUID).execute({})
    assert result == {
        "appointment_id": UNKNOWN_GUID,
        "status": "NOT_FOUND",
        "already_cancelled": True,
        "appointment": None,
    }
    assert requests_made(conn) == {"token": {"200": 1}, "cancel": {"404": 1}}


# -- the same refusals in a real DAG run -----------------------------------------------------------------


def test_hostile_tasks_in_a_real_dag_run_fail_at_once_and_send_nothing(
    server: SandboxServer, use_conn: Any, airflow_db: Any, capfd: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    """Through Airflow itself (``dag.test()``): bad connections read from the environment, bad
    arguments, and bulk files that cannot be read. Every task fails on its first try although it
    has retries, and the sandbox sees nothing."""
    from airflow_provider_qmatic.operators.bulk import QmaticBulkBookAppointmentsOperator
    from tests.operators.conftest import make_dag, run_dag, state_of

    use_conn(conn_json(server))
    use_conn(conn_json(server, extra={"base_url": "http://qmatic.example.com"}), "qmatic_http_remote")
    use_conn(conn_json(server, password="PASTED-secret\nTAIL-secret"), "qmatic_secret_newline")
    use_conn(conn_json(server, extra={"tenant": ["demo"]}), "qmatic_tenant_list")
    no_column = tmp_path / "no_email.csv"
    no_column.write_text("branch_id,service_id,start_time,personal_identifier,first_name,last_name\n")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(
        "branch_id,service_id,start_time,personal_identifier,first_name,last_name,email\n"
        f"{STOCKHOLM},{PASSPORT},{START},{GOOD_ID},Åsa,Öberg,asa@example.com\n".encode("latin-1")
    )

    dag = make_dag("hostile", default_args={"retries": 2, "retry_delay": 0})
    with dag:
        book(task_id="remote_http_url", qmatic_conn_id="qmatic_http_remote")
        book(task_id="secret_with_newline", qmatic_conn_id="qmatic_secret_newline")
        book(task_id="tenant_is_a_list", qmatic_conn_id="qmatic_tenant_list")
        book(task_id="pid_too_long", customer=person(personal_identifier="Z" * 49))
        book(task_id="naive_time", start_time=datetime(2030, 12, 2, 9, 0))
        QmaticBulkBookAppointmentsOperator(task_id="bulk_missing_column", rows=str(no_column))
        QmaticBulkBookAppointmentsOperator(task_id="bulk_latin1", rows=str(latin1))

    dag_run = run_dag(dag)

    for task_id in dag.task_ids:
        assert state_of(dag_run, task_id) == ("failed", 1), task_id
    assert_untouched(server)
    out = "".join(capfd.readouterr())
    assert "base_url uses plain http" in out
    assert "client_secret contains a line break" in out
    assert "tenant must be text" in out
    assert "customer.personal_identifier" in out
    assert "start_time: 2030-12-02T09:00:00 has no UTC offset" in out
    assert "lacks the required column(s) email" in out
    assert "is not UTF-8 text" in out
    for value in ("PASTED-secret", "TAIL-secret", "Z" * 49):
        assert value not in out
    assert_no_secret(out)
