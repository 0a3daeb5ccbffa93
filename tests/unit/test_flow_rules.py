"""The rules the flows decide by, on answers in both plausible forms (public and richer).

Pure functions over parsed answers: what a search hit, a read reservation or a refused confirm
says. The same rules run against the sandbox in ``tests/contract/test_flows_public_shape.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_qmatic.api.models import Appointment, BookingRequest, CustomerUpdate
from airflow_provider_qmatic.exceptions import QmaticTenantRequiresFieldError, QmaticValidationError
from airflow_provider_qmatic.flows import confirmed_by, customer_matches, is_booked, tenant_required_field

APPOINTMENT = "0f8fad5b-d9cb-469f-a165-70867728950e"
PID = "Zq7PersonalId0042"
CUSTOMER = {
    "personal_identifier": PID,
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "Ada@Example.org",
}
SHOWN = {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.org"}


def _appointment(**fields: Any) -> Appointment:
    return Appointment.parse({"appointmentId": APPOINTMENT, **fields})


def _request(**extra: Any) -> BookingRequest:
    return BookingRequest.parse(
        {
            "branch_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "service_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "start_time": "2030-01-07T09:00:00+01:00",
            "end_time": "2030-01-07T09:20:00+01:00",
            "customer": CUSTOMER,
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("status", "booked"),
    [
        (None, True),
        ("CONFIRMED", True),
        ("FINALIZED", True),
        ("SOMETHING_NEW", True),  # an unknown status says nothing against it
        ("RESERVED", False),
        ("CANCELLED", False),
        ("RELEASED", False),
        ("EXPIRED", False),
    ],
)
def test_a_found_appointment_is_booked_unless_a_present_status_says_otherwise(
    status: str | None, booked: bool
) -> None:
    assert is_booked(_appointment(status=status)) is booked


@pytest.mark.parametrize(
    ("fields", "confirmed"),
    [
        ({"customer": None}, False),  # public: a reservation never confirmed
        ({"customer": {}}, False),  # the other plausible form of "no customer yet"
        ({"customer": {"phoneNumber": None, "email": ""}}, False),
        ({}, False),
        ({"customer": SHOWN}, True),  # public: a confirmed appointment shows its customer
        ({"customer": {**SHOWN, "personalIdentifier": PID}}, True),
        ({"customer": {**SHOWN, "firstName": "Bob"}}, False),  # someone else's
        ({"customer": {**SHOWN, "personalIdentifier": "Other0000001"}}, False),
        ({"customer": {**SHOWN, "email": "bob@example.org"}}, False),
        ({"status": "CONFIRMED", "customer": None}, True),  # richer: the status says it
        ({"status": "FINALIZED", "customer": SHOWN}, True),
        ({"status": "RESERVED", "customer": None}, False),
        ({"status": "RESERVED", "customer": SHOWN}, False),
        ({"status": "SOMETHING_NEW", "customer": SHOWN}, False),  # decides nothing: not confirmed
    ],
)
def test_a_lost_confirm_landed_when_the_reservation_shows_our_customer(
    fields: dict[str, Any], confirmed: bool
) -> None:
    assert confirmed_by(_appointment(**fields), _request()) is confirmed


def test_without_a_request_any_customer_counts() -> None:
    assert confirmed_by(_appointment(customer={"firstName": "Bob"}))
    assert not confirmed_by(_appointment(customer=None))


@pytest.mark.parametrize(
    ("field", "message", "column"),
    [
        (
            None,
            "Qmatic refused the confirm request with HTTP 400: customer.dateOfBirth: is required",
            "date_of_birth",
        ),
        (None, "dateofBirth is required by the configuration", "date_of_birth"),
        (None, "Qmatic refused ... informationQuestions[q-7]: an answer is required", "question:q-7"),
        (None, "information questions must be answered", "question:"),
    ],
)
def test_a_refusal_naming_a_tenant_field_the_request_lacks(
    field: str | None, message: str, column: str
) -> None:
    refusal = QmaticValidationError(message, status=400, code="invalid_request", field=field)
    found = tenant_required_field(refusal, _request())
    assert isinstance(found, QmaticTenantRequiresFieldError)
    assert found.field == column
    assert column.rstrip(":") in found.message
    assert (found.status, found.code) == (400, "invalid_request")
    assert PID not in str(found)
    assert found.question_id == (column.partition(":")[2] or None if column.startswith("question:") else None)


@pytest.mark.parametrize(
    ("message", "extra"),
    [
        (
            "customer.dateOfBirth: must be YYYY-MM-DD",
            {"customer": {**CUSTOMER, "date_of_birth": "1990-01-02"}},
        ),
        ("informationQuestions[q-7]: too long", {"information_questions": {"q-7": "x"}}),
        ("information questions: one is refused", {"information_questions": {"q-7": "x"}}),
        ("customer.email: not accepted", {}),
    ],
)
def test_a_refusal_of_a_given_field_stays_a_validation_error(message: str, extra: dict[str, Any]) -> None:
    refusal = QmaticValidationError(message, status=400, code="invalid_request")
    assert tenant_required_field(refusal, _request(**extra)) is None


def test_only_a_400_names_a_required_field() -> None:
    refusal = QmaticValidationError("dateOfBirth", status=None)
    assert tenant_required_field(refusal, _request()) is None


def test_the_required_field_error_survives_pickling() -> None:
    import pickle

    error = QmaticTenantRequiresFieldError("question:q-7: ...", status=400, field="question:q-7")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is QmaticTenantRequiresFieldError
    assert (copy.field, copy.question_id, copy.retryable) == ("question:q-7", "q-7", False)


@pytest.mark.parametrize(
    ("shown", "known", "matches"),
    [
        (SHOWN, True, True),  # the identifier vouched for by the search that found it
        (SHOWN, False, False),  # public answers never show it: without a search, send the update
        ({**SHOWN, "personalIdentifier": PID}, False, True),
        ({**SHOWN, "email": "ADA@example.org "}, True, True),
        ({**SHOWN, "lastName": "Byron"}, True, False),
        (None, True, False),
    ],
)
def test_an_update_is_skipped_only_when_every_field_is_shown_and_equal(
    shown: dict[str, Any] | None, known: bool, matches: bool
) -> None:
    details = CustomerUpdate.parse(CUSTOMER)
    assert customer_matches(_appointment(customer=shown), details, identifier_known=known) is matches


def test_a_new_field_the_answer_does_not_show_is_sent() -> None:
    details = CustomerUpdate.parse({**CUSTOMER, "phone_number": "+46 8 123"})
    assert not customer_matches(_appointment(customer=SHOWN), details, identifier_known=True)
    assert customer_matches(
        _appointment(customer={**SHOWN, "phoneNumber": "+46 8 123"}), details, identifier_known=True
    )
