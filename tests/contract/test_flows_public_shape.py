"""The flows decide nothing on a field the public pages do not show: against the sandbox, in the
public answer shape (its default) and, where the rule has a richer-shape branch, in both.

Outcomes are read from the sandbox's own store and counters, never from the client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.api.models import BookingRequest, CustomerUpdate
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.exceptions import (
    QmaticNotFoundError,
    QmaticTenantRequiresFieldError,
    QmaticValidationError,
)
from airflow_provider_qmatic.flows import Flows
from airflow_provider_qmatic.sandbox import SandboxServer
from tests.bulk.conftest import customer_id, make_client

UNKNOWN = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.fixture
def client(qmatic_sandbox: SandboxServer, tmp_path: Path) -> QmaticClient:
    qmatic_sandbox.configure(token_requests_per_second=0)
    return make_client(qmatic_sandbox, tmp_path, sleep=lambda _s: None)


def _customer(**extra: Any) -> dict[str, Any]:
    return {
        "personal_identifier": customer_id("P"),
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.org",
        **extra,
    }


def _request(slot: dict[str, Any], *, with_end: bool = True, **extra: Any) -> BookingRequest:
    data: dict[str, Any] = {
        "branch_id": slot["branchId"],
        "service_id": slot["serviceId"],
        "start_time": slot["startTime"],
        "customer": _customer(),
        **extra,
    }
    if with_end:
        data["end_time"] = slot["endTime"]
    return BookingRequest.parse(data)


def _requests(sandbox: SandboxServer, operation: str) -> dict[str, int]:
    return dict(sandbox.stats()["requests"].get(operation, {}))


def _held(sandbox: SandboxServer) -> int:
    return len(sandbox.appointments(status="RESERVED"))


@pytest.mark.parametrize("qmatic_answer_shape", ["public", "rich"])
def test_a_booking_without_end_time_ends_with_its_listed_slot(
    qmatic_sandbox: SandboxServer, client: QmaticClient
) -> None:
    slot = qmatic_sandbox.free_slots(limit=1)[0]
    result = Flows(client).book(_request(slot, with_end=False))
    assert result.changed
    (stored,) = [a for a in qmatic_sandbox.appointments() if a["appointmentId"] == result.appointment_id]
    assert stored["timeSlot"] == {"startTime": slot["startTime"], "endTime": slot["endTime"]}
    assert _requests(qmatic_sandbox, "timeslots") == {"200": 1}
    assert "services" not in qmatic_sandbox.stats()["requests"]  # one place: no cap to check


def test_a_booking_at_a_start_no_slot_lists_is_refused_before_the_reserve(
    qmatic_sandbox: SandboxServer, client: QmaticClient
) -> None:
    slot = dict(qmatic_sandbox.free_slots(limit=1)[0])
    slot["startTime"] = slot["startTime"].replace(":00:00", ":07:00").replace(":30:00", ":07:00")
    with pytest.raises(QmaticValidationError) as info:
        Flows(client).book(_request(slot, with_end=False))
    assert info.value.field == "end_time"
    assert "pass end_time" in info.value.message
    assert "reserve" not in qmatic_sandbox.stats()["requests"]


@pytest.mark.qmatic_sandbox(max_reservations={"*": 1}, slot_capacity=3)
def test_more_places_than_the_service_allows_fail_before_the_reserve(
    qmatic_sandbox: SandboxServer, client: QmaticClient
) -> None:
    slot = qmatic_sandbox.free_slots(limit=1, min_available=2)[0]
    with pytest.raises(QmaticValidationError) as info:
        Flows(client).book(_request(slot, number_of_reservations=2))
    assert info.value.field == "number_of_reservations"
    assert "at most 1" in info.value.message
    assert "reserve" not in qmatic_sandbox.stats()["requests"]
    assert Flows(client).book(_request(slot, number_of_reservations=1)).changed


@pytest.mark.parametrize("qmatic_answer_shape", ["public", "rich"])
@pytest.mark.parametrize(
    ("settings", "field", "column"),
    [
        ({"require_date_of_birth": True}, "date_of_birth", "date_of_birth column"),
        ({"required_questions": ["q-allergy"]}, "question:q-allergy", "question:q-allergy column"),
    ],
)
def test_a_confirm_refused_for_a_tenant_required_field_releases_and_names_the_column(
    qmatic_sandbox: SandboxServer, client: QmaticClient, settings: dict[str, Any], field: str, column: str
) -> None:
    qmatic_sandbox.configure(**settings)
    slot = qmatic_sandbox.free_slots(limit=1)[0]
    request = _request(slot)
    with pytest.raises(QmaticTenantRequiresFieldError) as info:
        Flows(client).book(request)
    assert info.value.field == field
    assert column in info.value.message
    assert "reservation was released" in info.value.message
    assert not info.value.retryable
    assert request.customer.personal_identifier not in str(info.value)
    assert _held(qmatic_sandbox) == 0
    assert _requests(qmatic_sandbox, "reserve") == {"201": 1}
    assert _requests(qmatic_sandbox, "confirm") == {"400": 1}
    assert _requests(qmatic_sandbox, "release") == {"204": 1}
    # Given the field, the same booking goes through.
    answered = _request(
        slot, customer=_customer(date_of_birth="1990-01-02"), information_questions={"q-allergy": "none"}
    )
    assert Flows(client).book(answered).changed


def test_answers_to_other_questions_do_not_hide_a_missing_one(
    qmatic_sandbox: SandboxServer, client: QmaticClient
) -> None:
    qmatic_sandbox.configure(required_questions=["q-allergy"])
    slot = qmatic_sandbox.free_slots(limit=1)[0]
    with pytest.raises(QmaticTenantRequiresFieldError) as info:
        Flows(client).book(_request(slot, information_questions={"q-other": "x"}))
    assert info.value.field == "question:q-allergy"
    assert info.value.question_id == "q-allergy"
    assert _held(qmatic_sandbox) == 0


@pytest.mark.parametrize("qmatic_answer_shape", ["public", "rich"])
def test_already_booked_is_found_by_search_without_a_status(
    qmatic_sandbox: SandboxServer, client: QmaticClient
) -> None:
    slot = qmatic_sandbox.free_slots(limit=1)[0]
    request = _request(slot)
    first = Flows(client).book(request)
    again = Flows(client).book(request, check_existing=True)
    assert (again.changed, again.appointment_id) == (False, first.appointment_id)
    assert _requests(qmatic_sandbox, "reserve") == {"201": 1}


@pytest.mark.parametrize("qmatic_answer_shape", ["public", "rich"])
def test_a_cancel_of_an_appointment_gone_before_is_done_unchanged(
    qmatic_sandbox: SandboxServer, client: QmaticClient
) -> None:
    slot = qmatic_sandbox.free_slots(limit=1)[0]
    booked = Flows(client).book(_request(slot))
    assert Flows(client).cancel(booked.appointment_id).changed
    again = Flows(client).cancel(booked.appointment_id)
    assert (again.changed, again.appointment_id) == (False, booked.appointment_id)
    gone = Flows(client).cancel(UNKNOWN, check_first=True)
    assert (gone.changed, gone.appointment) == (False, None)
    # An earlier try's cancel (the caller's journal says one was sent): a 404 now is ours.
    assert Flows(client).cancel(UNKNOWN, attempted_before=True).changed


@pytest.mark.parametrize("qmatic_answer_shape", ["public", "rich"])
def test_update_customer_sends_once_and_skips_when_the_details_match(
    qmatic_sandbox: SandboxServer, client: QmaticClient
) -> None:
    slot = qmatic_sandbox.free_slots(limit=1)[0]
    request = _request(slot)
    booked = Flows(client).book(request)
    details = CustomerUpdate.parse(
        {**request.customer.to_wire(), "email": "ada.new@example.org", "phoneNumber": "+46 8 123"}
    )
    assert Flows(client).update_customer(booked.appointment_id, details, check_first=True).changed
    (stored,) = [a for a in qmatic_sandbox.appointments() if a["appointmentId"] == booked.appointment_id]
    assert stored["customer"]["email"] == "ada.new@example.org"
    # Read back: the public answer lacks the personal identifier, so only a search vouches for it.
    (found,) = client.search_appointments(details.personal_identifier)
    skipped = Flows(client).update_customer(
        booked.appointment_id, details, current=found, found_by_identifier=True
    )
    assert not skipped.changed
    assert _requests(qmatic_sandbox, "update_customer") == {"204": 1}
    with pytest.raises(QmaticNotFoundError):
        Flows(client).update_customer(UNKNOWN, details)


@pytest.mark.qmatic_sandbox(search_answer="object")
def test_a_search_answered_with_one_object_still_finds_the_booking(
    qmatic_sandbox: SandboxServer, client: QmaticClient
) -> None:
    slot = qmatic_sandbox.free_slots(limit=1)[0]
    request = _request(slot)
    first = Flows(client).book(request)
    assert [a.appointment_id for a in client.search_appointments(request.customer.personal_identifier)] == [
        first.appointment_id
    ]
    again = Flows(client).book(request, check_existing=True)
    assert (again.changed, again.appointment_id) == (False, first.appointment_id)
    assert _requests(qmatic_sandbox, "reserve") == {"201": 1}
