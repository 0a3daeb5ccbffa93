"""The contract table as the sandbox serves it: only the statuses a row allows, only Part B's
appointment statuses, and the client's choice of token scope per row."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta

import pytest

from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.api.contract import BOOK_SCOPES, CANCEL_SCOPES, RESCHEDULE_SCOPES, Scope
from airflow_provider_qmatic.api.models import AppointmentStatus, BookingRequest
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.exceptions import QmaticError
from airflow_provider_qmatic.sandbox import SandboxServer
from airflow_provider_qmatic.state.tokens import MemoryTokenCache


@pytest.mark.parametrize(
    ("operation", "preferred", "expected"),
    [
        (contract.GET, CANCEL_SCOPES, CANCEL_SCOPES),  # reads: any of the three, the caller's kept
        (contract.RESERVE, RESCHEDULE_SCOPES, RESCHEDULE_SCOPES),
        (contract.RESERVE, CANCEL_SCOPES, BOOK_SCOPES),
        (contract.RELEASE, RESCHEDULE_SCOPES, BOOK_SCOPES),  # issue 10, failure path 1
        (contract.CONFIRM, RESCHEDULE_SCOPES, BOOK_SCOPES),
        (contract.RESCHEDULE, BOOK_SCOPES, RESCHEDULE_SCOPES),
        (contract.CANCEL, BOOK_SCOPES, CANCEL_SCOPES),
        (contract.CANCEL, frozenset({Scope.BOOK, Scope.CANCEL}), frozenset({Scope.BOOK, Scope.CANCEL})),
    ],
)
def test_token_scopes(
    operation: contract.Operation, preferred: frozenset[Scope], expected: frozenset[Scope]
) -> None:
    assert operation.token_scopes(preferred) == expected


def test_names_are_unique_and_every_api_path_is_under_external_v1() -> None:
    assert len(contract.OPERATIONS) == len(contract.API_OPERATIONS) + 1
    assert all(op.path.startswith("/external/v1/") for op in contract.API_OPERATIONS)
    assert all(op.scopes for op in contract.API_OPERATIONS)


def test_the_sandbox_answers_only_what_the_table_allows(
    make_qmatic_sandbox: Callable[..., SandboxServer],
) -> None:
    """A day's traffic with faults on: every answer is a status the operation's row lists, and
    every appointment is in one of Part B's statuses (a reservation used by a reschedule is gone)."""
    sandbox = make_qmatic_sandbox(
        set_env=False, requests_per_minute=0, token_requests_per_second=0, fail_rate=0.1, unavailable_rate=0.1
    )
    who = sandbox.client
    config = ClientConfig.from_values(
        client_id=who.client_id,
        client_secret=who.client_secret,
        tenant=who.tenant,
        base_url=sandbox.base_url,
        system_id=who.system_id,
        credential_cache="memory",
    )
    client = QmaticClient(config, token_cache=MemoryTokenCache(), sleep=lambda _s: None)
    slots = sandbox.free_slots(limit=8)
    branch = next(b for b in sandbox.seed()["branches"] if b["id"] == slots[0]["branchId"])
    pair = [s["id"] for s in branch["services"][:2]]
    sandbox.configure(service_combinations=True, combination_branches={branch["id"]: pair})
    for i, slot in enumerate(slots[:4]):
        request = BookingRequest.model_validate(
            {
                "branch_id": slot["branchId"],
                "service_id": slot["serviceId"],
                "start_time": slot["startTime"],
                "end_time": slot["endTime"],
                "customer": {
                    "personal_identifier": f"CUST00000000{i}",
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "email": "ada@example.com",
                },
            }
        )
        calls: list[Callable[[], object]] = [
            lambda: client.list_branches(),
            lambda s=slot: client.list_services(s["branchId"]),
            lambda: client.list_service_groups(),
            lambda: client.list_service_combinations(),
            lambda s=slot: client.find_combination_timeslots(branch["id"], pair, *_days(s["startTime"])),
            lambda s=slot: client.find_timeslots(s["branchId"], s["serviceId"], *_days(s["startTime"])),
            lambda r=request: client.confirm(
                client.reserve(r.reservation_body()).appointment_id, r.confirmation_body()
            ),
            lambda r=request: client.release_reservation(client.reserve(r.reservation_body()).appointment_id),
            lambda i=i: client.search_appointments(f"CUST00000000{i}"),
            lambda: client.get_appointment("00000000-0000-4000-8000-000000000000"),  # 404
            lambda: client.cancel("00000000-0000-4000-8000-000000000000"),  # 404
            lambda r=request: client.update_customer(
                "00000000-0000-4000-8000-000000000000", r.customer.to_wire()
            ),  # 404
        ]
        for call in calls:
            with contextlib.suppress(QmaticError):  # refusals and faults are what is looked at
                call()
    booked = [a for a in sandbox.appointments() if a["status"] == "CONFIRMED"]
    for appointment, target in zip(booked, slots[4:], strict=False):
        with contextlib.suppress(QmaticError):
            body = {
                "branchId": target["branchId"],
                "serviceId": appointment["service"]["id"],
                "timeSlot": {"startTime": target["startTime"], "endTime": target["endTime"]},
                "numberOfReservations": 1,
            }
            reservation = client.reserve(body, scopes=RESCHEDULE_SCOPES)
            client.reschedule(appointment["appointmentId"], reservation.appointment_id)
            client.cancel(appointment["appointmentId"])
            client.cancel(appointment["appointmentId"])  # 409 invalid_state (rich) or 404 (public)
    answered = [r for r in sandbox.recent_requests(limit=1000) if isinstance(r["status"], int)]
    # The combination booking rows are not called here (tests/bulk/test_combination_flows.py calls them).
    not_called = {"combination_search", "combination_reserve", "combination_confirm", "combination_get"}
    assert {r["endpoint"] for r in answered} >= {op.name for op in contract.OPERATIONS.values()} - {
        "reschedule",
        "combination_reschedule",
        *not_called,
    }
    for entry in answered:
        assert entry["status"] in contract.OPERATIONS[entry["endpoint"]].statuses, entry
    assert {a["status"] for a in sandbox.appointments()} <= {s.value for s in AppointmentStatus}


def _days(start: str) -> tuple[object, object]:
    from datetime import datetime

    day = datetime.fromisoformat(start).date()
    return day, day + timedelta(days=1)


def test_a_release_inside_a_reschedule_is_made_with_book(
    make_qmatic_sandbox: Callable[..., SandboxServer],
) -> None:
    """Issue 10, failure path 1, at the root: a flow that reserved with its reschedule token and
    must give the slot back asks for a release with that token; the client sends a book token,
    which Part B requires, so the hold is freed now instead of in 15 minutes."""
    sandbox = make_qmatic_sandbox(set_env=False, requests_per_minute=0, token_requests_per_second=0)
    who = sandbox.client
    config = ClientConfig.from_values(
        client_id=who.client_id,
        client_secret=who.client_secret,
        tenant=who.tenant,
        base_url=sandbox.base_url,
        system_id=who.system_id,
        credential_cache="memory",
    )
    client = QmaticClient(config, token_cache=MemoryTokenCache())
    slot = sandbox.free_slots(limit=1)[0]
    body = {
        "branchId": slot["branchId"],
        "serviceId": slot["serviceId"],
        "timeSlot": {"startTime": slot["startTime"], "endTime": slot["endTime"]},
        "numberOfReservations": 1,
    }
    reservation = client.reserve(body, scopes=RESCHEDULE_SCOPES)
    client.release_reservation(reservation.appointment_id, scopes=RESCHEDULE_SCOPES)
    assert sandbox.stats()["requests"]["release"] == {"204": 1}
    assert [a["status"] for a in sandbox.appointments()] == ["RELEASED"]
    scopes_issued = sorted(tuple(t["scopes"]) for t in sandbox.tokens())
    assert scopes_issued == [(Scope.BOOK.value,), (Scope.RESCHEDULE.value,)]
